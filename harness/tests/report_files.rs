//! The report directory: `suites/*.json`, `report.json`, `junit.xml` and
//! `report.md`, written for real into temp dirs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ate_harness::backend::Golden;
use ate_harness::report::{
    self, ContractVerdict, PhaseTime, RunReport, RunVerdict, SuiteReport, TrialRecord, Verdict,
};

/// A failure message that needs escaping in XML: markup characters, an
/// ANSI colour and a NUL, and a cause chain.
const NASTY: &str = "actor probe-alpha read the golden ID: got \"<golden & co>\" \
                     \x1b[31mred\x1b[0m nul\0here\ncaused by:\n    \
                     read /run/ate/actor-id: 'no such file' <&>";

fn trial(suite: &str, name: &str, covers: &[&str], verdict: Verdict) -> TrialRecord {
    TrialRecord {
        suite: suite.into(),
        name: name.into(),
        covers: covers.iter().map(|c| c.to_string()).collect(),
        verdict,
        duration_ms: 12.5,
        message: match verdict {
            Verdict::Pass => None,
            Verdict::Fail => Some(NASTY.into()),
            Verdict::Skip => Some("no runsc on PATH".into()),
        },
        log: format!("phase create actor\nnote \x1b[1mbold\x1b[0m for {name}\n"),
        phases: vec![PhaseTime {
            name: "create actor".into(),
            ms: 3.25,
        }],
        artifacts: if verdict == Verdict::Fail {
            vec![format!("artifacts/{suite}/{name}/agent.log")]
        } else {
            vec![]
        },
        violated: vec![],
        setup_failed: false,
        waived: None,
    }
}

fn suite(name: &str, trials: Vec<TrialRecord>) -> SuiteReport {
    SuiteReport {
        suite: name.into(),
        run_id: "run-1234".into(),
        backend: "local".into(),
        started_unix_ms: 1_780_000_000_000,
        ended_unix_ms: 1_780_000_004_000,
        wall_ms: 4000,
        fingerprint: BTreeMap::from([
            ("harness_version".to_owned(), "0.1.0".to_owned()),
            (
                "runsc".to_owned(),
                "runsc version release-20260101.0".to_owned(),
            ),
            ("golden_actor_id".to_owned(), "6f1c0de2-golden".to_owned()),
        ]),
        golden: Some(Golden {
            template: "probe-run-1234".into(),
            golden_actor_id: "6f1c0de2-golden".into(),
            snapshot: Some("/var/lib/ate/snap/1".into()),
            ready_after: Duration::from_millis(1500),
        }),
        teardown_error: None,
        interrupted: None,
        kept: vec![],
        filtered_out: 0,
        fail_on_skip: false,
        trials,
    }
}

fn identity() -> SuiteReport {
    suite(
        "identity",
        vec![
            trial("identity", "gate::own", &["ID-3", "ID-4"], Verdict::Pass),
            trial("identity", "mount::read_only", &["ID-6"], Verdict::Fail),
            trial("identity", "pause::no_mount", &["ID-12"], Verdict::Skip),
            trial("identity", "file::format", &["ID-1", "ID-2"], Verdict::Pass),
        ],
    )
}

fn attr<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
    n.attribute(name)
        .unwrap_or_else(|| panic!("<{}> has no attribute {name}", n.tag_name().name()))
}

fn num(n: roxmltree::Node<'_, '_>, name: &str) -> usize {
    attr(n, name).parse().expect("a count")
}

fn elems<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &'a str) -> Vec<roxmltree::Node<'a, 'i>> {
    n.children()
        .filter(|c| c.is_element() && c.tag_name().name() == tag)
        .collect()
}

