//! The kind backend's steps as values: every command vector (with the
//! environment it sets and its working directory), every Kubernetes API
//! call, every registry request and every piece of local work, in order.
//! The backend's executor (`exec.rs`) records each step before it is made,
//! the real one and the recording one alike: a real run's plan goes into a
//! failed trial's artifacts; `--dry-run` prints the recording one's.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One Kubernetes API call (or registry request), as the dry run shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiCall {
    /// `GET`, `POST`, `PUT`, `HEAD`, `WATCH`, `WS` (WebSocket upgrade).
    pub method: &'static str,
    /// Path and query, e.g. `/apis/apps/v1/namespaces/ate-system/deployments/ate-controller`;
    /// for a registry, the whole URL.
    pub path: String,
    /// Why it is made, e.g. `deployment ate-system/ate-controller is ready`.
    pub purpose: String,
}

impl ApiCall {
    /// A call.
    pub fn new(method: &'static str, path: impl Into<String>, purpose: impl Into<String>) -> Self {
        ApiCall {
            method,
            path: path.into(),
            purpose: purpose.into(),
        }
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// A program run with an argument vector (never a shell).
    Command {
        /// Why.
        purpose: String,
        /// Program and arguments.
        argv: Vec<String>,
        /// Environment variables set for it (on top of the inherited ones).
        env: Vec<(String, String)>,
        /// Working directory, when not the harness's own.
        cwd: Option<PathBuf>,
    },
    /// A Kubernetes API call, made with kube-rs.
    Api(ApiCall),
    /// An HTTP request to the OCI registry.
    Registry(ApiCall),
    /// Work done in this process (build, render, write a file).
    Local {
        /// What.
        purpose: String,
    },
}

impl Step {
    /// A command step from an [`ate_cmd::Cmd`].
    pub fn command(purpose: impl Into<String>, cmd: &ate_cmd::Cmd) -> Step {
        Step::Command {
            purpose: purpose.into(),
            argv: std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env: cmd
                .get_envs()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
            cwd: cmd.get_cwd().map(PathBuf::from),
        }
    }

    /// A local step.
    pub fn local(purpose: impl Into<String>) -> Step {
        Step::Local {
            purpose: purpose.into(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Command {
                purpose,
                argv,
                env,
                cwd,
            } => {
                writeln!(f, "run    {purpose}")?;
                let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
                write!(f, "         argv: [{}]", argv.join(", "))?;
                for (k, v) in env {
                    write!(f, "\n         env:  {k}={v}")?;
                }
                if let Some(cwd) = cwd {
                    write!(f, "\n         cwd:  {}", cwd.display())?;
                }
                Ok(())
            }
            Step::Api(c) => write!(
                f,
                "api    {} {}\n         ({})",
                c.method, c.path, c.purpose
            ),
            Step::Registry(c) => {
                write!(
                    f,
                    "oci    {} {}\n         ({})",
                    c.method, c.path, c.purpose
                )
            }
            Step::Local { purpose } => write!(f, "local  {purpose}"),
        }
    }
}

/// Steps in the order they were made (or, in a dry run, would be).
#[derive(Debug, Clone, Default)]
pub struct Plan(Arc<Mutex<Vec<Step>>>);

impl Plan {
    /// Appends a step.
    pub fn push(&self, step: Step) {
        self.0.lock().unwrap().push(step);
    }

    /// Appends steps.
    pub fn extend(&self, steps: impl IntoIterator<Item = Step>) {
        self.0.lock().unwrap().extend(steps);
    }

    /// A copy of the steps so far.
    pub fn steps(&self) -> Vec<Step> {
        self.0.lock().unwrap().clone()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps().iter().enumerate() {
            writeln!(f, "{:>3}. {s}", i + 1)?;
        }
        Ok(())
    }
}
