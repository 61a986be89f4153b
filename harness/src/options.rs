//! The harness's own options: the same as flags after `--` or as
//! environment variables (a flag wins). They are taken out of the command
//! line before libtest-mimic parses the rest, so its flags (`--list`,
//! filters, `--exact`, `--skip`, `--ignored`, `--include-ignored`,
//! `--test-threads`, `--nocapture`, ...) keep working.
//!
//! The options every run has live here; each backend owns its own flag
//! group, defaults and validation (`backend::select`), and an explicit
//! flag of a backend that is not selected is an error naming its group.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::select::{self, BackendOptions};
pub use crate::flags::{parse_bool, Spec, Values};
use crate::run_id::RunId;

/// The options of every run, whatever the backend.
const COMMON: &[Spec] = &[
    Spec {
        flag: "--backend",
        env: "ATE_BACKEND",
        value: Some("NAME"),
        help: "system under test (local, kind)",
    },
    Spec {
        flag: "--report-dir",
        env: "ATE_REPORT_DIR",
        value: Some("DIR"),
        help: "where reports and artifacts go",
    },
    Spec {
        flag: "--run-id",
        env: "ATE_RUN_ID",
        value: Some("ID"),
        help: "names this run's resources (1-16 of a-z0-9)",
    },
    Spec {
        flag: "--keep",
        env: "ATE_KEEP",
        value: None,
        help: "leave a failed trial's resources for inspection",
    },
    Spec {
        flag: "--fail-on-skip",
        env: "ATE_FAIL_ON_SKIP",
        value: None,
        help: "a skipped trial fails the run (default under CI=true)",
    },
    Spec {
        flag: "--no-fail-on-skip",
        env: "",
        value: None,
        help: "a skipped trial does not fail the run",
    },
    Spec {
        flag: "--waive",
        env: "",
        value: Some("ID=REASON"),
        help: "waive a contract statement this backend cannot check (repeatable): its skips show as waived with the reason and do not fail the run",
    },
    Spec {
        flag: "--waivers",
        env: "ATE_WAIVERS",
        value: Some("FILE"),
        help: "waivers from a file, one `ID-n: reason` per line (# comments)",
    },
    Spec {
        flag: "--probe-bin",
        env: "ATE_PROBE_BIN",
        value: Some("PATH"),
        help: "a static probe binary to use instead of ours",
    },
    Spec {
        flag: "--golden-timeout",
        env: "ATE_GOLDEN_TIMEOUT",
        value: Some("SECS"),
        help: "how long to wait for the golden snapshot (default 60 local, 300 kind)",
    },
];

/// libtest-mimic's flags (those taking a value are marked), so an unknown
/// flag can be told from one of theirs.
const LIBTEST: &[(&str, bool)] = &[
    ("--include-ignored", false),
    ("--ignored", false),
    ("--test", false),
    ("--bench", false),
    ("--list", false),
    ("--nocapture", false),
    ("--show-output", false),
    ("--exact", false),
    ("--quiet", false),
    ("-q", false),
    ("--test-threads", true),
    ("--logfile", true),
    ("--skip", true),
    ("--color", true),
    ("--format", true),
    ("-Z", true),
    ("--help", false),
    ("-h", false),
];

/// The harness's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The system under test and its own options.
    pub backend: BackendOptions,
    /// Report directory.
    pub report_dir: PathBuf,
    /// This run's ID.
    pub run_id: RunId,
    /// Keep a failed trial's resources.
    pub keep: bool,
    /// A skipped trial fails the run (unless waived).
    pub fail_on_skip: bool,
    /// Waived contract statements (`ID-9` → reason).
    pub waivers: BTreeMap<String, String>,
    /// Another probe binary.
    pub probe_bin: Option<PathBuf>,
    /// Golden snapshot deadline.
    pub golden_timeout: Duration,
}

impl Options {
    /// What the selected backend is built with besides its own options.
    pub fn run_context(&self) -> select::RunContext {
        select::RunContext {
            run_id: self.run_id.clone(),
            report_dir: self.report_dir.clone(),
            probe_bin: self.probe_bin.clone(),
            golden_timeout: self.golden_timeout,
        }
    }
}

