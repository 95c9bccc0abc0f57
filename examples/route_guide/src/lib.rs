//! The route guide: the classic gRPC example, served and called through code
//! that `trpc-build` generates from `proto/route_guide.proto` at build time.
//!
//! Run the server (with reflection) and the client:
//!
//! ```text
//! cargo run -p trpc-example-route-guide --bin route_guide_server -- --listen 127.0.0.1:10000
//! cargo run -p trpc-example-route-guide --bin route_guide_client -- --connect 127.0.0.1:10000
//! cargo run -p trpc-cli -- describe 127.0.0.1:10000 routeguide.RouteGuide
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::time::Instant;
use trpc::codegen::BoxStream;
use trpc::server::Router;
use trpc::{Request, Response, Status, Streaming};

/// The generated `routeguide` package: messages (with serde), the
/// [`RouteGuide`](routeguide::RouteGuide) trait, `RouteGuideServer`,
/// `RouteGuideClient` and `route_guide_methods`.
pub mod routeguide {
    trpc::include_proto!("routeguide");
}

pub use routeguide::{Feature, Point, Rectangle, RouteNote, RouteSummary};

/// The feature database: made-up places on a made-up coast.
pub fn features() -> Vec<Feature> {
    const PLACES: &[(&str, i32, i32)] = &[
        (
            "Old Harbour Lighthouse, 1 Quay Road, Saltmere",
            409_146_138,
            -746_188_906,
        ),
        (
            "The Copper Kettle Tearoom, 14 Mill Lane, Saltmere",
            409_146_100,
            -746_188_100,
        ),
        (
            "Gull Rock Viewpoint, Cliff Path, Saltmere",
            408_122_808,
            -743_999_179,
        ),
        (
            "St. Brannoc's Chapel, Church Hill, Fenwick",
            413_628_156,
            -749_015_468,
        ),
        ("Fenwick Village Green, Fenwick", 419_999_544, -740_371_136),
        (
            "Heron Marsh Bird Hide, Marsh Road, Fenwick",
            414_008_389,
            -743_951_297,
        ),
        ("Windy Top Trig Point, Greyfell", 419_611_318, -746_524_769),
        (
            "Greyfell Reservoir Dam, Greyfell",
            406_109_563,
            -742_186_778,
        ),
        (
            "Packhorse Bridge, Beck Lane, Ashby Dale",
            416_802_456,
            -742_370_183,
        ),
        (
            "Ashby Dale Station, Station Road, Ashby Dale",
            412_950_425,
            -741_077_389,
        ),
        (
            "The Drovers Arms, 3 High Street, Ashby Dale",
            412_144_655,
            -743_949_739,
        ),
        (
            "Lantern Museum, 22 Market Square, Kettleby",
            415_736_605,
            -742_847_522,
        ),
        (
            "Kettleby Market Cross, Market Square, Kettleby",
            415_736_700,
            -742_847_600,
        ),
        (
            "Otter Pool Waterfall, Riverside Walk, Kettleby",
            407_838_351,
            -746_143_763,
        ),
        (
            "Beacon Hill Fort, Beacon Lane, Hollin",
            417_951_888,
            -748_484_944,
        ),
        (
            "Hollin Windmill, Mill Road, Hollin",
            410_248_224,
            -747_127_767,
        ),
        // Known points without a name: "nothing known here".
        ("", 404_318_328, -740_835_638),
        ("", 411_633_782, -746_784_970),
    ];
    PLACES
        .iter()
        .map(|&(name, latitude, longitude)| Feature {
            name: name.into(),
            location: Some(Point {
                latitude,
                longitude,
            }),
        })
        .collect()
}

/// Route notes by (latitude, longitude).
type NotesByPoint = HashMap<(i32, i32), Vec<RouteNote>>;

/// The route guide service over a feature database.
#[derive(Debug)]
pub struct RouteGuideService {
    features: Arc<Vec<Feature>>,
    /// Notes by point; locked briefly, never across an await.
    notes: Arc<Mutex<NotesByPoint>>,
}

impl RouteGuideService {
    /// A service answering from `features`.
    pub fn new(features: Vec<Feature>) -> Self {
        RouteGuideService {
            features: Arc::new(features),
            notes: Arc::default(),
        }
    }

    fn feature_at(&self, point: &Point) -> Option<&Feature> {
        self.features
            .iter()
            .find(|f| f.location.as_ref() == Some(point))
    }
}

