//! The preflight: environment, tools (with their versions) and the
//! cluster's installation, every failed check named in one error.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Result};
use tracing::info;

use super::plan::Step;
use super::{kube, KindBackend};

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
        // The tools: found, and their versions recorded.
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
            if self.opts.dry_run {
                self.plan.push(Step::command(
                    format!("record the {name} version"),
                    &version,
                ));
                continue;
            }
            if !program.is_absolute() {
                check(false, name, &format!("`{name}` not found on PATH"));
                continue;
            }
            match version.run().await {
                Ok(out) => {
                    let v = version_line(name, &out.stdout_str());
                    self.plan.push(Step::command(
                        format!("record the {name} version"),
                        &version,
                    ));
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
                    &format!("{} does not run: {e}", program.display()),
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
        let version = self.tools.ate_version();
        if self.opts.dry_run {
            self.plan
                .push(Step::command("record the kubectl ate version", &version));
        } else {
            match which::which_in("kubectl-ate", Some(&plugin_path), &cwd) {
                Err(_) => check(
                    false,
                    "kubectl ate",
                    "`kubectl-ate` not found on PATH (build it from the checkout: go install ./cmd/kubectl-ate)",
                ),
                Ok(found) => {
                    self.plan.push(Step::command("record the kubectl ate version", &version));
                    let v = match version.run().await {
                        Ok(out) => version_line("kubectl-ate", &out.stdout_str()),
                        Err(e) => format!("unknown (`kubectl ate --version` failed: {})", first_line(&e.to_string())),
                    };
                    check(true, "kubectl ate", &format!("{} ({v})", found.display()));
                    self.state.lock().unwrap().versions.insert("kubectl-ate".into(), v);
                }
            }
        }
        // The cluster itself.
        let target = kube::KubeTarget {
            kubeconfig: self.opts.kubeconfig.clone(),
            context: Some(self.opts.context()),
        };
        if self.opts.dry_run {
            self.plan.push(Step::local(format!(
                "connect kube-rs with kubeconfig {} and context {}",
                self.opts
                    .kubeconfig
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(default: $KUBECONFIG or ~/.kube/config)".into()),
                self.opts.context()
            )));
            self.plan
                .extend(kube::preflight_plan().into_iter().map(Step::Api));
        } else {
            self.plan
                .extend(kube::preflight_plan().into_iter().map(Step::Api));
            let checks = kube::preflight(&target, self.opts.preflight_deadline).await;
            let api_ok = checks.iter().all(|c| c.ok || c.name != kube::API_CHECK);
            for c in &checks {
                check(c.ok, &c.name, &c.detail);
            }
            if api_ok {
                match kube::connect(&target).await {
                    Ok(client) => {
                        let _ = self.client.set(client);
                    }
                    Err(e) => check(false, "kube client", &format!("{e:#}")),
                }
            }
        }
        if failed > 0 && self.opts.dry_run {
            self.plan.push(Step::local(format!(
                "preflight as far as it can be checked without running anything: {failed} check(s) would fail:\n{}",
                report.trim_end()
            )));
            return Ok(());
        }
        if failed > 0 {
            bail!(
                "kind backend preflight: {failed} check(s) failed (cluster {}, context {}):\n{report}",
                self.opts.cluster,
                self.opts.context()
            );
        }
        info!("kind backend preflight passed:\n{report}");
        Ok(())
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
