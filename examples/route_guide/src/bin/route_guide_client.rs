//! The route guide client: all four call shapes against a route guide server:
//! `cargo run -p trpc-example-route-guide --bin route_guide_client -- --connect 127.0.0.1:10000`.

use std::time::Duration;

use clap::Parser;
use route_guide::routeguide::RouteGuideClient;
use route_guide::{Point, Rectangle, RouteNote};
use trpc::{Endpoint, Status};

#[derive(Parser, Debug)]
#[command(about = "Call every method of routeguide.RouteGuide and print the answers")]
struct Args {
    /// Server address: host:port or tcp://host:port.
    #[arg(long, default_value = "127.0.0.1:10000")]
    connect: String,
}

fn point(latitude: i32, longitude: i32) -> Point {
    Point {
        latitude,
        longitude,
    }
}

#[tokio::main]
async fn main() -> Result<(), Status> {
    let args = Args::parse();
    let channel = Endpoint::new(&args.connect)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = RouteGuideClient::new(channel);

    // Unary.
    for p in [point(409_146_138, -746_188_906), point(0, 0)] {
        let feature = client.get_feature(p).await?.into_inner();
        match feature.name.as_str() {
            "" => println!("GetFeature: nothing known at {p:?}"),
            name => println!("GetFeature: {name}"),
        }
    }

    // Server streaming.
    let rect = Rectangle {
        lo: Some(point(400_000_000, -750_000_000)),
        hi: Some(point(420_000_000, -730_000_000)),
    };
    let mut features = client.list_features(rect).await?.into_inner();
    let mut n = 0;
    while let Some(f) = features.message().await? {
        n += 1;
        if !f.name.is_empty() {
            println!("ListFeatures: {}", f.name);
        }
    }
    println!("ListFeatures: {n} features in the rectangle");

    // Client streaming: a route through the first ten known places.
    let route: Vec<Point> = route_guide::features()
        .into_iter()
        .take(10)
        .filter_map(|f| f.location)
        .collect();
    let summary = client
        .record_route(futures_util::stream::iter(route))
        .await?
        .into_inner();
    println!(
        "RecordRoute: {} points, {} features, {} m",
        summary.point_count, summary.feature_count, summary.distance
    );

    // Bidirectional streaming: notes at two points, each visited twice.
    let notes = ["first at A", "first at B", "second at A", "second at B"]
        .into_iter()
        .enumerate()
        .map(|(i, message)| RouteNote {
            location: Some(point(0, (i % 2) as i32)),
            message: message.into(),
        });
    let mut earlier = client
        .route_chat(futures_util::stream::iter(notes.collect::<Vec<_>>()))
        .await?
        .into_inner();
    while let Some(note) = earlier.message().await? {
        println!(
            "RouteChat: earlier note {:?} at {:?}",
            note.message, note.location
        );
    }
    Ok(())
}
