//! The harness's own options: the same as flags after `--` or as
//! environment variables (a flag wins). They are taken out of the command
//! line before libtest-mimic parses the rest, so its flags (`--list`,
//! filters, `--exact`, `--skip`, `--ignored`, `--include-ignored`,
//! `--test-threads`, `--nocapture`, ...) keep working.

use std::path::PathBuf;

/// One option of ours.
struct Spec {
    flag: &'static str,
    env: &'static str,
    value: Option<&'static str>,
    help: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        flag: "--backend",
        env: "ATE_BACKEND",
        value: Some("NAME"),
        help: "system under test: local",
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
        flag: "--probe-bin",
        env: "ATE_PROBE_BIN",
        value: Some("PATH"),
        help: "a static probe binary to use instead of ours",
    },
    Spec {
        flag: "--runsc",
        env: "ATE_RUNSC",
        value: Some("PATH"),
        help: "the runsc program (local backend)",
    },
    Spec {
        flag: "--agent-fault",
        env: "ATE_AGENT_FAULT",
        value: Some("NAME"),
        help: "run the reference agent in a fault mode (self-test)",
    },
    Spec {
        flag: "--kubeconfig",
        env: "KUBECONFIG",
        value: Some("PATH"),
        help: "kubeconfig (kind backend)",
    },
    Spec {
        flag: "--context",
        env: "ATE_KUBE_CONTEXT",
        value: Some("NAME"),
        help: "kube context (kind backend; KUBECTL_CONTEXT also works)",
    },
    Spec {
        flag: "--substrate-root",
        env: "ATE_SUBSTRATE_ROOT",
        value: Some("DIR"),
        help: "Agent Substrate checkout (kind backend; ko apply runs there)",
    },
    Spec {
        flag: "--cluster",
        env: "ATE_KIND_CLUSTER",
        value: Some("NAME"),
        help: "kind cluster name (kind backend; default kind)",
    },
    Spec {
        flag: "--create-cluster",
        env: "ATE_CREATE_CLUSTER",
        value: None,
        help: "create the kind cluster and its registry if missing (deleted again at the end)",
    },
    Spec {
        flag: "--bucket-name",
        env: "BUCKET_NAME",
        value: Some("NAME"),
        help: "snapshot bucket (kind backend)",
    },
    Spec {
        flag: "--ko-docker-repo",
        env: "KO_DOCKER_REPO",
        value: Some("REPO"),
        help: "registry for the probe image and ko builds (kind backend)",
    },
    Spec {
        flag: "--golden-timeout",
        env: "ATE_GOLDEN_TIMEOUT",
        value: Some("SECS"),
        help: "how long to wait for the golden snapshot (default 60 local, 300 kind)",
    },
    Spec {
        flag: "--dry-run",
        env: "ATE_DRY_RUN",
        value: None,
        help: "print every command and API call the kind backend would make; start nothing",
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

/// Backends this build can drive.
pub const BACKENDS: &[&str] = &["local", "kind"];

/// The harness's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// System under test.
    pub backend: String,
    /// Report directory.
    pub report_dir: PathBuf,
    /// This run's ID.
    pub run_id: String,
    /// Keep a failed trial's resources.
    pub keep: bool,
    /// A skipped trial fails the run.
    pub fail_on_skip: bool,
    /// Another probe binary.
    pub probe_bin: Option<PathBuf>,
    /// The runsc program.
    pub runsc: PathBuf,
    /// A fault mode for the reference agent (self-test only).
    pub agent_fault: Option<String>,
    /// Kubeconfig (kind).
    pub kubeconfig: Option<PathBuf>,
    /// Kube context (kind).
    pub context: Option<String>,
    /// Agent Substrate checkout (kind).
    pub substrate_root: Option<PathBuf>,
    /// kind cluster name (kind).
    pub cluster: String,
    /// Create the cluster when it is missing (kind).
    pub create_cluster: bool,
    /// Snapshot bucket (kind; `BUCKET_NAME`).
    pub bucket_name: Option<String>,
    /// Registry for the probe image and ko (kind; `KO_DOCKER_REPO`).
    pub ko_docker_repo: Option<String>,
    /// Golden snapshot deadline.
    pub golden_timeout: std::time::Duration,
    /// Print the plan, run nothing.
    pub dry_run: bool,
}

