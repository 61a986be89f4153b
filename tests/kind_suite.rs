//! The identity suite binary with `--backend kind`, as a user runs it.
//!
//! `--dry-run` prints the kind backend's whole ordered plan (command
//! vectors with their environment and working directory, API calls,
//! registry requests) and starts nothing. "Nothing" is checked from
//! outside: the tools' search path is an empty directory (a spawned tool
//! would fail), the kubeconfig points at a listener of this test's that
//! counts connections (none may arrive), and no report is written.
//!
//! Without a reachable cluster every trial fails with the reason, in the
//! console and in the reports; none passes or is skipped.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::identity_bin;

#[test]
fn dry_run_prints_the_ordered_plan_and_starts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let empty_path = tmp.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    let report = tmp.path().join("report");

    // An API server stand-in that only counts who connects.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let counter = std::thread::spawn(move || {
        while !stopping.load(Ordering::SeqCst) {
            if let Ok((mut s, _)) = listener.accept() {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                let _ = s.read(&mut [0u8; 64]);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{api}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: kind-ci\n  context:\n    cluster: c\n    user: u\ncurrent-context: kind-ci\n"
        ),
    )
    .unwrap();
    let substrate = tmp.path().join("substrate");

    let out = Command::new(identity_bin())
        .args([
            "--backend",
            "kind",
            "--dry-run",
            "--run-id",
            "dry1",
            "--cluster",
            "ci",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .arg("--substrate-root")
        .arg(&substrate)
        .arg("--report-dir")
        .arg(&report)
        .env("PATH", &empty_path)
        .env("BUCKET_NAME", "ate-snapshots")
        .env("KO_DOCKER_REPO", "localhost:5001")
        .env_remove("ATE_BACKEND")
        .env_remove("ATE_KUBE_CONTEXT")
        .env_remove("KUBECTL_CONTEXT")
        .output()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    counter.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    // Started nothing.
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the dry run called the API"
    );
    assert!(!report.exists(), "the dry run wrote a report");
    assert!(
        stdout.contains("nothing below was run, no API was called"),
        "{stdout}"
    );

    // The whole plan, in order: each of these appears after the previous.
    let rendered = report.join("kind/probe-dry1.yaml");
    let kc = format!("--kubeconfig={}", kubeconfig.display());
    let ate = |words: &str| {
        let mut v: Vec<String> = std::iter::once("kubectl".to_string())
            .chain(std::iter::once("ate".to_string()))
            .chain(words.split(' ').map(String::from))
            .collect();
        v.push("--context=kind-ci".into());
        v.push(kc.clone());
        argv(&v)
    };
    let expected = [
        argv(&["kind", "get", "clusters"]),
        argv(&["ko", "version"]),
        argv(&["kubectl", "version", "--client", "-o", "json"]),
        "GET /api/v1/namespaces?limit=1".to_string(),
        "GET /apis/apps/v1/namespaces/ate-system/deployments/ate-controller".into(),
        "GET /apis/apps/v1/namespaces/ate-system/daemonsets/atelet".into(),
        "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/workerpools.ate.dev".into(),
        "GET /api/v1/namespaces/ate-system/services/atenet-router".into(),
        "WS /api/v1/namespaces/ate-system/pods/<ready pod>/portforward".into(),
        "PUT http://localhost:5001/v2/ate-conformance-probe/manifests/conf-dry1".into(),
        argv(&[
            "ko",
            "apply",
            "-f",
            &rendered.display().to_string(),
            "--",
            "--context=kind-ci",
            &kc,
        ]),
        format!("env:  KO_CONFIG_PATH={}", substrate.display()),
        format!("cwd:  {}", substrate.display()),
        "GET /apis/ate.dev/v1alpha1/namespaces/ate-conf-dry1/actortemplates/probe".into(),
        ate("create atespace conf-dry1"),
        ate("create actor <actor>-dry1 --template ate-conf-dry1/probe -a conf-dry1"),
        ate("resume actor <actor>-dry1 -a conf-dry1"),
        "Host: <actor>-dry1.conf-dry1.actors.resources.substrate.ate.dev".into(),
        ate("suspend actor <actor>-dry1 -a conf-dry1"),
        ate("delete actor <actor>-dry1 -a conf-dry1"),
        ate("delete atespace conf-dry1"),
        argv(&[
            "kubectl",
            "--context=kind-ci",
            &kc,
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "-f",
            &rendered.display().to_string(),
        ]),
    ];
    let mut at = 0;
    for want in &expected {
        match stdout[at..].find(want.as_str()) {
            Some(i) => at += i + want.len(),
            None => panic!("{want:?} is missing or out of order in the plan:\n{stdout}"),
        }
    }
    // The cluster named by --cluster is only looked up, never created or
    // deleted, and no shell appears anywhere.
    assert!(!stdout.contains("\"create\", \"cluster\""), "{stdout}");
    assert!(!stdout.contains("\"delete\", \"cluster\""), "{stdout}");
    for shell in ["\"sh\"", "\"bash\"", "\"-c\""] {
        assert!(!stdout.contains(shell), "{shell} in the plan:\n{stdout}");
    }
    // Every trial is listed with the statements it covers.
    assert!(
        stdout.contains("gate::own_identity_after_restore [ID-1, ID-3, ID-4, ID-5]"),
        "{stdout}"
    );
}

