//! [`Instance`]: one endpoint of a service and its metadata.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// One replica of a service: its address and the metadata balancers use.
///
/// Serialised as JSON in registries (the etcd value):
/// `{"addr":"10.0.0.7:7000","weight":100,"zone":"eu-1","version":"1.4.2","tags":["canary"]}`
/// (every field but `addr` optional).
///
/// ```
/// use trpc_layers::discovery::Instance;
/// let i = Instance::new("127.0.0.1:7001").weight(200).zone("eu-1").tag("canary");
/// assert_eq!(i.weight, 200);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Instance {
    /// `host:port` to connect to; also the instance's key in its set.
    pub addr: String,
    /// Relative share of traffic for the weighted policy (default 100; 0
    /// receives traffic only when nothing else can).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Failure domain (zone, rack...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The version the replica runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Told when a connection to this instance fails (DNS re-resolves).
    #[serde(skip)]
    on_failure: Option<Arc<Notify>>,
}

fn default_weight() -> u32 {
    100
}

impl Instance {
    /// An instance at `addr` with weight 100 and no other metadata.
    pub fn new(addr: impl Into<String>) -> Instance {
        Instance {
            addr: addr.into(),
            weight: default_weight(),
            zone: None,
            version: None,
            tags: Vec::new(),
            on_failure: None,
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Asks to be told (through `notify`) when a balancer fails to reach this
    /// instance: a discovery source that can refresh early (DNS) uses it.
    pub fn on_failure(mut self, notify: Arc<Notify>) -> Self {
        self.on_failure = Some(notify);
        self
    }

    /// Called by balancers when the instance cannot be reached.
    pub fn report_failure(&self) {
        if let Some(n) = &self.on_failure {
            n.notify_one();
        }
    }

    /// The instance as the JSON stored in registries.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"addr\":{:?}}}", self.addr))
    }

    /// Parses the JSON of [`to_json`](Self::to_json).
    pub fn from_json(json: &[u8]) -> Result<Instance, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// Equal when address and metadata are (the failure hook is not compared).
impl PartialEq for Instance {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
            && self.weight == other.weight
            && self.zone == other.zone
            && self.version == other.version
            && self.tags == other.tags
    }
}

impl Eq for Instance {}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Instance");
        d.field("addr", &self.addr).field("weight", &self.weight);
        if let Some(z) = &self.zone {
            d.field("zone", z);
        }
        if let Some(v) = &self.version {
            d.field("version", v);
        }
        if !self.tags.is_empty() {
            d.field("tags", &self.tags);
        }
        d.finish()
    }
}
