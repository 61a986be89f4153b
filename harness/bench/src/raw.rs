//! Raw runsc restores of the golden image beside the agent, and their
//! cleanup: every container registered before it starts and removed by
//! its ID, on failure and on interrupt too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ate_harness::cmd::{Cmd, Stdio};
use serde_json::Value;

use crate::run::{bounded, ms};
use crate::{OP_TIMEOUT, RAW_PREFIX};

/// The raw app container ID number `seq` of bench run `run`; its pause
/// container's ID is [`raw_pause_id`]. Fixed width, and the two differ in
/// one letter (`-a`/`-p`): runsc resolves an ID given on its command line
/// as a prefix, so no ID may be a prefix of another.
pub(crate) fn raw_app_id(run: &str, seq: usize) -> String {
    format!("{RAW_PREFIX}{run}-a{seq:04}")
}

/// The pause container ID of the raw sandbox whose app is `app`.
pub(crate) fn raw_pause_id(app: &str) -> String {
    match app.rfind("-a") {
        Some(i) => format!("{}-p{}", &app[..i], &app[i + 2..]),
        None => format!("{app}-pause"),
    }
}

/// A raw sandbox as the agent restores one (`engine/sandbox.rs`): `runsc
/// --network=none restore --detach --image-path SNAPSHOT --bundle B ID`
/// of the pause container (`ROOT/pause/bundle`), then of the app container
/// `cid` (`ROOT/bundle`), with the same image; stdio to
/// `ROOT/console.log`; both registered first. Returns the milliseconds of
/// both restores.
pub(crate) async fn raw_restore(
    runsc: &Path,
    snapshot: &Path,
    raw: &RawSandboxes,
    cid: &str,
    root: &Path,
) -> Result<f64> {
    raw.register(cid)?;
    let pause = raw_pause_id(cid);
    let t0 = Instant::now();
    restore_one(
        runsc,
        snapshot,
        &pause,
        &root.join("pause").join("bundle"),
        root,
    )
    .await?;
    restore_one(runsc, snapshot, cid, &root.join("bundle"), root).await?;
    Ok(ms(t0.elapsed()))
}

async fn restore_one(
    runsc: &Path,
    snapshot: &Path,
    cid: &str,
    bundle: &Path,
    root: &Path,
) -> Result<()> {
    let console = root.join("console.log");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
    };
    let cmd = Cmd::new(runsc)
        .args(["--network=none", "restore", "--detach", "--image-path"])
        .arg(snapshot)
        .arg("--bundle")
        .arg(bundle)
        .arg(cid)
        .timeout(OP_TIMEOUT)
        .stdout(Stdio::file(open()?))
        .stderr(Stdio::file(open()?));
    cmd.run().await.with_context(|| {
        format!(
            "raw restore of {cid} failed; console:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        )
    })?;
    Ok(())
}

/// The raw sandboxes of a run, by app container ID: both containers
/// registered (in memory and as record files) before runsc is asked to
/// start either, unregistered only once runsc deleted them (the app, then
/// the pause). Whatever is still registered when this is dropped (a
/// panic) is removed then, by ID.
pub(crate) struct RawSandboxes {
    runsc: PathBuf,
    records: PathBuf,
    live: Mutex<BTreeSet<String>>,
    created: Mutex<usize>,
}

impl RawSandboxes {
    pub(crate) fn new(runsc: PathBuf, records: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&records)?;
        Ok(RawSandboxes {
            runsc,
            records,
            live: Mutex::new(BTreeSet::new()),
            created: Mutex::new(0),
        })
    }

    fn register(&self, cid: &str) -> Result<()> {
        std::fs::write(self.records.join(cid), b"")?;
        std::fs::write(self.records.join(raw_pause_id(cid)), b"")?;
        self.live.lock().unwrap().insert(cid.to_owned());
        *self.created.lock().unwrap() += 1;
        Ok(())
    }

    pub(crate) fn created(&self) -> usize {
        *self.created.lock().unwrap()
    }

    /// Removes the app container `cid`, then its pause, each record after
    /// its container.
    async fn remove(runsc: &Path, records: &Path, cid: &str) -> Result<()> {
        for id in [cid.to_owned(), raw_pause_id(cid)] {
            remove_container(runsc, &id).await?;
            let _ = std::fs::remove_file(records.join(&id));
        }
        Ok(())
    }

    /// Removes these sandboxes, by app container ID (16 at a time); tries
    /// every one, then reports those it could not remove.
    pub(crate) async fn remove_many(&self, ids: &[String]) -> Result<()> {
        let runsc = self.runsc.clone();
        let records = self.records.clone();
        let results = bounded(ids.to_vec(), 16, move |cid: String| {
            let runsc = runsc.clone();
            let records = records.clone();
            async move {
                let r = RawSandboxes::remove(&runsc, &records, &cid).await;
                Ok((cid, r))
            }
        })
        .await?;
        let mut failed = Vec::new();
        let mut live = self.live.lock().unwrap();
        for (cid, r) in results {
            match r {
                Ok(()) => {
                    live.remove(&cid);
                }
                Err(e) => failed.push(format!("{cid}: {e:#}")),
            }
        }
        ensure!(
            failed.is_empty(),
            "cannot remove raw containers:\n{}",
            failed.join("\n")
        );
        Ok(())
    }

    /// Removes every container still registered.
    pub(crate) async fn remove_all(&self) -> Result<()> {
        let ids: Vec<String> = self.live.lock().unwrap().iter().cloned().collect();
        if !ids.is_empty() {
            eprintln!("bench: removing {} raw container(s): {ids:?}", ids.len());
        }
        self.remove_many(&ids).await
    }
}

