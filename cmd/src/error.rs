//! What can go wrong running a command.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a command did not run to a successful end.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program does not exist: not on `PATH`, or the path given names
    /// no file. `hint` says how to install it when the program is a known one
    /// (see [`install_hint`]).
    #[error("command not found: `{program}`{}", hint_suffix(.hint))]
    NotFound {
        /// The program as given.
        program: String,
        /// How to install it, when known.
        hint: Option<&'static str>,
    },

    /// The program exists but could not be started (permissions, a missing
    /// working directory, no more processes, ...).
    #[error("failed to spawn `{cmd}`")]
    Spawn {
        /// The command line.
        cmd: String,
        /// What spawning reported.
        #[source]
        source: io::Error,
    },

    /// The command ran and exited unsuccessfully.
    #[error(
        "command failed: `{cmd}` {}{}",
        describe_status(.status),
        render_tails(.stdout_tail, .stderr_tail)
    )]
    Failed {
        /// The command line.
        cmd: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its standard output (last 40 lines, at most 4 KiB).
        stdout_tail: String,
        /// The end of its standard error (last 40 lines, at most 4 KiB).
        stderr_tail: String,
    },

    /// The command did not finish in time; its process group was stopped
    /// (`SIGTERM`, grace period, `SIGKILL`) and reaped.
    #[error(
        "command timed out: `{cmd}` did not finish within {after:?}{}",
        render_tails(.stdout_tail, .stderr_tail)
    )]
    Timeout {
        /// The command line.
        cmd: String,
        /// The timeout that expired.
        after: Duration,
        /// The end of what it wrote to standard output before it was stopped.
        stdout_tail: String,
        /// The end of what it wrote to standard error before it was stopped.
        stderr_tail: String,
    },

    /// Feeding standard input, reading output or waiting for the child
    /// failed, or its output was not what the caller asked for (not UTF-8).
    #[error("i/o error while running `{cmd}`")]
    Io {
        /// The command line.
        cmd: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Programs the harness uses and how to install each one on these machines.
const INSTALL_HINTS: &[(&str, &str)] = &[
    ("runsc", "apt-get install -y runsc"),
    ("busybox", "apt-get install -y busybox-static"),
    ("kubectl", "apt-get install -y kubernetes-client"),
    ("kind", "go install sigs.k8s.io/kind@latest"),
    ("ko", "go install github.com/google/ko@latest"),
    ("docker-registry", "apt-get install -y docker-registry"),
    ("cargo", "rustup toolchain install stable"),
];

/// How to install `program`, when it is one the harness knows about. Looks at
/// the file name only, so `/usr/sbin/runsc` finds the hint for `runsc`.
pub fn install_hint(program: &OsStr) -> Option<&'static str> {
    let name = Path::new(program).file_name()?.to_str()?;
    INSTALL_HINTS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, hint)| *hint)
}

fn hint_suffix(hint: &Option<&'static str>) -> String {
    match hint {
        Some(hint) => format!(" (install it with: {hint})"),
        None => String::new(),
    }
}

fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(signal) => match signal_name(signal) {
            Some(name) => format!("was killed by signal {signal} ({name})"),
            None => format!("was killed by signal {signal}"),
        },
        None => format!("ended with {status}"),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// `stdout:` and `stderr:` sections, each line indented by four spaces;
/// empty streams are left out.
fn render_tails(stdout: &str, stderr: &str) -> String {
    let mut out = String::new();
    for (name, tail) in [("stdout", stdout), ("stderr", stderr)] {
        if tail.trim().is_empty() {
            continue;
        }
        out.push('\n');
        out.push_str(name);
        out.push(':');
        for line in tail.lines() {
            out.push('\n');
            if !line.is_empty() {
                out.push_str("    ");
                out.push_str(line);
            }
        }
    }
    out
}

const TAIL_LINES: usize = 40;
const TAIL_BYTES: usize = 4096;

/// The last 40 lines and at most 4 KiB of `bytes`, as text (invalid UTF-8
/// replaced); a first line `...` marks that something was cut.
pub fn tail(bytes: &[u8]) -> String {
    let mut cut = false;
    let mut bytes = bytes;
    if bytes.len() > TAIL_BYTES {
        bytes = &bytes[bytes.len() - TAIL_BYTES..];
        cut = true;
        // Do not start in the middle of a UTF-8 character.
        let skip = bytes
            .iter()
            .take(3)
            .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
            .count();
        bytes = &bytes[skip..];
    }
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    cut |= start > 0;
    let mut out = String::new();
    if cut {
        out.push_str("...\n");
    }
    out.push_str(&lines[start..].join("\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(text.as_bytes());
        assert!(t.starts_with("...\nline 60\n"), "{t}");
        assert!(t.ends_with("line 99"), "{t}");
        assert_eq!(tail(b"a\nb\n"), "a\nb");
    }

    #[test]
    fn tail_keeps_last_bytes() {
        let long = "é".repeat(5000);
        let t = tail(long.as_bytes());
        assert!(t.starts_with("...\n"));
        assert!(!t.contains('\u{fffd}'), "cut inside a character");
        assert!(t.len() <= TAIL_BYTES + 4);
    }

    #[test]
    fn failed_message_has_indented_tails() {
        let err = CmdError::Failed {
            cmd: "x --y".into(),
            status: ExitStatus::from_raw(1 << 8),
            stdout_tail: "out 1\nout 2".into(),
            stderr_tail: String::new(),
        };
        assert_eq!(
            err.to_string(),
            "command failed: `x --y` exited with status 1\nstdout:\n    out 1\n    out 2"
        );
        let killed = CmdError::Failed {
            cmd: "x".into(),
            status: ExitStatus::from_raw(9),
            stdout_tail: String::new(),
            stderr_tail: "bye".into(),
        };
        assert_eq!(
            killed.to_string(),
            "command failed: `x` was killed by signal 9 (SIGKILL)\nstderr:\n    bye"
        );
    }
}
