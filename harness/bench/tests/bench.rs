//! The bench's own correctness at N = 2, sequential and concurrent — never
//! its timings: both paths restore from the one golden image (one start
//! nonce, the golden's ID read at start), every actor and raw container
//! reads its own ID now, the JSON is written and every number in it is
//! finite and positive, and nothing of the run is left in `runsc list`.
//! Real runsc, real agent; needs root (like the suites).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use ate_bench::{self as bench, BenchOptions};
use ate_harness::cmd::Cmd;
use serde_json::Value;

/// Every number in `v` with its JSON path.
fn numbers(v: &Value, path: String, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Number(n) => out.push((path, n.as_f64().unwrap_or(f64::NAN))),
        Value::Array(a) => {
            for (k, x) in a.iter().enumerate() {
                numbers(x, format!("{path}[{k}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                numbers(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_at_n2_restores_from_the_golden_with_own_ids_and_cleans_up() -> anyhow::Result<()> {
    let out_dir = tempfile::tempdir()?;
    let out = out_dir.path().join("bench.json");
    let opts = BenchOptions {
        ns: vec![2],
        concurrency: 2,
        whoami_requests: 20,
        whoami_warmup: 5,
        on_demand_samples: 1,
        paired_samples: 2,
        raw_http_checks: 2,
        ..BenchOptions::default()
    };
    let r = bench::run(&opts).await?;
    bench::write_json(&r, &out)?;
    eprintln!("{}", bench::render_table(&r));

    // Four fan-out rows: raw and agent, sequential and concurrent.
    let rows: BTreeSet<(String, usize, usize)> = r
        .fanout
        .iter()
        .map(|f| (f.path.clone(), f.n, f.concurrency))
        .collect();
    let want: BTreeSet<(String, usize, usize)> = [
        ("raw", 2, 1),
        ("raw", 2, 2),
        ("agent", 2, 1),
        ("agent", 2, 2),
    ]
    .into_iter()
    .map(|(p, n, c)| (p.to_owned(), n, c))
    .collect();
    assert_eq!(rows, want, "fan-out rows");
    for f in &r.fanout {
        assert_eq!(
            f.restore.n, 2,
            "{} N=2 conc={}: samples",
            f.path, f.concurrency
        );
        // One runsc-sandbox, and a runsc-gofer per container (pause, app).
        assert!(
            (f.processes_per_sandbox - 3.0).abs() < f64::EPSILON,
            "{} conc={}: expected runsc-sandbox and two runsc-gofers per sandbox, found {}",
            f.path,
            f.concurrency,
            f.processes_per_sandbox
        );
        assert!(
            f.disk_unique_bytes < r.golden.rootfs_bytes as f64,
            "{}: unique bytes per actor {} not below one rootfs ({})",
            f.path,
            f.disk_unique_bytes,
            r.golden.rootfs_bytes
        );
    }

    // Agent path: 2 actors per mode, each restored from the golden, each
    // its own ID, the golden's ID at start, one nonce for all.
    let golden = &r.golden.golden_actor_id;
    let c = &r.checks;
    assert_eq!(c.agent_actors.len(), 4, "{:?}", c.agent_actors);
    for a in &c.agent_actors {
        assert_eq!(
            a.whoami, a.id,
            "{}/{} read another ID: {a:?}",
            a.atespace, a.id
        );
        assert_eq!(a.restored_from, "golden", "{a:?}");
        assert_eq!(
            &a.identity_at_start, golden,
            "not restored from the golden: {a:?}"
        );
        assert_eq!(a.nonce, c.golden_nonce, "another start nonce: {a:?}");
    }
    for atespace in ["seq-n2", "con-n2"] {
        let pair: Vec<_> = c
            .agent_actors
            .iter()
            .filter(|a| a.atespace == atespace)
            .collect();
        assert_eq!(pair.len(), 2, "{atespace}: {pair:?}");
        assert_eq!(pair[0].nonce, pair[1].nonce, "{atespace}: {pair:?}");
        assert_ne!(pair[0].whoami, pair[1].whoami, "{atespace}: {pair:?}");
        assert_ne!(pair[0].cid, pair[1].cid, "{atespace}: {pair:?}");
    }

    // Raw path: every container running; each answered over the relay
    // with its own identity, the golden's ID at start and the same nonce.
    assert_eq!(c.raw_containers.len(), 4, "{:?}", c.raw_containers);
    for x in &c.raw_containers {
        assert_eq!(x.state, "running", "{x:?}");
        assert_eq!(x.whoami.as_deref(), Some(x.cid.as_str()), "{x:?}");
        assert_eq!(
            x.identity_at_start.as_deref(),
            Some(golden.as_str()),
            "{x:?}"
        );
        assert_eq!(x.nonce.as_deref(), Some(c.golden_nonce.as_str()), "{x:?}");
    }
    assert_eq!(c.warm_whoami_own, 20);
    assert_eq!(r.warm_whoami.n, 20);
    assert_eq!(r.paired.raw.n, 2);
    assert_eq!(r.paired.api_resume.n, 2);

    // The JSON: written, parses, every number finite and > 0.
    let text = std::fs::read_to_string(&out).context("bench.json")?;
    let v: Value = serde_json::from_str(&text).context("bench.json is not JSON")?;
    let mut nums = Vec::new();
    numbers(&v, "$".into(), &mut nums);
    ensure!(
        nums.len() > 50,
        "too few numbers in the JSON: {}",
        nums.len()
    );
    let bad: Vec<&(String, f64)> = nums
        .iter()
        .filter(|(_, x)| !x.is_finite() || *x <= 0.0)
        .collect();
    assert!(bad.is_empty(), "numbers not finite and > 0: {bad:?}");
    for key in [
        "machine",
        "golden",
        "fanout",
        "on_demand",
        "warm_whoami",
        "ratio",
    ] {
        assert!(v.get(key).is_some(), "no {key} in the JSON");
    }
    for k in [
        "paired_api_resume",
        "sequential_api_resume",
        "concurrent_api_resume",
    ] {
        assert!(v["ratio"][k].as_f64().is_some(), "no ratio.{k}");
    }

    // Nothing left: not the raw containers, not the agent's.
    assert!(
        r.cleanup.runsc_left.is_empty(),
        "{:?}",
        r.cleanup.runsc_left
    );
    let out = Cmd::new("runsc")
        .args(["list", "-quiet"])
        .timeout(Duration::from_secs(20))
        .run()
        .await?;
    let raw_prefix = format!("{}{}-", bench::RAW_PREFIX, r.run);
    let agent_prefix = format!("ate-{}-", r.cleanup.agent_instance);
    let left: Vec<String> = out
        .stdout_str()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with(&raw_prefix) || l.starts_with(&agent_prefix))
        .collect();
    assert!(left.is_empty(), "runsc still lists: {left:?}");
    Ok(())
}
