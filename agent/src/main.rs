//! `ate-refagent`: `serve` runs the agent; `relay` is its helper inside a
//! sandbox (started by the agent with `runsc exec`, never by hand); `pause`
//! is the program of each sandbox's pause container.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ate_refagent::fault::Fault;
use ate_refagent::runsc::Runsc;
use ate_refagent::server::{serve, ServeOptions};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ate-refagent",
    version,
    about = "reference identity-mounting agent: actors in gVisor sandboxes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the control API and the router until SIGTERM/SIGINT.
    Serve {
        /// State directory: templates, actors, snapshots, sandbox records.
        #[arg(long)]
        state_dir: PathBuf,
        /// Control API address.
        #[arg(long, default_value = "127.0.0.1:0")]
        control_addr: SocketAddr,
        /// Router address.
        #[arg(long, default_value = "127.0.0.1:0")]
        router_addr: SocketAddr,
        /// The runsc program.
        #[arg(long, default_value = "runsc")]
        runsc: PathBuf,
        /// runsc --root (default: runsc's own default).
        #[arg(long)]
        runsc_root: Option<PathBuf>,
        /// Write runsc debug logs under each actor's logs/ directory.
        #[arg(long)]
        runsc_debug: bool,
        /// Seconds the golden actor has to answer /healthz.
        #[arg(long, default_value_t = 20)]
        golden_health_timeout: u64,
        /// Static binary to expose in sandboxes as the relay (default: this
        /// executable, which must then be static).
        #[arg(long)]
        helper_bin: Option<PathBuf>,
        /// The harness's static checker (`ate-check`), placed next to the
        /// relay and run in sandboxes by `POST .../check` (default: none,
        /// and no checks).
        #[arg(long, value_name = "PATH")]
        checker_bin: Option<PathBuf>,
        /// Shut down like on SIGTERM when the parent process exits.
        #[arg(long)]
        exit_with_parent: bool,
        /// Self-test only: break the identity contract on purpose in this
        /// way (never the default).
        #[arg(long, value_name = "NAME", value_parser = fault_parser())]
        fault: Option<Fault>,
    },
    /// Remove the sandboxes recorded in the state dir of an agent that is
    /// gone (crashed or killed), printing each; fails if an agent holds it.
    Gc {
        /// The dead agent's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Also remove the state directory afterwards.
        #[arg(long)]
        remove: bool,
        /// The runsc program.
        #[arg(long, default_value = "runsc")]
        runsc: PathBuf,
        /// runsc --root (default: runsc's own default).
        #[arg(long)]
        runsc_root: Option<PathBuf>,
    },
    /// Inside a sandbox: pipe stdin/stdout to 127.0.0.1:PORT.
    Relay {
        /// Port of the app inside the sandbox.
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
    /// Inside a sandbox: the pause container's process; does nothing until
    /// it is killed.
    Pause,
}

fn main() -> std::process::ExitCode {
    // Started as `/pause` with no arguments, as atelet starts the pause
    // container of every sandbox (upstream `cmd/atelet/main.go:682-692`:
    // the process is `/pause` alone, like Kubernetes' pause image): the
    // node backend's pause image holds this binary at `/pause`.
    let mut argv = std::env::args_os();
    let named_pause = argv
        .next()
        .is_some_and(|a0| std::path::Path::new(&a0).file_name() == Some("pause".as_ref()));
    if named_pause && argv.next().is_none() {
        ate_refagent::pause::run_in_sandbox();
    }
    let cli = Cli::parse();
    match cli.cmd {
        Command::Relay { port } => ate_refagent::relay::run_in_sandbox(port),
        Command::Pause => ate_refagent::pause::run_in_sandbox(),
        Command::Gc {
            state_dir,
            remove,
            runsc,
            runsc_root,
        } => {
            init_tracing();
            let runsc = Runsc {
                program: runsc,
                root: runsc_root,
                ..Runsc::default()
            };
            block_on(async move {
                ate_refagent::server::gc(&state_dir, &runsc, remove)
                    .await
                    .map(|_| ())
            })
        }
        Command::Serve {
            state_dir,
            control_addr,
            router_addr,
            runsc,
            runsc_root,
            runsc_debug,
            golden_health_timeout,
            helper_bin,
            checker_bin,
            exit_with_parent,
            fault,
        } => {
            init_tracing();
            let helper_bin = match helper_bin.map(Ok).unwrap_or_else(std::env::current_exe) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: cannot find this executable for the relay helper: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let opts = ServeOptions {
                state_dir,
                control_addr,
                router_addr,
                runsc: Runsc {
                    program: runsc,
                    root: runsc_root,
                    ..Runsc::default()
                },
                helper_bin,
                checker_bin,
                golden_health_timeout: Duration::from_secs(golden_health_timeout),
                runsc_debug,
                exit_with_parent,
                fault,
            };
            block_on(serve(opts))
        }
    }
}

/// `--fault NAME`: one of [`Fault::ALL`]; anything else is a usage error
/// (exit 2) that lists the valid names.
fn fault_parser() -> impl clap::builder::TypedValueParser<Value = Fault> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Fault::names()).map(|name| {
        name.parse::<Fault>()
            .expect("a possible value is a fault name")
    })
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
}

fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for c in e.chain().skip(1) {
                eprintln!("caused by: {c}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
