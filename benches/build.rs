//! Generates the tonic echo service with tonic-build's manual mode: the
//! messages are hand-written prost structs (`src/messages.rs`), so no `.proto`
//! file and no `protoc` are needed.

fn main() {
    let codec = "tonic_prost::ProstCodec";
    let echo = tonic_build::manual::Service::builder()
        .name("Echo")
        .package("bench")
        .method(
            tonic_build::manual::Method::builder()
                .name("echo")
                .route_name("Echo")
                .input_type("crate::messages::EchoMsg")
                .output_type("crate::messages::EchoMsg")
                .codec_path(codec)
                .build(),
        )
        .method(
            tonic_build::manual::Method::builder()
                .name("download")
                .route_name("Download")
                .input_type("crate::messages::DownloadRequest")
                .output_type("crate::messages::EchoMsg")
                .codec_path(codec)
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[echo]);
    println!("cargo:rerun-if-changed=build.rs");
}
