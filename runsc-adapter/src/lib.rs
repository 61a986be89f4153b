//! The runsc adapter: what the node backend places in atelet's asset cache
//! (`/var/lib/ateom-gvisor/static-files/runsc-<sha256>`,
//! `internal/ateompath/ateompath.go:29-34` at 86e138f6) instead of runsc
//! itself, when the runsc under test lacks flags ateom-gvisor passes.
//!
//! ateom-gvisor passes `start -allow-connected-on-save`
//! (`cmd/ateom-gvisor/runsc.go:91`, a global flag) and `restore
//! -background` (`cmd/ateom-gvisor/runsc.go:199`); gVisor 20240729 has
//! neither ("flag provided but not defined"). The harness asks the runsc
//! which flags it has ([`supported`] over `runsc flags` and `runsc <cmd>
//! --help`), writes the ones to drop into `<adapter>.adapter.json`, and the
//! adapter, on every call, removes exactly those arguments, appends one
//! line per call that dropped something to the log the config names (so
//! the report says which flags were dropped), and execs the real runsc
//! with the rest: same PID, same standard streams.
//!
//! Nothing else is changed: an argument that is not one of the configured
//! flags (in any of the spellings `-f`, `--f`, `-f=true`, `--f=false`)
//! passes through untouched.

use serde::{Deserialize, Serialize};

/// `<adapter>.adapter.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The real runsc.
    pub runsc: String,
    /// Boolean flags to drop, without dashes (`allow-connected-on-save`).
    pub drop: Vec<String>,
    /// Where to append one JSON line per call that dropped something.
    pub log: String,
}

/// One call that dropped flags: a line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// The runsc subcommand (`start`, `restore`, ...), if found.
    pub subcommand: Option<String>,
    /// The arguments removed, as given.
    pub dropped: Vec<String>,
}

/// The flag name of `arg` if it is a flag (`-f`, `--f`, `-f=v`, `--f=v`).
fn flag_name(arg: &str) -> Option<&str> {
    let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if bare.is_empty() || bare.starts_with('-') {
        return None;
    }
    Some(bare.split_once('=').map_or(bare, |(n, _)| n))
}

/// Splits `args` (without argv[0]) into what runsc gets and what was
/// dropped.
pub fn filter(args: &[String], drop: &[String]) -> (Vec<String>, Dropped) {
    let mut kept = Vec::with_capacity(args.len());
    let mut dropped = Vec::new();
    for a in args {
        match flag_name(a) {
            Some(n) if drop.iter().any(|d| d == n) => dropped.push(a.clone()),
            _ => kept.push(a.clone()),
        }
    }
    let subcommand = subcommand(&kept);
    (
        kept,
        Dropped {
            subcommand,
            dropped,
        },
    )
}

/// runsc's subcommand: the first argument that is not a flag or a flag's
/// value. Global flags with values are given as `-root PATH` by ateom, so
/// a flag not spelled `-f=v` is taken to consume the next argument unless
/// that looks like a flag too; booleans ateom passes are listed.
fn subcommand(args: &[String]) -> Option<String> {
    const BOOLEAN: &[&str] = &[
        "alsologtostderr",
        "debug",
        "allow-connected-on-save",
        "strace",
        "log-packets",
    ];
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        match flag_name(a) {
            None => return Some(a.clone()),
            Some(n) if a.contains('=') || BOOLEAN.contains(&n) => i += 1,
            Some(_) => i += 2,
        }
    }
    None
}

/// Whether `help` (the output of `runsc flags` or `runsc <cmd> --help`)
/// defines flag `name`: a line `  -name` or `  -name type`.
pub fn supported(help: &str, name: &str) -> bool {
    help.lines().any(|l| {
        let t = l.trim_start();
        t.strip_prefix('-')
            .map(|rest| rest.split_whitespace().next() == Some(name))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn drops_exactly_the_configured_flags_in_every_spelling() {
        let drop = v(&["allow-connected-on-save", "background"]);
        let (kept, d) = filter(
            &v(&[
                "-log-format",
                "json",
                "--alsologtostderr",
                "-allow-connected-on-save",
                "-root",
                "/r",
                "start",
                "c1",
            ]),
            &drop,
        );
        assert_eq!(
            kept,
            v(&[
                "-log-format",
                "json",
                "--alsologtostderr",
                "-root",
                "/r",
                "start",
                "c1"
            ])
        );
        assert_eq!(d.dropped, v(&["-allow-connected-on-save"]));
        assert_eq!(d.subcommand.as_deref(), Some("start"));

        let (kept, d) = filter(
            &v(&[
                "-root",
                "/r",
                "restore",
                "-bundle",
                "/b",
                "-image-path",
                "/i",
                "--background=true",
                "-direct",
                "-detach",
                "c1",
            ]),
            &drop,
        );
        assert_eq!(
            kept,
            v(&[
                "-root",
                "/r",
                "restore",
                "-bundle",
                "/b",
                "-image-path",
                "/i",
                "-direct",
                "-detach",
                "c1"
            ])
        );
        assert_eq!(d.dropped, v(&["--background=true"]));
        assert_eq!(d.subcommand.as_deref(), Some("restore"));
    }

    #[test]
    fn nothing_else_changes() {
        let drop = v(&["background"]);
        let args = v(&[
            "-root",
            "/r",
            "delete",
            "-force",
            "-backgroundx",
            "---background",
            "background",
            "c-background",
        ]);
        let (kept, d) = filter(&args, &drop);
        assert_eq!(kept, args);
        assert!(d.dropped.is_empty());
    }

    #[test]
    fn reads_runscs_own_flag_listings() {
        let help = "Usage: restore [flags]\n  -background\n    \trestore in the background\n  -bundle string\n    \tpath\n";
        assert!(supported(help, "background"));
        assert!(supported(help, "bundle"));
        assert!(!supported(help, "back"));
        assert!(!supported(help, "restore"));
        assert!(!supported(
            "  -net-disconnect-ok\n",
            "allow-connected-on-save"
        ));
    }
}