#[test]
fn junit_parses_and_has_the_common_schema_shape() {
    let dir = tempfile::tempdir().unwrap();
    let w = report::write_suite(dir.path(), &identity()).unwrap();
    let raw = std::fs::read(&w.junit).unwrap();
    assert!(!raw.contains(&0), "junit.xml contains a NUL");
    assert!(!raw.contains(&0x1b), "junit.xml contains an ESC");
    let text = String::from_utf8(raw).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("junit.xml is well-formed XML");

    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(attr(root, "name"), "ate-conformance");
    for a in ["tests", "failures", "errors", "skipped", "time"] {
        attr(root, a);
    }
    let suites = elems(root, "testsuite");
    assert_eq!(suites.len(), 1);
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    for ts in &suites {
        assert_eq!(attr(*ts, "name"), "identity");
        assert_eq!(num(*ts, "errors"), 0);
        let t: f64 = attr(*ts, "time").parse().unwrap();
        assert!((t - 4.0).abs() < 1e-6, "suite time {t}");
        assert!(attr(*ts, "timestamp").starts_with("2026-"));

        let props: BTreeMap<_, _> = elems(elems(*ts, "properties")[0], "property")
            .into_iter()
            .map(|p| (attr(p, "name"), attr(p, "value")))
            .collect();
        assert_eq!(props["run_id"], "run-1234");
        assert_eq!(props["backend"], "local");
        assert_eq!(props["runsc"], "runsc version release-20260101.0");
        assert_eq!(props["golden_actor_id"], "6f1c0de2-golden");

        let cases = elems(*ts, "testcase");
        let (mut f, mut s) = (0, 0);
        for tc in &cases {
            attr(*tc, "name");
            assert_eq!(attr(*tc, "classname"), "identity");
            let secs: f64 = attr(*tc, "time").parse().unwrap();
            assert!((secs - 0.0125).abs() < 1e-3, "trial time {secs}");
            let out = elems(*tc, "system-out");
            assert_eq!(out.len(), 1, "system-out of {}", attr(*tc, "name"));
            let out = out[0].text().unwrap_or("");
            assert!(out.contains("phase create actor"), "{out}");
            assert!(out.contains("note bold for"), "ANSI not stripped: {out:?}");
            for fail in elems(*tc, "failure") {
                f += 1;
                assert_eq!(attr(fail, "type"), "assertion");
                let msg = attr(fail, "message");
                assert!(msg.starts_with("actor probe-alpha read the golden ID"));
                assert!(msg.contains("\"<golden & co>\""), "{msg}");
                assert!(!msg.contains("caused by"), "message is the first line only");
                let body = fail.text().unwrap();
                assert!(body.contains("\"<golden & co>\""), "{body}");
                assert!(body.contains("co>\" red nul"), "ANSI stripped: {body:?}");
                assert!(body.contains("nul\u{fffd}here"), "NUL replaced: {body:?}");
                assert!(body.lines().any(|l| l.starts_with("caused by:")), "{body}");
                assert!(body.contains("'no such file' <&>"));
                assert!(out.contains("artifacts/identity/mount::read_only/agent.log"));
            }
            for sk in elems(*tc, "skipped") {
                s += 1;
                assert_eq!(attr(sk, "message"), "no runsc on PATH");
            }
        }
        assert_eq!(num(*ts, "tests"), cases.len());
        assert_eq!(num(*ts, "failures"), f);
        assert_eq!(num(*ts, "skipped"), s);
        assert_eq!((cases.len(), f, s), (4, 1, 1));
        tests += cases.len();
        failures += f;
        skipped += s;
    }
    assert_eq!(num(root, "tests"), tests);
    assert_eq!(num(root, "failures"), failures);
    assert_eq!(num(root, "skipped"), skipped);
    assert_eq!(num(root, "errors"), 0);
}

#[test]
fn junit_shows_teardown_errors_and_interruptions_as_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut rep = suite(
        "identity",
        vec![trial("identity", "gate::own", &["ID-3"], Verdict::Pass)],
    );
    rep.teardown_error = Some("cannot delete atespace e2e-1\ncaused by:\n    timeout".into());
    rep.interrupted = Some("SIGINT: cleaned up 2 actors".into());
    let w = report::write_suite(dir.path(), &rep).unwrap();
    let text = std::fs::read_to_string(&w.junit).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let ts = elems(doc.root_element(), "testsuite")[0];
    let names: Vec<_> = elems(ts, "testcase")
        .into_iter()
        .map(|c| attr(c, "name"))
        .collect();
    assert_eq!(names, ["gate::own", "[teardown]", "[interrupted]"]);
    assert_eq!(num(ts, "failures"), 2);
    assert_eq!(num(ts, "tests"), 3);
}

