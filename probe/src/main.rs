//! `ate-probe`: the probe actor. A tiny HTTP/1.1 server, run as PID 1 inside
//! the sandbox, that reports what the actor runtime looks like from inside
//! (CONTRACT.md section II). It depends on nothing of ours.
//!
//! **Invariants:** every response carries Content-Length (clients inside
//! gVisor must never wait for EOF); every value except `/snapshot` is read
//! fresh per request; read errors are reported, never hidden.
//!
//! **Blocking I/O:** a blocking `accept` loop on the main thread, one
//! thread per connection (http.rs), no epoll/poll/select. This was needed
//! for gVisor 2022-12, which cannot checkpoint a listening TCP socket that
//! an epoll set waits on ("endpoint still has waiters upon save"); the
//! 20240729 runsc the harness now requires checkpoints epoll servers too,
//! and `ate-probe-tokio` (the same endpoints on tokio + hyper) proves it.
//!
//! **Signals:** SIGTERM and SIGINT make the process exit with 0 at once,
//! ending requests in flight. As PID 1 it would otherwise ignore them.

use ate_probe::{http, routes};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const USAGE: &str = "usage: ate-probe [--port N] [--identity-dir DIR]
  --port N            port to listen on, all addresses (default 80, or env ATE_PROBE_PORT); 0 picks one
  --identity-dir DIR  directory holding actor-id (default /run/ate)
prints {\"listening\":\"ADDR\"} on stdout once it listens";

#[derive(Debug, PartialEq)]
struct Options {
    port: u16,
    identity_dir: PathBuf,
}

/// Parses the command line; `Ok(None)` means help was asked for.
fn parse_args(
    mut args: impl Iterator<Item = String>,
    env_port: Option<String>,
) -> Result<Option<Options>, String> {
    let port = |name: &str, v: &str| {
        v.parse::<u16>()
            .map_err(|_| format!("{name}: bad value {v:?}: want a port in 0..=65535"))
    };
    let mut opts = Options {
        port: 80,
        identity_dir: PathBuf::from("/run/ate"),
    };
    if let Some(v) = env_port {
        opts.port = port("ATE_PROBE_PORT", &v)?;
    }
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag}: missing value"))
        };
        match flag.as_str() {
            "--port" => opts.port = port("--port", &value()?)?,
            "--identity-dir" => opts.identity_dir = PathBuf::from(value()?),
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("unknown flag: {arg}")),
        }
    }
    Ok(Some(opts))
}

fn main() -> ExitCode {
    let env_port = std::env::var_os("ATE_PROBE_PORT").map(|v| v.to_string_lossy().into_owned());
    let opts = match parse_args(std::env::args().skip(1), env_port) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("ate-probe: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let state = match routes::State::capture(opts.identity_dir) {
        Ok(state) => Arc::new(state),
        Err(e) => {
            eprintln!("ate-probe: getrandom for the start nonce: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = exit_on_signal() {
        eprintln!("ate-probe: {e}");
        return ExitCode::FAILURE;
    }
    // A SocketAddr, never a name: nothing here may resolve (static binary, no DNS).
    let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, opts.port));
    let listener = match TcpListener::bind(bind) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("ate-probe: bind {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // Nobody may be reading stdout (PID 1 in a sandbox): ignore failures.
            let _ = writeln!(out, "{{\"listening\":\"{addr}\"}}").and_then(|()| out.flush());
        }
        Err(e) => {
            eprintln!("ate-probe: local_addr: {e}");
            return ExitCode::FAILURE;
        }
    }
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = state.clone();
                let spawned = thread::Builder::new()
                    .spawn(move || http::serve(stream, |req| routes::handle(&state, req)));
                if let Err(e) = spawned {
                    eprintln!("ate-probe: thread for a connection: {e}");
                }
            }
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                eprintln!("ate-probe: accept: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Blocks SIGTERM and SIGINT in this thread, and so in every thread spawned
/// from it later, then starts the one thread that takes them: it waits for
/// either and exits with 0. Call it before spawning any other thread.
fn exit_on_signal() -> Result<(), String> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it and
    // sigaddset only sets bits in it, for valid signal numbers.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    };
    // SAFETY: a valid set; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!(
            "blocking SIGTERM/SIGINT: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: a valid set and a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                std::process::exit(0);
            }
        })
        .map(drop)
        .map_err(|e| format!("starting the signal thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: Option<&str>) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| s.to_string()), env.map(str::to_string))
    }

    #[test]
    fn flags() {
        let o = parse(&[], None).unwrap().unwrap();
        assert_eq!(
            o,
            Options {
                port: 80,
                identity_dir: "/run/ate".into()
            }
        );
        let o = parse(&["--port", "8080", "--identity-dir=/x"], Some("9"))
            .unwrap()
            .unwrap();
        assert_eq!(
            o,
            Options {
                port: 8080,
                identity_dir: "/x".into()
            }
        );
        assert_eq!(parse(&[], Some("9")).unwrap().unwrap().port, 9);
        assert_eq!(parse(&["--help"], None).unwrap(), None);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        assert!(parse(&["--port", "x"], None)
            .unwrap_err()
            .starts_with("--port: bad value \"x\""));
        assert!(parse(&["--port"], None)
            .unwrap_err()
            .starts_with("--port: missing value"));
        assert!(parse(&["--bogus"], None).unwrap_err().contains("--bogus"));
        assert!(parse(&[], Some("70000"))
            .unwrap_err()
            .starts_with("ATE_PROBE_PORT"));
    }
}