#[test]
fn dry_run_with_create_cluster_plans_creation_and_deletion() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(identity_bin())
        .args([
            "--backend",
            "kind",
            "--dry-run",
            "--create-cluster",
            "--run-id",
            "dry2",
        ])
        .arg("--report-dir")
        .arg(tmp.path().join("report"))
        .env("PATH", tmp.path())
        .env_remove("KUBECONFIG")
        .env_remove("BUCKET_NAME")
        .env_remove("KO_DOCKER_REPO")
        .env_remove("ATE_SUBSTRATE_ROOT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let create = stdout
        .find("\"kind\", \"create\", \"cluster\", \"--name\", \"kind\"")
        .expect(&stdout);
    let delete = stdout
        .find("\"kind\", \"delete\", \"cluster\", \"--name\", \"kind\"")
        .expect(&stdout);
    assert!(create < delete);
    // Upstream's registry, label and loopback ports
    // (hack/create-kind-cluster.sh:36-42), proxy ARP (:97).
    assert!(stdout.contains("\"registry:3\""), "{stdout}");
    assert!(
        stdout.contains("\"created-by=agent-substrate\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"[::1]:5001:5000\""), "{stdout}");
    assert!(
        stdout.contains("\"net.ipv4.conf.all.proxy_arp=1\""),
        "{stdout}"
    );
    // Missing settings are shown, not hidden.
    assert!(stdout.contains("FAIL BUCKET_NAME: not set"), "{stdout}");
    assert!(
        stdout.contains("FAIL ATE_SUBSTRATE_ROOT: not set"),
        "{stdout}"
    );
}

#[test]
fn dry_run_is_refused_for_the_local_backend() {
    let out = Command::new(identity_bin())
        .args(["--backend", "local", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--dry-run is for the kind backend"),
        "{stderr}"
    );
}

/// A command's argv as the plan prints it.
fn argv<S: AsRef<str>>(words: &[S]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("{:?}", w.as_ref())).collect();
    format!("argv: [{}]", quoted.join(", "))
}