impl Drop for RawSandboxes {
    fn drop(&mut self) {
        let ids: Vec<String> = self.live.lock().unwrap().iter().cloned().collect();
        std::thread::scope(|s| {
            for app in &ids {
                let runsc = &self.runsc;
                s.spawn(move || {
                    for cid in [app.clone(), raw_pause_id(app)] {
                        let _ = std::process::Command::new(runsc)
                            .args(["--network=none", "kill", &cid, "KILL"])
                            .output();
                        match std::process::Command::new(runsc)
                            .args(["--network=none", "delete", "-force", &cid])
                            .output()
                        {
                            Ok(o) if o.status.success() => {
                                eprintln!("bench: removed raw container {cid}")
                            }
                            Ok(o) => eprintln!(
                                "bench: CANNOT remove raw container {cid}: {}",
                                String::from_utf8_lossy(&o.stderr).trim()
                            ),
                            Err(e) => eprintln!("bench: CANNOT remove raw container {cid}: {e}"),
                        }
                    }
                });
            }
        });
    }
}

/// `runsc kill CID KILL` (fails for a stopped one; ignored), then `runsc
/// delete -force CID`, which must succeed unless runsc no longer lists it.
pub(crate) async fn remove_container(runsc: &Path, cid: &str) -> Result<()> {
    let short = Duration::from_secs(30);
    let _ = Cmd::new(runsc)
        .args(["--network=none", "kill", cid, "KILL"])
        .timeout(short)
        .output()
        .await;
    let del = Cmd::new(runsc)
        .args(["--network=none", "delete", "-force", cid])
        .timeout(short)
        .run()
        .await;
    match del {
        Ok(_) => Ok(()),
        Err(e) => {
            if runsc_list(runsc).await?.iter().any(|c| c == cid) {
                Err(e).with_context(|| format!("cannot delete raw container {cid}"))
            } else {
                Ok(())
            }
        }
    }
}

pub(crate) use ate_harness::backend::local::runsc_list;

pub(crate) async fn runsc_state(runsc: &Path, cid: &str) -> Result<String> {
    let out = Cmd::new(runsc)
        .args(["state", cid])
        .timeout(Duration::from_secs(20))
        .run()
        .await?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("runsc state {cid}: not JSON: {}", out.stdout_str()))?;
    Ok(v["status"].as_str().unwrap_or_default().to_owned())
}

/// Removes what a bench run killed before its cleanup left under
/// `work_root` (a run dir whose lock nobody holds): its raw containers by
/// their recorded IDs, the sandboxes its agent recorded (`ate-refagent
/// gc`), then the dir.
pub(crate) async fn sweep_stale_runs(work_root: &Path, runsc: &Path) {
    let Ok(entries) = std::fs::read_dir(work_root) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("run-") || !dir.is_dir() {
            continue;
        }
        let Ok(lock) = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("bench.lock"))
        else {
            continue;
        };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live run
        }
        // Sorted, the app containers (`-a`) come before the pauses (`-p`).
        let mut recorded: Vec<String> = std::fs::read_dir(dir.join("raw-sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|rec| rec.file_name().to_string_lossy().into_owned())
            .collect();
        recorded.sort();
        for cid in recorded {
            match remove_container(runsc, &cid).await {
                Ok(()) => eprintln!("bench: removed raw container {cid} left by {name}"),
                Err(e) => eprintln!("bench: cannot remove {cid} left by {name}: {e:#}"),
            }
        }
        let state = dir.join("state");
        let agent = dir.join("ate-refagent");
        if state.is_dir() && agent.exists() {
            let _ = Cmd::new(&agent)
                .arg("gc")
                .arg("--state-dir")
                .arg(&state)
                .arg("--runsc")
                .arg(runsc)
                .timeout(Duration::from_secs(120))
                .output()
                .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("bench: removed stale run dir {}", dir.display());
    }
}