/// Every option there is: ours, then each backend's group.
fn all_specs() -> impl Iterator<Item = (&'static str, &'static Spec)> {
    COMMON.iter().map(|s| ("", s)).chain(
        select::flag_groups()
            .into_iter()
            .flat_map(|(group, specs)| specs.iter().map(move |s| (group, s))),
    )
}

/// Usage lines for our options.
pub fn usage() -> String {
    let mut s =
        String::from("ate-conformance options (after `--`, or as environment variables):\n");
    let mut last_group = "";
    for (group, o) in all_specs() {
        if group != last_group {
            s.push_str(&format!("backend {group}:\n"));
            last_group = group;
        }
        let flag = match o.value {
            Some(v) => format!("{} {v}", o.flag),
            None => o.flag.to_owned(),
        };
        let env = if o.env.is_empty() {
            String::new()
        } else {
            format!(" [{}]", o.env)
        };
        s.push_str(&format!("  {flag:<26} {}{env}\n", o.help));
    }
    s
}

/// Splits our options from libtest-mimic's arguments (program name first),
/// reading environment variables through `env`. Returns our options and
/// the arguments for libtest-mimic.
///
/// A waiver names a statement of the contract (`ID-1` ... `ID-15`) and a
/// non-empty reason.
fn add_waiver(
    waivers: &mut BTreeMap<String, String>,
    id: &str,
    reason: &str,
    origin: &str,
) -> anyhow::Result<()> {
    let (id, reason) = (id.trim(), reason.trim().trim_matches('"'));
    if !crate::report::CONTRACT
        .iter()
        .any(|(known, _)| *known == id)
    {
        anyhow::bail!(
            "{origin}: invalid waiver statement {id:?}: use a contract statement ID, ID-1 to ID-{}",
            crate::report::CONTRACT.len()
        );
    }
    if reason.is_empty() {
        anyhow::bail!("{origin}: the waiver of {id} has no reason: say why it cannot be checked");
    }
    waivers.insert(id.to_owned(), reason.to_owned());
    Ok(())
}

