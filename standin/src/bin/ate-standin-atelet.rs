//! `ate-standin-atelet`: the stand-in for upstream's `atelet` (see
//! `ate_standin`). Flags as upstream's (`cmd/atelet/main.go:
//! 62-68` at 86e138f6): `--port` (8085), `--metrics-listen-addr`
//! (`:9090`; accepted, nothing is served there), `--gcp-auth-for-image-pulls`
//! (accepted; the stand-in never uses cloud credentials),
//! `--localhost-registry-replacement`, `--version`. The S3 backend comes
//! from the environment as upstream's does (`main.go:123-139`).
//!
//! Serves `atelet.AteomHerder` and gRPC reflection on `0.0.0.0:<port>`
//! (`main.go:168-175`). On SIGTERM or SIGINT it stops serving and exits,
//! leaving the actors' sandboxes running, as upstream's atelet and ateom do
//! (measured, `docs/upstream-node.md`): the node backend ends them by PID
//! from runsc's state files.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ate_atelet_api::server::AteomHerderServer;
use ate_standin::{atelet, paths::Paths, reflection, snapshot, version_line};
use clap::{ArgAction, Parser};
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "atelet",
    disable_version_flag = true,
    about = "atelet stand-in (ate-conformance)"
)]
struct Args {
    /// The port to listen on.
    #[arg(long, default_value_t = 8085)]
    port: u16,
    /// Address and port the prometheus metrics server should listen on
    /// (accepted; the stand-in serves no metrics).
    #[arg(long, default_value = ":9090")]
    metrics_listen_addr: String,
    /// Use GCP application default credentials mechanism (accepted; the
    /// stand-in pulls only from localhost registries, without credentials).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    gcp_auth_for_image_pulls: bool,
    /// The replacement registry endpoint for localhost and/or loopback IP
    /// addresses.
    #[arg(long, default_value = "")]
    localhost_registry_replacement: String,
    /// Print version and exit.
    #[arg(long)]
    version: bool,
}

async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be watched");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT can be watched");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.version {
        println!("{}", version_line("atelet"));
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let s3 = match snapshot::S3Config::from_env(|k| std::env::var(k).ok()) {
        Ok(c) => c.map(snapshot::S3Client::new),
        Err(e) => {
            error!(error = %e, "Failed to load S3 config");
            return ExitCode::FAILURE;
        }
    };
    if s3.is_some() {
        info!("Using S3 storage backend");
    }
    let service = Arc::new(atelet::Atelet::new(atelet::Config {
        paths: Paths::default(),
        s3,
        localhost_registry_replacement: Some(args.localhost_registry_replacement.clone()),
        runsc_timeout: Duration::from_secs(120),
    }));
    let reflection_v1 = match tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(reflection::descriptor_set())
        .build_v1()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot build the reflection service");
            return ExitCode::FAILURE;
        }
    };
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(reflection::descriptor_set())
        .build_v1alpha()
        .expect("the same descriptor set built for v1");
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    info!(%addr, gcp_auth = args.gcp_auth_for_image_pulls, metrics = %args.metrics_listen_addr, "WorkersManagerService listening");
    let served = tonic::transport::Server::builder()
        .add_service(AteomHerderServer::new(service.clone()))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_shutdown(addr, signalled())
        .await;
    // As upstream's atelet: stopping it leaves the actors' sandboxes
    // running (measured, docs/upstream-node.md); whoever stops the node
    // ends them by PID from runsc's state files.
    drop(service);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "Failed to serve");
            ExitCode::FAILURE
        }
    }
}
