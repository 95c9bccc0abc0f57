//! `trpc gen`: the `build.rs` code generator as a command, for teams that
//! check generated code in.

use std::path::{Path, PathBuf};

/// Options of `trpc gen`.
#[derive(clap::Args, Debug)]
pub(crate) struct GenArgs {
    /// The .proto files to compile (their imports are found under the include paths).
    #[arg(required = true)]
    protos: Vec<PathBuf>,
    /// Directory to write the generated code to (created if missing).
    #[arg(long, short)]
    out: PathBuf,
    /// An include path, repeatable (default: the directory of each .proto).
    #[arg(short = 'I', long = "include", value_name = "DIR")]
    includes: Vec<PathBuf>,
    /// Also generate serde (protobuf JSON mapping) for the messages.
    #[arg(long)]
    serde: bool,
    /// Generate no client.
    #[arg(long)]
    no_client: bool,
    /// Generate no server trait.
    #[arg(long)]
    no_server: bool,
    /// Also write one file including every package in nested modules.
    #[arg(long, value_name = "NAME")]
    include_file: Option<PathBuf>,
}

/// Runs the generator; on success, the files written.
pub(crate) fn gen(args: GenArgs) -> Result<Vec<PathBuf>, trpc_build::Error> {
    let includes: Vec<PathBuf> = if args.includes.is_empty() {
        let mut dirs: Vec<PathBuf> = args
            .protos
            .iter()
            .map(|p| {
                p.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            })
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d
                }
            })
            .collect();
        dirs.dedup();
        dirs
    } else {
        args.includes
    };
    let set = trpc_build::compile_descriptor_set(&args.protos, &includes)?;
    let mut builder = trpc_build::configure()
        .serde(args.serde)
        .build_client(!args.no_client)
        .build_server(!args.no_server)
        .emit_rerun_if_changed(false)
        .out_dir(&args.out);
    if let Some(f) = args.include_file {
        builder = builder.include_file(f);
    }
    builder.compile_fds(set)
}
