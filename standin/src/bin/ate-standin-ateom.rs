//! `ate-standin-ateom`: the stand-in for upstream's `ateom-gvisor` (see
//! `ate_standin::ateom`). Flags as upstream's
//! (`cmd/ateom-gvisor/main.go:54-56` at 86e138f6): `--pod-uid`,
//! `--version`. Start it in the worker's pod netns (with `eth0`) and the
//! node's mount namespace; it is ready when its socket exists.

use std::process::ExitCode;

use ate_standin::{ateom::Ateom, paths::Paths, version_line};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "ateom-gvisor",
    disable_version_flag = true,
    about = "ateom-gvisor stand-in (ate-conformance)"
)]
struct Args {
    /// The UID of the current pod.
    #[arg(long, default_value = "")]
    pod_uid: String,
    /// Print version and exit.
    #[arg(long)]
    version: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.version {
        println!("{}", version_line("ateom-gvisor"));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = ate_standin::paths::check_name("--pod-uid", &args.pod_uid) {
        eprintln!("ateom-gvisor stand-in: {e}");
        return ExitCode::FAILURE;
    }
    let run = async {
        let ateom = Ateom::start(&Paths::default(), &args.pod_uid).await?;
        eprintln!("ateom-gvisor stand-in: worker {} up", args.pod_uid);
        ateom.serve_until_signal().await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("ateom-gvisor stand-in: {msg}");
            ExitCode::FAILURE
        }
    }
}