#[test]
fn suite_json_round_trips_and_merged_json_is_a_run_report() {
    let dir = tempfile::tempdir().unwrap();
    let rep = identity();
    let w = report::write_suite(dir.path(), &rep).unwrap();
    assert_eq!(w.suite_json, dir.path().join("suites/identity.json"));
    let back: SuiteReport = serde_json::from_slice(&std::fs::read(&w.suite_json).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&rep).unwrap()
    );
    let run: RunReport = serde_json::from_slice(&std::fs::read(&w.report_json).unwrap()).unwrap();
    assert_eq!(run.verdict, RunVerdict::Fail);
    assert_eq!(run.contract.len(), 15);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&w.report_json).unwrap()).unwrap();
    assert_eq!(json["verdict"], "fail");
    assert_eq!(json["suites"][0]["trials"][2]["verdict"], "skip");
    assert_eq!(json["contract"][4]["verdict"], "not_covered");
    // No temp files left behind.
    for sub in [dir.path().to_owned(), dir.path().join("suites")] {
        for e in std::fs::read_dir(sub).unwrap() {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(!n.ends_with(".tmp"), "left {n}");
        }
    }
}

#[test]
fn suites_written_concurrently_all_end_up_in_the_merged_reports() {
    const N: usize = 8;
    for _round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let barrier = Arc::new(Barrier::new(N));
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (dir, barrier) = (dir.path().to_owned(), barrier.clone());
                std::thread::spawn(move || {
                    let name = format!("suite{i}");
                    let id = format!("ID-{}", i + 1);
                    let rep = suite(&name, vec![trial(&name, "t", &[&id], Verdict::Pass)]);
                    barrier.wait();
                    report::write_suite(&dir, &rep).unwrap()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let run: RunReport =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                .unwrap();
        let names: Vec<_> = run.suites.iter().map(|s| s.suite.as_str()).collect();
        assert_eq!(
            names,
            (0..N).map(|i| format!("suite{i}")).collect::<Vec<_>>()
        );
        for row in &run.contract[..N] {
            assert_eq!(row.verdict, ContractVerdict::Pass, "{}", row.id);
        }
        let xml = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(elems(doc.root_element(), "testsuite").len(), N);
        assert_eq!(num(doc.root_element(), "tests"), N);
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        for i in 0..N {
            assert!(md.contains(&format!("## Suite `suite{i}`")));
        }
    }
}

fn row<'a>(md: &'a str, id: &str) -> &'a str {
    md.lines()
        .find(|l| l.starts_with(&format!("| {id} |")))
        .unwrap_or_else(|| panic!("no row for {id} in\n{md}"))
}

#[test]
fn markdown_reads_as_a_release_gate() {
    let dir = tempfile::tempdir().unwrap();
    let mut rep = identity();
    rep.kept = vec!["actor probe-alpha in atespace e2e-1234 (--keep)".into()];
    rep.interrupted = Some("SIGINT: cleaned up 2 actors".into());
    rep.teardown_error = Some("cannot stop the agent\ncaused by:\n    ESRCH".into());
    let w = report::write_suite(dir.path(), &rep).unwrap();
    let md = std::fs::read_to_string(&w.markdown).unwrap();

    assert_eq!(md.lines().next(), Some("# Release gate: FAIL"));
    let rows = md
        .lines()
        .filter(|l| l.starts_with("| ID-"))
        .collect::<Vec<_>>();
    assert_eq!(rows.len(), 15, "{md}");
    for (i, r) in rows.iter().enumerate() {
        assert!(r.starts_with(&format!("| ID-{} |", i + 1)), "{r}");
    }
    assert!(row(&md, "ID-6").contains("**FAIL**"));
    assert!(row(&md, "ID-6").contains("`identity/mount::read_only` **FAIL**"));
    assert!(row(&md, "ID-3").contains("| pass |"));
    assert!(row(&md, "ID-12").contains("*skipped*"));
    assert!(row(&md, "ID-5").contains("*not covered*"));
    assert!(row(&md, "ID-15").contains("*not covered*"));

    assert!(md.contains("[agent.log](artifacts/identity/mount::read_only/agent.log)"));
    assert!(md.contains("ID-5 not covered by any trial in this run"));
    assert!(md.contains("```text\nactor probe-alpha read the golden ID"));
    assert!(md.contains("\ncaused by:\n"));
    assert!(!md.contains('\0') && !md.contains('\x1b'));
    assert!(md.contains("no runsc on PATH"));
    assert!(md.contains("actor probe-alpha in atespace e2e-1234 (--keep)"));
    assert!(md.contains("SIGINT: cleaned up 2 actors"));
    assert!(md.contains("ESRCH"));
    assert!(md.contains("| runsc | `runsc version release-20260101.0` |"));
    // Sections in the order a release manager reads them.
    let pos = |s: &str| md.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{md}"));
    assert!(pos("## Why not PASS") < pos("## Identity contract"));
    assert!(pos("## Identity contract") < pos("## Suite `identity`"));
    assert!(pos("## Suite `identity`") < pos("## Failures"));
    assert!(pos("## Failures") < pos("## Skipped"));
    assert!(pos("## Skipped") < pos("## Environment"));
}

