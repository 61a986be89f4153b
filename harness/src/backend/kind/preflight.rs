//! The preflight: environment, tools (with their versions) and the
//! cluster's installation, every failed check named in one error.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use tracing::info;

use super::{kube, KindBackend};

/// A tool's version output as a recording executor answers it.
const VERSION_AT_RUN_TIME: &str = "<version read at run time>";

/// One preflight check as a report line: `ok` or `FAIL`, name, detail.
fn check_line(out: &mut String, ok: bool, name: &str, detail: &str) {
    let mark = if ok { "ok  " } else { "FAIL" };
    let _ = writeln!(out, "  {mark} {name}: {detail}");
}

impl KindBackend {
    /// Environment, tools (with versions) and the cluster's installation;
    /// every failed check is named, all in one error.
    pub(super) async fn preflight(&self) -> Result<()> {
        let mut report = String::new();
        let mut failed = 0;
        let mut check = |ok: bool, name: &str, detail: &str| {
            if !ok {
                failed += 1;
            }
            check_line(&mut report, ok, name, detail);
        };
        for (var, value) in [
            ("BUCKET_NAME", &self.opts.bucket_name),
            ("KO_DOCKER_REPO", &self.opts.ko_docker_repo),
        ] {
            match value.as_deref().filter(|v| !v.is_empty()) {
                Some(v) => check(true, var, v),
                None => check(
                    false,
                    var,
                    "not set (the install script for kind uses BUCKET_NAME=ate-snapshots, KO_DOCKER_REPO=localhost:5001)",
                ),
            }
        }
        match &self.opts.substrate_root {
            None => check(
                false,
                "ATE_SUBSTRATE_ROOT",
                "not set: the Agent Substrate checkout, where ko resolves the WorkerPool's ko:// image (--substrate-root)",
            ),
            Some(root) => {
                let go_mod = std::fs::read_to_string(root.join("go.mod")).unwrap_or_default();
                if !go_mod.contains("module github.com/agent-substrate/substrate") {
                    check(
                        false,
                        "ATE_SUBSTRATE_ROOT",
                        &format!(
                            "{} is not an Agent Substrate checkout (no go.mod with module github.com/agent-substrate/substrate)",
                            root.display()
                        ),
                    );
                } else if !root.join(".ko.yaml").is_file() {
                    check(
                        false,
                        "ATE_SUBSTRATE_ROOT",
                        &format!(
                            "{} has no .ko.yaml: ko would silently lose defaultPlatforms",
                            root.display()
                        ),
                    );
                } else {
                    check(true, "ATE_SUBSTRATE_ROOT", &root.display().to_string());
                }
            }
        }
        // The tools: found, and their versions recorded (a recording
        // executor answers VERSION_AT_RUN_TIME).
        let tools = [
            ("kind", self.tools.kind.clone(), self.tools.kind_version()),
            ("ko", self.tools.ko.clone(), self.tools.ko_version()),
            (
                "kubectl",
                self.tools.kubectl.clone(),
                self.tools.kubectl_version(),
            ),
        ];
        for (name, program, version) in tools {
            // Found on PATH (resolved to an absolute path); a recording
            // executor assumes it is.
            let found = program.is_absolute().then_some(()).ok_or(());
            if self.exec.or_stand_in(found, || ()).is_err() {
                check(false, name, &format!("`{name}` not found on PATH"));
                continue;
            }
            match self
                .exec
                .run(
                    &format!("record the {name} version"),
                    version,
                    VERSION_AT_RUN_TIME,
                )
                .await
            {
                Ok(out) => {
                    let v = version_line(name, &out);
                    check(true, name, &format!("{} ({v})", program.display()));
                    self.state
                        .lock()
                        .unwrap()
                        .versions
                        .insert(name.to_owned(), v);
                }
                Err(e) => check(
                    false,
                    name,
                    &format!("{} does not run: {e:#}", program.display()),
                ),
            }
        }
        let plugin_path = self
            .opts
            .search_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        // Found on PATH; a recording executor assumes it is.
        let plugin = self.exec.or_stand_in(
            which::which_in("kubectl-ate", Some(&plugin_path), &cwd),
            || PathBuf::from("kubectl-ate"),
        );
        match plugin {
            Err(_) => check(
                false,
                "kubectl ate",
                "`kubectl-ate` not found on PATH (build it from the checkout: go install ./cmd/kubectl-ate)",
            ),
            Ok(found) => {
                let v = match self
                    .exec
                    .run("record the kubectl ate version", self.tools.ate_version(), VERSION_AT_RUN_TIME)
                    .await
                {
                    Ok(out) => version_line("kubectl-ate", &out),
                    Err(e) => format!(
                        "unknown (`kubectl ate --version` failed: {})",
                        first_line(&format!("{e:#}"))
                    ),
                };
                check(true, "kubectl ate", &format!("{} ({v})", found.display()));
                self.state.lock().unwrap().versions.insert("kubectl-ate".into(), v);
            }
        }
        // The cluster itself (a recording executor answers every check
        // passed).
        let target = kube::KubeTarget {
            kubeconfig: self.opts.kubeconfig.clone(),
            context: Some(self.opts.context()),
        };
        for c in kube::preflight(&self.exec, &target, self.opts.preflight_deadline).await {
            check(c.ok, &c.name, &c.detail);
        }
        if failed == 0 {
            info!("kind backend preflight passed:\n{report}");
            return Ok(());
        }
        // A real run stops here; a dry run shows what would fail and goes on.
        let failure = anyhow!(
            "kind backend preflight: {failed} check(s) failed (cluster {}, context {}):\n{report}",
            self.opts.cluster,
            self.opts.context()
        );
        self.exec
            .local(
                format!(
                    "preflight: {failed} check(s) fail; a real run stops here:\n{}",
                    report.trim_end()
                ),
                async { Err(failure) },
                || Ok(()),
            )
            .await
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// A one-line version from a tool's `version` output (kubectl's JSON gives
/// `clientVersion.gitVersion`).
fn version_line(tool: &str, out: &str) -> String {
    if tool == "kubectl" {
        if let Some(v) = serde_json::from_str::<serde_json::Value>(out)
            .ok()
            .and_then(|v| {
                v.pointer("/clientVersion/gitVersion")
                    .and_then(|g| g.as_str())
                    .map(String::from)
            })
        {
            return v;
        }
    }
    let line = first_line(out.trim()).trim();
    if line.is_empty() {
        "unknown (empty version output)".into()
    } else {
        line.chars().take(120).collect()
    }
}
