//! `trpc health TARGET [SERVICE]`: asks `grpc.health.v1.Health/Check` (or,
//! with `--watch`, streams `Watch`) and exits with a code scripts can test.
//!
//! | exit code | meaning |
//! |---|---|
//! | 0 | `SERVING` |
//! | 1 | any other status (`NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN`) |
//! | 2 | usage error |
//! | 64 + code | the call failed with that status code, e.g. 69 (`NOT_FOUND`: the service is not registered), 76 (`UNIMPLEMENTED`: no health service), 78 (`UNAVAILABLE`) |

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use trpc::codec::Proto;
use trpc::health::{
    HealthCheckRequest, HealthCheckResponse, ServingStatus, CHECK_METHOD, WATCH_METHOD,
};
use trpc::{Client, Request, Status};

use crate::target::{self, Policy};
use crate::tls::TlsArgs;

/// The arguments of `trpc health`.
#[derive(clap::Args, Debug)]
pub(crate) struct HealthArgs {
    /// Target: host:port or any target `trpc call` takes.
    addr: String,
    /// The service to check (default: the whole server).
    #[arg(default_value = "")]
    service: String,
    /// Stream every status change (Watch) until the server ends the stream.
    #[arg(long)]
    watch: bool,
    /// Deadline of the check (not of --watch).
    #[arg(long, value_parser = trpc::util::parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Connect timeout.
    #[arg(long, value_parser = trpc::util::parse_duration, default_value = "5s")]
    connect_timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
}

fn exit_for(status: ServingStatus) -> ExitCode {
    if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(crate) async fn health(args: HealthArgs) -> Result<ExitCode, Status> {
    let svc = target::connect(
        &args.addr,
        args.connect_timeout,
        Policy::RoundRobin,
        &args.tls,
    )
    .await?
    .service();
    let mut client = Client::with_codec(svc, Proto);
    let ask = HealthCheckRequest {
        service: args.service.clone(),
    };
    if !args.watch {
        let mut req = Request::new(ask);
        req.set_timeout(args.timeout);
        let reply = client
            .unary::<_, HealthCheckResponse>(CHECK_METHOD, req)
            .await?;
        let status = reply.get_ref().serving_status();
        println!("{status}");
        return Ok(exit_for(status));
    }
    let mut stream = client
        .server_streaming::<_, HealthCheckResponse>(WATCH_METHOD, Request::new(ask))
        .await?
        .into_inner();
    let mut last = ServingStatus::Unknown;
    while let Some(item) = stream.next().await {
        last = item?.serving_status();
        println!("{last}");
    }
    Ok(exit_for(last))
}
