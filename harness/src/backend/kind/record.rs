//! A run's record on disk, and `gc`: what a run made, kept so that a run
//! that died can still be cleaned up.
//!
//! **Invariants.** The record is written (temp file, rename) on every
//! change of what the run made, before the thing is made; its lock is held
//! while the run lives, so `gc` leaves a live run alone. A dry run keeps
//! no record ([`KindBackend::new`] gives it no [`RecordFiles`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use anyhow::Context as _;
use tracing::warn;

use super::{tools, KindBackend, KindOptions, Record, State, GOLDEN_ATESPACE};

/// A run's record and its lock: `<state_dir>/<run>.json`, `<run>.lock`.
#[derive(Debug, Clone)]
pub(super) struct RecordFiles {
    json: PathBuf,
    lock: PathBuf,
}

impl RecordFiles {
    pub(super) fn new(state_dir: &Path, run: &crate::run_id::RunId) -> RecordFiles {
        RecordFiles {
            json: state_dir.join(format!("{run}.json")),
            lock: state_dir.join(format!("{run}.lock")),
        }
    }

    /// The state dir the records are in.
    pub(super) fn dir(&self) -> &Path {
        self.json.parent().expect("a record dir")
    }
}

impl KindBackend {
    /// Takes the run's record lock: while it is held, `gc` leaves the run
    /// alone.
    pub(super) fn take_lock(&self) -> Result<()> {
        let Some(files) = &self.records else {
            return Ok(());
        };
        let dir = files.dir();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&files.lock)
            .with_context(|| format!("cannot open {}", files.lock.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                anyhow::anyhow!(
                    "run ID {:?} is in use by another process ({} is locked: {e}); choose another --run-id",
                    self.opts.run_id,
                    files.lock.display()
                )
            },
        )?;
        *self.lock.lock().unwrap() = Some(f);
        Ok(())
    }

    /// Changes the state and writes the run's record (temp file, rename),
    /// so that what this run made can be removed even if it dies.
    pub(super) fn update(&self, f: impl FnOnce(&mut State)) {
        let mut st = self.state.lock().unwrap();
        f(&mut st);
        let Some(files) = &self.records else {
            return;
        };
        let record = Record {
            run_id: self.opts.run_id.to_string(),
            cluster: self.opts.cluster.clone(),
            context: self.opts.context(),
            kubeconfig: self.opts.kubeconfig.clone(),
            state: st.clone(),
        };
        let json = &files.json;
        let tmp = json.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&record)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, json));
        if let Err(e) = written {
            warn!("cannot write the run record {}: {e}", json.display());
        }
    }

    /// Removes the run's record: everything it listed is gone.
    pub(super) fn forget_record(&self) {
        if let Some(files) = &self.records {
            let _ = std::fs::remove_file(&files.json);
            let _ = std::fs::remove_file(&files.lock);
        }
    }
}

/// Removes what earlier kind runs left, by their records in `state_dir`: a
/// run whose process died (its record lock is free), or that was kept with
/// `--keep`, gets the same teardown a finished run does (actors suspended
/// and deleted, atespaces, the rendered manifest, a cluster or registry it
/// created), on the cluster and context its record names. A run still
/// running is left alone. Returns one line per run and per thing removed.
pub async fn gc_stale_runs(
    state_dir: &Path,
    search_path: Option<OsString>,
    command_timeout: Duration,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Ok(lines);
    };
    let mut records: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    records.sort();
    for path in records {
        let record: Record = match std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice(&b)?))
        {
            Ok(r) => r,
            Err(e) => {
                lines.push(format!(
                    "{}: unreadable record, left alone: {e:#}",
                    path.display()
                ));
                continue;
            }
        };
        let run_id = match crate::run_id::RunId::parse(&record.run_id) {
            Ok(r) => r,
            Err(e) => {
                lines.push(format!("{}: left alone: {e}", path.display()));
                continue;
            }
        };
        let opts = KindOptions {
            run_id,
            cluster: record.cluster.clone(),
            create_cluster: false,
            install: false,
            deploy_agent: false,
            context: Some(record.context.clone()),
            kubeconfig: record.kubeconfig.clone(),
            substrate_root: None,
            bucket_name: None,
            ko_docker_repo: None,
            probe_bin: None,
            fixtures_dir: PathBuf::new(),
            work_dir: state_dir.to_path_buf(),
            search_path: search_path.clone(),
            command_timeout,
            preflight_deadline: Duration::from_secs(10),
            dry_run: false,
            state_dir: Some(state_dir.to_path_buf()),
        };
        let backend = KindBackend::new(opts);
        if backend.take_lock().is_err() {
            lines.push(format!("run {}: still running, left alone", record.run_id));
            continue;
        }
        let what = describe(&record);
        *backend.state.lock().unwrap() = record.state;
        match backend.remove_all().await {
            Ok(()) => {
                lines.push(format!(
                    "run {} (context {}): removed {}",
                    record.run_id,
                    record.context,
                    if what.is_empty() {
                        "its record (nothing else was left)".to_owned()
                    } else {
                        what.join(", ")
                    }
                ));
            }
            Err(e) => lines.push(format!("run {}: {e:#}", record.run_id)),
        }
    }
    Ok(lines)
}

/// Runs in `dir` whose process is gone (their lock is free), with what
/// each left; read only, the locks are released again.
pub(super) fn stale_records(dir: &Path) -> Vec<(String, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in entries.flatten().map(|e| e.path()) {
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(record) = std::fs::read(&p)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<Record>(&b)?))
        else {
            continue;
        };
        let free = std::fs::OpenOptions::new()
            .write(true)
            .open(p.with_extension("lock"))
            .is_ok_and(|f| {
                rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
            });
        if free {
            out.push((record.run_id.clone(), describe(&record)));
        }
    }
    out.sort();
    out
}

fn describe(r: &Record) -> Vec<String> {
    let st = &r.state;
    let mut out: Vec<String> = st
        .actors
        .iter()
        .map(|(a, i)| format!("actor {a}/{i}"))
        .collect();
    out.extend(st.atespaces.iter().map(|a| format!("atespace {a}")));
    if let Some(g) = &st.golden_actor {
        out.push(format!("golden actor {GOLDEN_ATESPACE}/{g}"));
    }
    if st.rendered.is_some() {
        out.push(format!(
            "namespace ate-conf-{} (the rendered manifest)",
            r.run_id
        ));
    }
    if st.created_cluster {
        out.push(format!("kind cluster {}", r.cluster));
    }
    if st.created_registry {
        out.push(format!("registry container {}", tools::REGISTRY_CONTAINER));
    }
    out
}