#[test]
fn an_unreachable_cluster_fails_every_trial_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let out = Command::new(identity_bin())
        .args(["--backend", "kind", "--run-id", "nokind1"])
        .arg("--report-dir")
        .arg(&report)
        // No kind, ko or kubectl anywhere.
        .env("PATH", tmp.path())
        .env_remove("CI")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The four host trials are skipped on kind (no host access), the
    // rest fail with the set-up error.
    assert!(
        stderr.contains("identity: 0 passed, 7 failed, 4 skipped"),
        "{stderr}"
    );
    let suite: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("suites/identity.json")).unwrap())
            .unwrap();
    let trials = suite["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 11);
    for t in trials {
        let msg = t["message"].as_str().unwrap();
        if t["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("host::") || n.starts_with("rootfs::"))
        {
            assert_ne!(t["verdict"], "pass", "{t}");
            assert!(msg.contains("cannot see the host"), "{t}");
            continue;
        }
        assert_eq!(t["verdict"], "fail", "{t}");
        assert!(msg.contains("backend kind could not be set up"), "{msg}");
        assert!(msg.contains("is there a kind cluster named kind?"), "{msg}");
        assert!(msg.contains("command not found: `kind`"), "{msg}");
    }
    assert!(report.join("report.md").exists());
    assert_eq!(suite["backend"], "kind");
}

#[test]
fn dry_run_with_deploy_agent_and_install_prints_the_pipeline_and_the_digest_check() {
    let tmp = tempfile::tempdir().unwrap();
    let substrate = tmp.path().join("substrate");
    let out = Command::new(identity_bin())
        .args([
            "--backend",
            "kind",
            "--dry-run",
            "--install",
            "--deploy-agent",
            "--run-id",
            "dry3",
        ])
        .arg("--substrate-root")
        .arg(&substrate)
        .arg("--report-dir")
        .arg(tmp.path().join("report"))
        .env("PATH", tmp.path())
        .env("KO_DOCKER_REPO", "localhost:5001")
        .env("BUCKET_NAME", "ate-snapshots")
        .env_remove("KUBECONFIG")
        .env_remove("ATE_KUBE_CONTEXT")
        .env_remove("KUBECTL_CONTEXT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = substrate.display().to_string();
    let install = format!("{root}/hack/install-ate-kind.sh");
    // In order: install, the three stages, the rollout, the digest check,
    // then the preflight; each stage with its environment and directory.
    let wanted = [
        argv(&[install.as_str(), "--deploy-ate-system"]),
        "env:  KUBECTL_CONTEXT=kind-kind".to_string(),
        "stage 1 of 3".into(),
        argv(&[
            "kubectl",
            "kustomize",
            "manifests/ate-install/kind/atelet",
            "--load-restrictor",
            "LoadRestrictionsNone",
        ]),
        format!("cwd:  {root}"),
        "stage 2 of 3".into(),
        argv(&["ko", "resolve", "-f", "-"]),
        format!("env:  KO_CONFIG_PATH={root}"),
        "env:  KO_DOCKER_REPO=localhost:5001".into(),
        "env:  KO_DEFAULTPLATFORMS=linux/".into(),
        format!("cwd:  {root}"),
        "stage 3 of 3".into(),
        argv(&["kubectl", "--context=kind-kind", "apply", "-f", "-"]),
        argv(&[
            "kubectl",
            "--context=kind-kind",
            "rollout",
            "status",
            "daemonset/atelet",
            "-n",
            "ate-system",
            "--timeout=120s",
        ]),
        argv(&[
            "kubectl",
            "--context=kind-kind",
            "get",
            "pods",
            "-n",
            "ate-system",
            "-l",
            "app=atelet",
            "-o",
            "json",
        ]),
        argv(&["kind", "version"]),
    ];
    let mut at = 0;
    for w in &wanted {
        let found = stdout[at..]
            .find(w.as_str())
            .unwrap_or_else(|| panic!("no {w:?} after byte {at} in:\n{stdout}"));
        at += found + w.len();
    }
    // No shell anywhere in the plan.
    for sh in ["\"sh\"", "\"bash\"", "\"-c\""] {
        assert!(!stdout.contains(sh), "{sh} in {stdout}");
    }
}

/// Under CI=true only an unwaived skip fails the run: the nightly kind
/// job's declared waivers (ci/waivers/kind.txt) turn the four host trials'
/// skips into *waived* with the reason, in report.json and report.md.
#[test]
fn declared_waivers_turn_kind_host_skips_into_waived() {
    let waivers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/waivers/kind.txt");
    let run = |with_waivers: bool| {
        let tmp = tempfile::tempdir().unwrap();
        let report = tmp.path().join("report");
        let mut c = Command::new(identity_bin());
        c.args(["--backend", "kind", "--run-id", "waive1"])
            .arg("--report-dir")
            .arg(&report)
            .env("PATH", tmp.path())
            .env("CI", "true");
        if with_waivers {
            c.arg("--waivers").arg(&waivers);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(report.join("suites/identity.json")).unwrap())
                .unwrap();
        let md = std::fs::read_to_string(report.join("report.md")).unwrap();
        let merged: serde_json::Value =
            serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
        (stderr, json, md, merged)
    };
    let (stderr, _, md, merged) = run(false);
    // Without waivers the host-only statements are plain skips.
    assert_eq!(
        merged["contract"][8]["verdict"], "skip",
        "{:#}",
        merged["contract"][8]
    );
    assert!(
        md.lines()
            .any(|l| l.starts_with("| ID-9 |") && l.contains("| *skipped* |")),
        "{md}"
    );
    assert!(
        stderr.contains("4 trial(s) skipped without a waiver"),
        "{stderr}"
    );
    let (stderr, json, md, merged) = run(true);
    assert!(!stderr.contains("skipped without a waiver"), "{stderr}");
    let trials = json["trials"].as_array().unwrap();
    let waived: Vec<&serde_json::Value> = trials
        .iter()
        .filter(|t| t.get("waived").is_some())
        .collect();
    assert_eq!(waived.len(), 4, "{trials:#?}");
    for t in waived {
        assert_eq!(t["verdict"], "skip");
        assert!(
            t["waived"]
                .as_str()
                .unwrap()
                .contains("no host access into kind nodes"),
            "{t}"
        );
    }
    assert!(
        md.contains("*waived* (ID-9: the kind backend cannot watch"),
        "{md}"
    );
    // The statements only those trials cover are *waived* in the
    // per-statement table and in report.json, with the reason; not skips.
    for (i, id) in [(7, "ID-8"), (8, "ID-9"), (12, "ID-13")] {
        let row = &merged["contract"][i];
        assert_eq!(row["id"], id);
        assert_eq!(row["verdict"], "waived", "{row:#}");
        let reasons: Vec<&str> = row["waivers"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            reasons.len() == 1 && reasons[0].starts_with(&format!("{id}: ")),
            "{row:#}"
        );
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {id} |")))
            .unwrap_or_else(|| panic!("no {id} row in:\n{md}"));
        assert!(line.contains(&format!("| *waived* ({id}: ")), "{line}");
        assert!(!line.contains("*skip"), "{line}");
    }
}