/// Usage lines for our options.
pub fn usage() -> String {
    let mut s =
        String::from("ate-conformance options (after `--`, or as environment variables):\n");
    for o in SPECS {
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

fn parse_bool(name: &str, v: &str) -> anyhow::Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => anyhow::bail!("invalid value {v:?} for {name}: use 1/true/yes/on or 0/false/no/off"),
    }
}

/// A short random run ID (lowercase hex).
pub fn new_run_id() -> String {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).expect("getrandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Splits our options from libtest-mimic's arguments (program name first),
/// reading environment variables through `env`. Returns our options and
/// the arguments for libtest-mimic.
pub fn parse(
    args: Vec<String>,
    env: impl Fn(&str) -> Option<String>,
    default_report_dir: PathBuf,
) -> anyhow::Result<(Options, Vec<String>)> {
    let mut rest = Vec::new();
    let mut given: std::collections::BTreeMap<&'static str, String> = Default::default();
    let mut it = args.into_iter();
    rest.extend(it.next());
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        if let Some(spec) = SPECS.iter().find(|s| s.flag == name) {
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
            given.insert(spec.flag, v);
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
                    let ours: Vec<&str> = SPECS.iter().map(|s| s.flag).collect();
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
    let get = |flag: &str| -> Option<String> {
        let spec = SPECS.iter().find(|s| s.flag == flag).expect("known flag");
        given.get(flag).cloned().or_else(|| {
            (!spec.env.is_empty())
                .then(|| env(spec.env))
                .flatten()
                .filter(|v| !v.is_empty())
        })
    };
    let backend = get("--backend").unwrap_or_else(|| "local".into());
    if !BACKENDS.contains(&backend.as_str()) {
        anyhow::bail!(
            "unknown backend {backend:?}: valid backends are: {}",
            BACKENDS.join(", ")
        );
    }
    let run_id = get("--run-id").unwrap_or_else(new_run_id);
    if run_id.is_empty()
        || run_id.len() > 16
        || !run_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        anyhow::bail!("invalid run id {run_id:?}: use 1 to 16 lowercase letters or digits");
    }
    let keep = match get("--keep") {
        Some(v) => parse_bool("--keep/ATE_KEEP", &v)?,
        None => false,
    };
    let ci = match env("CI") {
        Some(v) => parse_bool("CI", &v).unwrap_or(true),
        None => false,
    };
    let fail_on_skip = if given.contains_key("--no-fail-on-skip") {
        if given.contains_key("--fail-on-skip") {
            anyhow::bail!("--fail-on-skip and --no-fail-on-skip contradict each other");
        }
        false
    } else {
        match get("--fail-on-skip") {
            Some(v) => parse_bool("--fail-on-skip/ATE_FAIL_ON_SKIP", &v)?,
            None => ci,
        }
    };
    let context = get("--context").or_else(|| env("KUBECTL_CONTEXT").filter(|v| !v.is_empty()));
    let flag = |f: &str, name: &str| -> anyhow::Result<bool> {
        get(f)
            .map(|v| parse_bool(name, &v))
            .transpose()
            .map(|b| b.unwrap_or(false))
    };
    let create_cluster = flag("--create-cluster", "--create-cluster/ATE_CREATE_CLUSTER")?;
    let dry_run = flag("--dry-run", "--dry-run/ATE_DRY_RUN")?;
    let cluster = get("--cluster").unwrap_or_else(|| "kind".into());
    if !valid_cluster_name(&cluster) {
        anyhow::bail!(
            "invalid kind cluster name {cluster:?}: use 1 to 50 of a-z, 0-9 and -, starting and ending with a letter or digit"
        );
    }
    let golden_timeout = match get("--golden-timeout") {
        Some(v) => match v.parse::<u64>() {
            Ok(s) if (1..=3600).contains(&s) => std::time::Duration::from_secs(s),
            _ => anyhow::bail!(
                "invalid --golden-timeout/ATE_GOLDEN_TIMEOUT {v:?}: use whole seconds from 1 to 3600"
            ),
        },
        None if backend == "kind" => std::time::Duration::from_secs(300),
        None => std::time::Duration::from_secs(60),
    };
    if dry_run && backend != "kind" {
        anyhow::bail!("--dry-run is for the kind backend (use --backend kind); the local backend has no plan to print");
    }
    Ok((
        Options {
            backend,
            report_dir: get("--report-dir")
                .map(PathBuf::from)
                .unwrap_or(default_report_dir),
            run_id,
            keep,
            fail_on_skip,
            probe_bin: get("--probe-bin").map(PathBuf::from),
            runsc: get("--runsc")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("runsc")),
            agent_fault: get("--agent-fault"),
            kubeconfig: get("--kubeconfig").map(PathBuf::from),
            context,
            substrate_root: get("--substrate-root").map(PathBuf::from),
            cluster,
            create_cluster,
            bucket_name: get("--bucket-name"),
            ko_docker_repo: get("--ko-docker-repo"),
            golden_timeout,
            dry_run,
        },
        rest,
    ))
}

