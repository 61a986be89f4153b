//! What /proc and the filesystem say: resident memory per sandbox, disk
//! per actor, the machine.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ate_harness::cmd::Cmd;

use crate::options::cores;
use crate::report::Machine;

pub(crate) struct ProcInfo {
    pid: u32,
    pub(crate) args: Vec<String>,
}

/// Every process with a command line.
pub(crate) fn scan_procs() -> Vec<ProcInfo> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (!args.is_empty()).then_some(ProcInfo { pid, args })
        })
        .collect()
}

pub(crate) fn status_kib(pid: u32, file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Memory of one sandbox.
pub(crate) struct SandboxMem {
    pub(crate) rss_kib: u64,
    pub(crate) pss_kib: Option<u64>,
    pub(crate) processes: usize,
}

/// Whether a runsc process is an `exec` (a relay), not the sandbox.
pub(crate) fn is_exec(p: &ProcInfo) -> bool {
    p.args.iter().any(|a| a == "exec")
}

/// The sandbox's host processes: `runsc-sandbox` and `runsc-gofer` name
/// one of its container IDs (pause, app) or bundles (`--bundle=B` /
/// `--bundle B`).
pub(crate) fn sandbox_mem(procs: &[ProcInfo], cids: &[&str], bundles: &[&Path]) -> SandboxMem {
    let bundles: Vec<String> = bundles
        .iter()
        .map(|b| b.to_string_lossy().into_owned())
        .collect();
    let flags: Vec<String> = bundles.iter().map(|b| format!("--bundle={b}")).collect();
    let mine: Vec<&ProcInfo> = procs
        .iter()
        .filter(|p| !is_exec(p))
        .filter(|p| {
            p.args
                .iter()
                .any(|a| cids.contains(&a.as_str()) || bundles.contains(a) || flags.contains(a))
        })
        .collect();
    let rss = mine
        .iter()
        .filter_map(|p| status_kib(p.pid, "status", "VmRSS:"))
        .sum();
    let pss: Vec<u64> = mine
        .iter()
        .filter_map(|p| status_kib(p.pid, "smaps_rollup", "Pss:"))
        .collect();
    SandboxMem {
        rss_kib: rss,
        pss_kib: (pss.len() == mine.len() && !mine.is_empty()).then(|| pss.iter().sum()),
        processes: mine.len(),
    }
}

/// VmRSS of the host-side `runsc exec CID ...` relay processes.
pub(crate) fn relay_rss_kib(procs: &[ProcInfo], cid: &str) -> u64 {
    procs
        .iter()
        .filter(|p| is_exec(p) && p.args.iter().any(|a| a == cid))
        .filter_map(|p| status_kib(p.pid, "status", "VmRSS:"))
        .sum()
}

/// `(apparent, unique)` bytes under `root`: every file, symlink and
/// directory by its size; unique counts files only when they have one link
/// (not shared with the template), and every directory.
pub(crate) fn disk_usage(root: &Path) -> Result<(u64, u64)> {
    let mut apparent = 0;
    let mut unique = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p)
            .with_context(|| format!("cannot stat {}", p.display()))?;
        apparent += m.len();
        if m.is_dir() {
            unique += m.len();
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else if m.nlink() == 1 {
            unique += m.len();
        }
    }
    Ok((apparent, unique))
}

pub(crate) async fn machine(runsc: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let runsc = Cmd::new(runsc)
        .arg("--version")
        .timeout(Duration::from_secs(10))
        .run()
        .await
        .map(|o| {
            o.stdout_str()
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"));
    Machine {
        cores: cores(),
        cpu,
        memory_kib,
        kernel,
        runsc,
    }
}