#[test]
fn markdown_warns_when_the_directory_mixes_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = suite("a", vec![trial("a", "t", &["ID-1"], Verdict::Pass)]);
    let mut b = suite("b", vec![trial("b", "t", &["ID-2"], Verdict::Pass)]);
    b.run_id = "stale-run".into();
    report::write_suite(dir.path(), &a).unwrap();
    let w = report::write_suite(dir.path(), &b).unwrap();
    assert_eq!(w.run.run_ids(), ["run-1234", "stale-run"]);
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    assert!(md.contains("**Warning:** this directory holds suite reports of 2 different runs"));
    assert!(md.contains("run `stale-run`: `b`"));
}

#[test]
fn merge_dir_on_an_empty_dir_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = format!("{:#}", report::merge_dir(dir.path()).unwrap_err());
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    std::fs::create_dir(dir.path().join("suites")).unwrap();
    let err = format!("{:#}", report::merge_dir(dir.path()).unwrap_err());
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    let missing = dir.path().join("nope");
    let err = format!("{:#}", report::merge_dir(&missing).unwrap_err());
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[test]
fn merge_dir_regenerates_the_merged_files() {
    let dir = tempfile::tempdir().unwrap();
    report::write_suite(dir.path(), &identity()).unwrap();
    for f in ["report.json", "junit.xml", "report.md"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let m = report::merge_dir(dir.path()).unwrap();
    assert_eq!(m.run.suites.len(), 1);
    for p in [&m.report_json, &m.junit, &m.markdown] {
        assert!(p.is_file(), "{}", p.display());
    }
}

#[test]
fn a_corrupt_suite_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("suites")).unwrap();
    std::fs::write(dir.path().join("suites/broken.json"), b"{").unwrap();
    let err = format!("{:#}", report::merge_dir(dir.path()).unwrap_err());
    assert!(err.contains("broken.json"), "{err}");
}

#[test]
fn bad_suite_names_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let err = report::write_suite(dir.path(), &suite("../escape", vec![])).unwrap_err();
    assert!(format!("{err:#}").contains("invalid suite name"));
    assert!(!Path::new(&dir.path().join("escape.json")).exists());
}

#[test]
fn console_summary_shows_trials_phases_skips_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let rep = identity();
    let w = report::write_suite(dir.path(), &rep).unwrap();
    let s = report::console_summary(&w.run, &rep, &w);
    assert!(
        s.contains("suite identity on local: FAIL in 4.00 s wall (run run-1234)"),
        "{s}"
    );
    assert!(
        s.lines()
            .any(|l| l.trim_start().starts_with("create actor") && l.ends_with(" ms")),
        "{s}"
    );
    assert!(s.contains("skipped: no runsc on PATH"), "{s}");
    assert!(s.contains("FAIL mount::read_only"), "{s}");
    assert!(s.contains(&w.markdown.display().to_string()), "{s}");
    assert!(s.contains(&w.junit.display().to_string()), "{s}");
}