impl routeguide::RouteGuide for RouteGuideService {
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        let point = request.into_inner();
        let feature = self.feature_at(&point).cloned().unwrap_or(Feature {
            name: String::new(),
            location: Some(point),
        });
        Ok(Response::new(feature))
    }

    type ListFeaturesStream = BoxStream<Feature>;

    async fn list_features(
        &self,
        request: Request<Rectangle>,
    ) -> Result<Response<Self::ListFeaturesStream>, Status> {
        let rect = request.into_inner();
        let (Some(lo), Some(hi)) = (rect.lo, rect.hi) else {
            return Err(Status::invalid_argument("a rectangle needs lo and hi"));
        };
        let inside: Vec<Result<Feature, Status>> = self
            .features
            .iter()
            .filter(|f| f.location.as_ref().is_some_and(|p| in_range(p, &lo, &hi)))
            .cloned()
            .map(Ok)
            .collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(inside))))
    }

    async fn record_route(
        &self,
        request: Request<Streaming<Point>>,
    ) -> Result<Response<RouteSummary>, Status> {
        let mut points = request.into_inner();
        let mut summary = RouteSummary::default();
        let mut last: Option<Point> = None;
        let start = Instant::now();
        while let Some(point) = points.message().await? {
            summary.point_count += 1;
            if self.feature_at(&point).is_some_and(|f| !f.name.is_empty()) {
                summary.feature_count += 1;
            }
            if let Some(prev) = &last {
                summary.distance += distance_m(prev, &point);
            }
            last = Some(point);
        }
        summary.elapsed_time = start.elapsed().as_secs() as i32;
        Ok(Response::new(summary))
    }

    type RouteChatStream = BoxStream<RouteNote>;

    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        let notes = self.notes.clone();
        let replies = request.into_inner().flat_map(move |note| {
            let earlier: Vec<Result<RouteNote, Status>> = match note {
                Err(status) => vec![Err(status)],
                Ok(note) => {
                    let at = note
                        .location
                        .as_ref()
                        .map_or((0, 0), |p| (p.latitude, p.longitude));
                    let mut notes = notes.lock().unwrap_or_else(|e| e.into_inner());
                    let here = notes.entry(at).or_default();
                    let earlier = here.iter().cloned().map(Ok).collect();
                    here.push(note);
                    earlier
                }
            };
            futures_util::stream::iter(earlier)
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// The server's routes: the route guide and the reflection service.
pub fn router(features: Vec<Feature>) -> Router {
    routeguide::RouteGuideServer::new(RouteGuideService::new(features))
        .into_router()
        .merge(trpc_reflection::service(&[routeguide::FILE_DESCRIPTOR_SET]))
}

fn in_range(p: &Point, lo: &Point, hi: &Point) -> bool {
    let (left, right) = (
        lo.longitude.min(hi.longitude),
        lo.longitude.max(hi.longitude),
    );
    let (bottom, top) = (lo.latitude.min(hi.latitude), lo.latitude.max(hi.latitude));
    (left..=right).contains(&p.longitude) && (bottom..=top).contains(&p.latitude)
}

/// The great-circle distance between two points, in metres (haversine).
pub fn distance_m(a: &Point, b: &Point) -> i32 {
    const E7: f64 = 1e7;
    const EARTH_RADIUS_M: f64 = 6_371_000.0;
    let (lat1, lat2) = (
        (a.latitude as f64 / E7).to_radians(),
        (b.latitude as f64 / E7).to_radians(),
    );
    let dlat = lat2 - lat1;
    let dlon = ((b.longitude - a.longitude) as f64 / E7).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    (2.0 * EARTH_RADIUS_M * h.sqrt().atan2((1.0 - h).sqrt())) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_of_one_degree_of_latitude_is_about_111_km() {
        let a = Point {
            latitude: 0,
            longitude: 0,
        };
        let b = Point {
            latitude: 10_000_000,
            longitude: 0,
        };
        assert!((111_000..111_400).contains(&distance_m(&a, &b)));
    }

    #[test]
    fn rectangles_work_with_corners_in_any_order() {
        let p = |latitude, longitude| Point {
            latitude,
            longitude,
        };
        assert!(in_range(&p(5, 5), &p(10, 10), &p(0, 0)));
        assert!(!in_range(&p(11, 5), &p(0, 0), &p(10, 10)));
    }
}
