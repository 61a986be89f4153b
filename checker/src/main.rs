//! `ate-check SUBCOMMAND`: one observation of the sandbox it runs in,
//! printed as one JSON object on stdout (exit 0); a usage error goes to
//! stderr, naming the bad argument (exit 2).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use ate_checker::observe::{self, Paths};
use ate_checker::Command;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match Command::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ate-check: {e}");
            return ExitCode::from(2);
        }
    };
    let p = Paths::sandbox();
    let json = match cmd {
        Command::Mounts => serde_json::to_string(&observe::mounts(p)),
        Command::TryWrite => serde_json::to_string(&observe::try_write(p)),
        Command::Env => serde_json::to_string(&observe::env(p)),
        Command::Watch { ms } => {
            serde_json::to_string(&observe::watch(p, Duration::from_millis(ms)))
        }
        Command::Evidence => serde_json::to_string(&observe::evidence(p)),
        Command::Mark { token } => serde_json::to_string(&observe::mark(p, &token)),
    }
    .expect("the checker's types serialise");
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{json}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