/// A kind cluster name: a DNS label of at most 50 characters (kind adds
/// suffixes to it for node names).
fn valid_cluster_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 50
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        assert_eq!(o.backend, "local");
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
        assert_eq!(o.run_id, "abc123");
        let (o, _) = run(
            &["--report-dir", "/flag", "--run-id", "ff"],
            &[("ATE_REPORT_DIR", "/from-env"), ("ATE_RUN_ID", "abc")],
        )
        .unwrap();
        assert_eq!(o.report_dir, PathBuf::from("/flag"));
        assert_eq!(o.run_id, "ff");
        let (o, _) = run(&[], &[]).unwrap();
        assert_eq!(o.report_dir, PathBuf::from("/default/report"));
        assert!(!o.keep);
        assert_eq!(o.runsc, PathBuf::from("runsc"));
    }

    #[test]
    fn agent_fault_option() {
        assert_eq!(run(&[], &[]).unwrap().0.agent_fault, None);
        assert_eq!(
            run(&["--agent-fault", "torn-write"], &[])
                .unwrap()
                .0
                .agent_fault
                .as_deref(),
            Some("torn-write")
        );
        assert_eq!(
            run(&[], &[("ATE_AGENT_FAULT", "file-mount")])
                .unwrap()
                .0
                .agent_fault
                .as_deref(),
            Some("file-mount")
        );
    }

    #[test]
    fn kube_options() {
        let (o, _) = run(
            &["--kubeconfig", "/k", "--substrate-root", "/s"],
            &[("KUBECTL_CONTEXT", "kind-kind")],
        )
        .unwrap();
        assert_eq!(o.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(o.context.as_deref(), Some("kind-kind"));
        assert_eq!(o.substrate_root, Some(PathBuf::from("/s")));
        let (o, _) = run(
            &["--context", "mine"],
            &[
                ("KUBECTL_CONTEXT", "kind-kind"),
                ("ATE_KUBE_CONTEXT", "env"),
            ],
        )
        .unwrap();
        assert_eq!(o.context.as_deref(), Some("mine"));
    }

    #[test]
    fn kind_options() {
        let (o, _) = run(&["--backend", "kind"], &[]).unwrap();
        assert_eq!(o.cluster, "kind");
        assert!(!o.create_cluster && !o.dry_run);
        assert_eq!(o.golden_timeout, std::time::Duration::from_secs(300));
        assert_eq!(o.bucket_name, None);
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
        assert!(o.dry_run && o.create_cluster);
        assert_eq!(o.cluster, "ci-1");
        assert_eq!(o.golden_timeout, std::time::Duration::from_secs(90));
        assert_eq!(o.bucket_name.as_deref(), Some("ate-snapshots"));
        assert_eq!(o.ko_docker_repo.as_deref(), Some("localhost:5001"));
        // An empty variable is missing, as upstream treats it.
        let (o, _) = run(&["--backend", "kind"], &[("BUCKET_NAME", "")]).unwrap();
        assert_eq!(o.bucket_name, None);
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
            "unknown backend \"kubernetes\": valid backends are: local, kind"
        );
        let e = run(&["--run-id", "Bad_ID"], &[]).unwrap_err().to_string();
        assert!(e.contains("\"Bad_ID\""), "{e}");
        let e = run(&["--report-dir"], &[]).unwrap_err().to_string();
        assert!(e.contains("--report-dir needs a value"), "{e}");
        let e = run(&[], &[("ATE_KEEP", "maybe")]).unwrap_err().to_string();
        assert!(e.contains("\"maybe\""), "{e}");
    }
}
