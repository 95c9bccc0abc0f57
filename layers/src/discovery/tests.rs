//! Unit tests of the discovery helpers.

use futures_util::StreamExt;

use super::*;

fn addrs(changes: &[InstanceChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Insert(k, _) => format!("+{k}"),
            Change::Remove(k) => format!("-{k}"),
        })
        .collect()
}

#[test]
fn diff_emits_removals_inserts_and_metadata_updates() {
    let mut known = HashMap::new();
    let first = diff(&mut known, vec![Instance::new("a:1"), Instance::new("b:1")]);
    assert_eq!(addrs(&first), ["+a:1", "+b:1"]);
    let same = diff(&mut known, vec![Instance::new("b:1"), Instance::new("a:1")]);
    assert!(same.is_empty());
    let next = diff(
        &mut known,
        vec![Instance::new("b:1").weight(5), Instance::new("c:1")],
    );
    assert_eq!(addrs(&next), ["-a:1", "+b:1", "+c:1"]);
    assert_eq!(known["b:1"].weight, 5);
}

#[tokio::test]
async fn snapshots_become_changes_and_errors_keep_the_last_set() {
    let snapshots = futures_util::stream::iter(vec![
        Ok(vec![Instance::new("a:1")]),
        Err::<Vec<Instance>, BoxError>("registry down".into()),
        Ok(vec![Instance::new("b:1")]),
    ]);
    let items: Vec<_> = Discovery::from_snapshots("test", snapshots).collect().await;
    assert_eq!(items.len(), 4);
    assert!(matches!(&items[0], Ok(Change::Insert(k, _)) if k == "a:1"));
    assert!(items[1].is_err());
    assert!(matches!(&items[2], Ok(Change::Remove(k)) if k == "a:1"));
    assert!(matches!(&items[3], Ok(Change::Insert(k, _)) if k == "b:1"));
}

#[tokio::test]
async fn manual_registry_feeds_its_discovery() {
    let (registry, mut discovery) = Discovery::manual();
    assert!(registry.insert(Instance::new("a:1").zone("z")));
    assert!(registry.remove("a:1"));
    match discovery.next().await {
        Some(Ok(Change::Insert(k, i))) => {
            assert_eq!(k, "a:1");
            assert_eq!(i.zone.as_deref(), Some("z"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(discovery.next().await, Some(Ok(Change::Remove(k))) if k == "a:1"));
    drop(discovery);
    assert!(!registry.insert(Instance::new("b:1")));
}

#[test]
fn targets_parse() {
    assert_eq!(
        Target::parse("static://a:1, b:2,c:3").unwrap(),
        Target::Static(vec!["a:1".into(), "b:2".into(), "c:3".into()])
    );
    assert_eq!(
        Target::parse("dns://localhost:7000").unwrap(),
        Target::Dns("localhost:7000".into())
    );
    assert_eq!(
        Target::parse("dns:///localhost:7000").unwrap(),
        Target::Dns("localhost:7000".into())
    );
    assert_eq!(
        Target::parse("127.0.0.1:1").unwrap().single(),
        Some("127.0.0.1:1")
    );
    assert_eq!(
        Target::parse("tcp://127.0.0.1:1").unwrap().single(),
        Some("127.0.0.1:1")
    );
    let etcd = Target::parse("etcd://127.0.0.1:2379/echo").unwrap();
    assert_eq!(etcd.to_string(), "etcd://127.0.0.1:2379/echo");
    for bad in [
        "static://",
        "static://a",
        "dns://nohost",
        "etcd://127.0.0.1:2379",
        "etcd:///echo",
        "ftp://x:1",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad} should not parse");
    }
}

#[test]
fn instances_serialize_as_documented() {
    let i = Instance::new("10.0.0.7:7000")
        .zone("eu-1")
        .version("1.4.2")
        .tag("canary");
    assert_eq!(
        i.to_json(),
        r#"{"addr":"10.0.0.7:7000","weight":100,"zone":"eu-1","version":"1.4.2","tags":["canary"]}"#
    );
    let minimal = Instance::from_json(br#"{"addr":"a:1"}"#).unwrap();
    assert_eq!(minimal, Instance::new("a:1"));
    assert!(Instance::from_json(b"not json").is_err());
}

#[tokio::test]
async fn dns_resolves_localhost() {
    let mut d = Discovery::dns("localhost:7000").unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), d.next())
        .await
        .expect("DNS answered")
        .unwrap()
        .unwrap();
    match first {
        Change::Insert(k, i) => {
            assert!(k == "127.0.0.1:7000" || k == "[::1]:7000", "{k}");
            assert_eq!(k, i.addr);
        }
        Change::Remove(k) => panic!("unexpected removal of {k}"),
    }
}