pub fn parse(
    args: Vec<String>,
    env: impl Fn(&str) -> Option<String>,
    default_report_dir: PathBuf,
) -> anyhow::Result<(Options, Vec<String>)> {
    let mut rest = Vec::new();
    let mut given: BTreeMap<&'static str, String> = Default::default();
    let mut it = args.into_iter();
    rest.extend(it.next());
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        if let Some((_, spec)) = all_specs().find(|(_, s)| s.flag == name) {
            let v = match (spec.value, inline) {
                (Some(_), Some(v)) => v,
                (Some(meta), None) => it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("option {name} needs a value ({meta})"))?,
                (None, Some(v)) => {
                    parse_bool(&name, &v)?;
                    v
                }
                (None, None) => "true".to_owned(),
            };
            if spec.flag == "--waive" {
                // Repeatable: every occurrence is kept, one per line.
                given
                    .entry(spec.flag)
                    .and_modify(|all| {
                        all.push('\n');
                        all.push_str(&v);
                    })
                    .or_insert(v);
            } else {
                given.insert(spec.flag, v);
            }
            continue;
        }
        if name.starts_with('-') && name != "-" {
            match LIBTEST.iter().find(|(f, _)| *f == name) {
                Some((_, takes)) => {
                    rest.push(a);
                    if *takes && inline.is_none() {
                        rest.extend(it.next());
                    }
                }
                None => {
                    let ours: Vec<&str> = all_specs().map(|(_, s)| s.flag).collect();
                    let theirs: Vec<&str> = LIBTEST.iter().map(|(f, _)| *f).collect();
                    anyhow::bail!(
                        "unknown option {name:?}\nvalid options: {}\nand libtest's: {}",
                        ours.join(", "),
                        theirs.join(", ")
                    );
                }
            }
            continue;
        }
        rest.push(a);
    }
    let values = Values::new(all_specs().map(|(_, s)| s).collect(), given, &env);
    let backend_name = values.get("--backend").unwrap_or_else(|| "local".into());
    // Each backend's group: an explicit flag of another backend's is a
    // mistake worth naming; its variables may be set for other reasons.
    for (group, specs) in select::flag_groups() {
        if group == backend_name {
            continue;
        }
        if let Some(s) = specs.iter().find(|s| values.given(s.flag)) {
            if select::BACKENDS.contains(&backend_name.as_str()) {
                anyhow::bail!(
                    "{} is for the {group} backend (use --backend {group}); the selected backend is {backend_name}",
                    s.flag
                );
            }
        }
    }
    let backend = select::parse(&backend_name, &values)?;
    let run_id = match values.get("--run-id") {
        Some(v) => RunId::parse(&v)?,
        None => RunId::random(),
    };
    let keep = values.switch("--keep")?;
    let ci = match values.env("CI") {
        Some(v) => parse_bool("CI", &v).unwrap_or(true),
        None => false,
    };
    let fail_on_skip = if values.given("--no-fail-on-skip") {
        if values.given("--fail-on-skip") {
            anyhow::bail!("--fail-on-skip and --no-fail-on-skip contradict each other");
        }
        false
    } else {
        match values.get("--fail-on-skip") {
            Some(v) => parse_bool("--fail-on-skip/ATE_FAIL_ON_SKIP", &v)?,
            None => ci,
        }
    };
    let mut waivers = BTreeMap::new();
    if let Some(file) = values.get("--waivers") {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("cannot read --waivers/ATE_WAIVERS file {file:?}: {e}"))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, reason) = line.split_once(':').ok_or_else(|| {
                anyhow::anyhow!(
                    "{file}:{}: {line:?} is not a waiver: use `ID-n: reason`",
                    n + 1
                )
            })?;
            add_waiver(&mut waivers, id, reason, &format!("{file}:{}", n + 1))?;
        }
    }
    for w in values
        .get("--waive")
        .iter()
        .flat_map(|all| all.lines().map(str::to_owned).collect::<Vec<_>>())
    {
        let (id, reason) = w
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid --waive {w:?}: use --waive ID-n=\"reason\""))?;
        add_waiver(&mut waivers, id, reason, "--waive")?;
    }
    let golden_timeout = match values.get("--golden-timeout") {
        Some(v) => match v.parse::<u64>() {
            Ok(s) if (1..=3600).contains(&s) => Duration::from_secs(s),
            _ => anyhow::bail!(
                "invalid --golden-timeout/ATE_GOLDEN_TIMEOUT {v:?}: use whole seconds from 1 to 3600"
            ),
        },
        None => backend.default_golden_timeout(),
    };
    Ok((
        Options {
            backend,
            report_dir: values
                .get("--report-dir")
                .map(PathBuf::from)
                .unwrap_or(default_report_dir),
            run_id,
            keep,
            fail_on_skip,
            waivers,
            probe_bin: values.get("--probe-bin").map(PathBuf::from),
            golden_timeout,
        },
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kind::KindFlags;
    use crate::backend::local::LocalFlags;
    use std::collections::BTreeMap;

    fn local(o: &Options) -> &LocalFlags {
        match &o.backend {
            BackendOptions::Local(l) => l,
            other => panic!("not local: {other:?}"),
        }
    }

    fn kind(o: &Options) -> &KindFlags {
        match &o.backend {
            BackendOptions::Kind(k) => k,
            other => panic!("not kind: {other:?}"),
        }
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(Options, Vec<String>)> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut a = vec!["identity".to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        parse(a, |k| env.get(k).cloned(), PathBuf::from("/default/report"))
    }

    #[test]
    fn ours_are_removed_and_libtests_kept_in_order() {
        let (o, rest) = run(
            &[
                "--backend",
                "local",
                "--list",
                "--format",
                "terse",
                "--report-dir=/r",
                "gate::",
                "--exact",
                "--keep",
                "--test-threads",
                "1",
                "--skip",
                "x",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            rest,
            [
                "identity",
                "--list",
                "--format",
                "terse",
                "gate::",
                "--exact",
                "--test-threads",
                "1",
                "--skip",
                "x"
            ]
        );
        assert_eq!(o.backend.name(), "local");
        assert_eq!(o.report_dir, PathBuf::from("/r"));
        assert!(o.keep);
    }

    #[test]
    fn environment_works_and_a_flag_wins() {
        let (o, _) = run(
            &[],
            &[
                ("ATE_REPORT_DIR", "/from-env"),
                ("ATE_KEEP", "1"),
                ("ATE_RUN_ID", "abc123"),
            ],
        )
        .unwrap();
        assert_eq!(o.report_dir, PathBuf::from("/from-env"));
        assert!(o.keep);
        assert_eq!(o.run_id.as_str(), "abc123");
        let (o, _) = run(
            &["--report-dir", "/flag", "--run-id", "ff"],
            &[("ATE_REPORT_DIR", "/from-env"), ("ATE_RUN_ID", "abc")],
        )
        .unwrap();
        assert_eq!(o.report_dir, PathBuf::from("/flag"));
        assert_eq!(o.run_id.as_str(), "ff");
        let (o, _) = run(&[], &[]).unwrap();
        assert_eq!(o.report_dir, PathBuf::from("/default/report"));
        assert!(!o.keep);
        assert_eq!(local(&o).runsc, PathBuf::from("runsc"));
    }

    #[test]
    fn agent_fault_option() {
        assert_eq!(run(&[], &[]).unwrap().0.backend.agent_fault(), None);
        let (o, _) = run(&["--agent-fault", "torn-write"], &[]).unwrap();
        assert_eq!(o.backend.agent_fault(), Some("torn-write"));
        let (o, _) = run(&[], &[("ATE_AGENT_FAULT", "file-mount")]).unwrap();
        assert_eq!(local(&o).agent_fault.as_deref(), Some("file-mount"));
    }

    #[test]
    fn kube_options() {
        let (o, _) = run(
            &[
                "--backend",
                "kind",
                "--kubeconfig",
                "/k",
                "--substrate-root",
                "/s",
            ],
            &[("KUBECTL_CONTEXT", "kind-kind")],
        )
        .unwrap();
        assert_eq!(kind(&o).kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(kind(&o).context.as_deref(), Some("kind-kind"));
        assert_eq!(kind(&o).substrate_root, Some(PathBuf::from("/s")));
        let (o, _) = run(
            &["--backend", "kind", "--context", "mine"],
            &[
                ("KUBECTL_CONTEXT", "kind-kind"),
                ("ATE_KUBE_CONTEXT", "env"),
            ],
        )
        .unwrap();
        assert_eq!(kind(&o).context.as_deref(), Some("mine"));
    }

    #[test]
    fn kind_options() {
        let (o, _) = run(&["--backend", "kind"], &[]).unwrap();
        assert_eq!(kind(&o).cluster, "kind");
        assert!(!kind(&o).create_cluster && !o.backend.dry_run());
        assert_eq!(o.golden_timeout, std::time::Duration::from_secs(300));
        assert_eq!(kind(&o).bucket_name, None);
        let (o, _) = run(
            &[
                "--backend",
                "kind",
                "--dry-run",
                "--cluster",
                "ci-1",
                "--create-cluster",
                "--golden-timeout",
                "90",
            ],
            &[
                ("BUCKET_NAME", "ate-snapshots"),
                ("KO_DOCKER_REPO", "localhost:5001"),
            ],
        )
        .unwrap();
        assert!(o.backend.dry_run() && kind(&o).create_cluster);
        assert_eq!(kind(&o).cluster, "ci-1");
        assert_eq!(o.golden_timeout, std::time::Duration::from_secs(90));
        assert_eq!(kind(&o).bucket_name.as_deref(), Some("ate-snapshots"));
        assert_eq!(kind(&o).ko_docker_repo.as_deref(), Some("localhost:5001"));
        // An empty variable is missing, as upstream treats it.
        let (o, _) = run(&["--backend", "kind"], &[("BUCKET_NAME", "")]).unwrap();
        assert_eq!(kind(&o).bucket_name, None);
        let (o, _) = run(&[], &[]).unwrap();
        assert_eq!(o.golden_timeout, std::time::Duration::from_secs(60));
    }

    #[test]
    fn bad_kind_values_are_named() {
        let e = run(&["--backend", "kind", "--cluster", "Kind_1"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"Kind_1\"") && e.contains("a-z, 0-9 and -"),
            "{e}"
        );
        let e = run(&["--golden-timeout", "0"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"0\"") && e.contains("1 to 3600"), "{e}");
        let e = run(&["--golden-timeout", "5m"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"5m\""), "{e}");
        let e = run(&["--dry-run"], &[]).unwrap_err().to_string();
        assert!(e.contains("--dry-run is for the kind backend"), "{e}");
    }

    #[test]
    fn waivers_from_flags_and_a_file_name_the_statement_and_need_a_reason() {
        let (o, _) = run(
            &["--waive", "ID-9=no host access", "--waive=ID-8=\"no host\""],
            &[],
        )
        .unwrap();
        assert_eq!(
            o.waivers.get("ID-9").map(String::as_str),
            Some("no host access")
        );
        assert_eq!(o.waivers.get("ID-8").map(String::as_str), Some("no host"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.txt");
        std::fs::write(&f, "# comment\n\nID-13: cannot plant a symlink\n").unwrap();
        let (o, _) = run(&["--waivers", f.to_str().unwrap()], &[]).unwrap();
        assert_eq!(o.waivers.len(), 1);
        assert_eq!(o.waivers["ID-13"], "cannot plant a symlink");
        let e = run(&["--waive", "ID-99=x"], &[]).unwrap_err().to_string();
        assert!(
            e.contains("\"ID-99\"") && e.contains("ID-1 to ID-15"),
            "{e}"
        );
        let e = run(&["--waive", "ID-9="], &[]).unwrap_err().to_string();
        assert!(e.contains("ID-9 has no reason"), "{e}");
        let e = run(&["--waive", "ID-9"], &[]).unwrap_err().to_string();
        assert!(e.contains("invalid --waive \"ID-9\""), "{e}");
        std::fs::write(&f, "ID-9 no colon\n").unwrap();
        let e = run(&["--waivers", f.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.txt:1") && e.contains("ID-n: reason"), "{e}");
    }

    #[test]
    fn each_backend_owns_its_flag_group() {
        // A flag of the group of a backend that is not selected is named.
        let e = run(&["--cluster", "x"], &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "--cluster is for the kind backend (use --backend kind); the selected backend is local"
        );
        let e = run(&["--backend", "kind", "--runsc", "/r"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--runsc is for the local backend"), "{e}");
        // Another group's variables may be set for other reasons: ignored.
        let (o, _) = run(&[], &[("KUBECONFIG", "/k"), ("ATE_DRY_RUN", "1")]).unwrap();
        assert!(!o.backend.dry_run());
        // Every group's flags are in the usage.
        let u = usage();
        for f in ["--runsc", "--cluster", "--dry-run", "--backend"] {
            assert!(u.contains(f), "{u}");
        }
    }

    #[test]
    fn fail_on_skip_defaults_to_ci() {
        assert!(!run(&[], &[]).unwrap().0.fail_on_skip);
        assert!(run(&[], &[("CI", "true")]).unwrap().0.fail_on_skip);
        assert!(
            !run(&["--no-fail-on-skip"], &[("CI", "true")])
                .unwrap()
                .0
                .fail_on_skip
        );
        assert!(run(&["--fail-on-skip"], &[]).unwrap().0.fail_on_skip);
        assert!(
            !run(&[], &[("CI", "true"), ("ATE_FAIL_ON_SKIP", "0")])
                .unwrap()
                .0
                .fail_on_skip
        );
    }

    #[test]
    fn unknown_options_are_named_with_the_valid_ones() {
        let e = run(&["--bakend", "local"], &[]).unwrap_err().to_string();
        assert!(e.contains("unknown option \"--bakend\""), "{e}");
        assert!(
            e.contains("--backend") && e.contains("--report-dir") && e.contains("--keep"),
            "{e}"
        );
        assert!(e.contains("--exact") && e.contains("--list"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = run(&["--backend", "kubernetes"], &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown backend \"kubernetes\": valid backends are: local, kind, node"
        );
        let e = run(&["--backend", "node", "--node-workers", "0"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--node-workers") && e.contains("\"0\"") && e.contains("1 to 254"),
            "{e}"
        );
        let e = run(&["--atelet-bin", "/x"], &[]).unwrap_err().to_string();
        assert!(e.contains("--atelet-bin is for the node backend"), "{e}");
        let e = run(&["--run-id", "Bad_ID"], &[]).unwrap_err().to_string();
        assert!(e.contains("\"Bad_ID\""), "{e}");
        let e = run(&["--report-dir"], &[]).unwrap_err().to_string();
        assert!(e.contains("--report-dir needs a value"), "{e}");
        let e = run(&[], &[("ATE_KEEP", "maybe")]).unwrap_err().to_string();
        assert!(e.contains("\"maybe\""), "{e}");
    }
}
