//! The wire types of the agent's control API and of its start-up line.
//!
//! **One naming policy:** every field of every type is serde's default
//! spelling, snake_case, with no per-field renames. Enum *values* keep the
//! spelling the agent has always printed: actor states in capitals
//! (`RUNNING`), template phases as upstream's ActorTemplate status
//! (`Ready`), kinds and sources in kebab-case (`not-found`, `golden`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault::Fault;

/// What a template runs (`POST /templates`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSpec {
    /// Template name (DNS-1123 subdomain).
    pub name: String,
    /// Absolute host path of the static binary that is the whole image.
    pub binary: PathBuf,
    /// Process arguments; default `["/<binary file name>"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Process environment (`KEY=VALUE`).
    #[serde(default)]
    pub env: Vec<String>,
    /// TCP port the app serves HTTP on inside the actor (default 80).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Absolute host path of a directory whose tree (directories, files,
    /// symlinks as they are) is laid into the image under the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_dir: Option<PathBuf>,
}

impl TemplateSpec {
    /// A spec with only a name and a binary (every other field defaulted,
    /// as the agent would default it when absent).
    pub fn new(name: impl Into<String>, binary: impl Into<PathBuf>) -> TemplateSpec {
        TemplateSpec {
            name: name.into(),
            binary: binary.into(),
            args: Vec::new(),
            env: Vec::new(),
            port: default_port(),
            image_dir: None,
        }
    }
}

fn default_port() -> u16 {
    80
}

/// Phase of a template, as the ActorTemplate status upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Booting the golden actor.
    ResumeGoldenActor,
    /// Waiting for the golden actor to become healthy, then checkpointing.
    WaitGoldenActor,
    /// The golden snapshot is ready.
    Ready,
    /// Golden boot failed; `reason` says why.
    Failed,
}

impl Phase {
    /// Ready or Failed: the template will not change phase any more.
    pub fn is_settled(self) -> bool {
        matches!(self, Phase::Ready | Phase::Failed)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Host paths of a template's golden actor, set once it is Ready: what a
/// raw `runsc restore` of the golden image needs (the bench).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenPaths {
    /// The golden actor's app container bundle (its `config.json`).
    pub bundle_dir: PathBuf,
    /// The golden actor's pause container bundle.
    pub pause_bundle_dir: PathBuf,
    /// The pause container's program as laid into every pause rootfs.
    pub pause_bin: PathBuf,
    /// The golden checkpoint image directory.
    pub image_dir: PathBuf,
    /// The template's binary as laid into every rootfs.
    pub image_bin: PathBuf,
}

/// A template's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStatus {
    /// Current phase.
    pub phase: Phase,
    /// The golden actor's ID (set at boot; the snapshot is usable on Ready).
    pub golden_actor_id: Option<String>,
    /// Why the template failed.
    pub reason: Option<String>,
    /// Host paths of the golden actor (bundle, image), on Ready.
    pub golden: Option<GoldenPaths>,
    /// Milliseconds: golden boot, health wait, checkpoint.
    pub timings_ms: BTreeMap<String, u64>,
    /// What the harness's checker saw in the golden sandbox just before
    /// the checkpoint, after planting a token there (`ate-check mark`):
    /// every actor restored from this golden shows the same token and
    /// `boot_id`. `None` when the agent runs without a checker.
    #[serde(default)]
    pub golden_evidence: Option<ate_checker::Evidence>,
}

/// `POST /atespaces/{a}/actors/{id}/check`: run the harness's checker
/// (`ate-check ARGS...`) in a running actor's sandbox; the answer is the
/// JSON object it printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    /// The checker's arguments, e.g. `["watch", "--ms", "1500"]`: 1 to
    /// [`CheckRequest::MAX_ARGS`] of at most [`CheckRequest::MAX_ARG_LEN`]
    /// bytes, no NUL.
    pub args: Vec<String>,
}

impl CheckRequest {
    /// Most arguments a check takes.
    pub const MAX_ARGS: usize = 8;
    /// Longest argument, in bytes.
    pub const MAX_ARG_LEN: usize = 256;

    /// A request for one of the checker's subcommands.
    pub fn new(cmd: &ate_checker::Command) -> CheckRequest {
        CheckRequest { args: cmd.args() }
    }
}

/// A template: its spec and status (`GET /templates/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateView {
    /// The spec as given (args defaulted).
    pub spec: TemplateSpec,
    /// The status.
    pub status: TemplateStatus,
}

/// `GET /templates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateList {
    /// Every template, by name.
    pub templates: Vec<TemplateView>,
}

/// Where an actor's next restore comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum SnapshotSource {
    /// The template's golden image (never run yet).
    Golden,
    /// The actor's own last checkpoint.
    Own(PathBuf),
}

impl SnapshotSource {
    /// Which kind of image this is, without its path.
    pub fn restore_source(&self) -> RestoreSource {
        match self {
            SnapshotSource::Golden => RestoreSource::Golden,
            SnapshotSource::Own(_) => RestoreSource::Own,
        }
    }
}

/// What an actor's last restore came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreSource {
    /// The template's golden image.
    Golden,
    /// The actor's own last checkpoint.
    Own,
}

impl fmt::Display for RestoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestoreSource::Golden => "golden",
            RestoreSource::Own => "own",
        })
    }
}

/// Actor states, spelled on the wire as the agent prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActorState {
    /// Not running; resumable.
    Suspended,
    /// A restore is in progress.
    Resuming,
    /// Running in a sandbox.
    Running,
    /// A checkpoint is in progress.
    Suspending,
}

impl ActorState {
    /// The wire spelling (`RUNNING`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActorState::Suspended => "SUSPENDED",
            ActorState::Resuming => "RESUMING",
            ActorState::Running => "RUNNING",
            ActorState::Suspending => "SUSPENDING",
        }
    }
}

impl fmt::Display for ActorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the API shows of an actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorView {
    /// Actor ID.
    pub id: String,
    /// Atespace.
    pub atespace: String,
    /// Template name.
    pub template: String,
    /// State.
    pub state: ActorState,
    /// The sandbox ID while running: its pause (root) container's ID.
    pub sandbox: Option<String>,
    /// The containers of its sandbox while running, pause first (empty
    /// when suspended). `runsc exec` into the actor targets the app.
    #[serde(default)]
    pub containers: Vec<ContainerView>,
    /// Where the next restore comes from.
    pub snapshot: SnapshotSource,
    /// Restores so far.
    pub restores: u64,
    /// Source of the last restore.
    pub last_restore_from: Option<RestoreSource>,
    /// Milliseconds of the last restore (runsc restore alone).
    pub last_restore_ms: Option<u64>,
    /// Milliseconds of the whole last resume (dirs, bundle, restore).
    pub last_resume_ms: Option<u64>,
    /// Host paths of this actor's directories.
    pub dirs: ActorDirs,
}

/// A container's part in an actor's sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerRole {
    /// The sandbox's root (infrastructure) container: no identity (ID-12).
    Pause,
    /// The application container: the template's binary, the identity
    /// mount at `/run/ate`.
    App,
}

impl ContainerRole {
    /// The wire spelling (`pause`, `app`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ContainerRole::Pause => "pause",
            ContainerRole::App => "app",
        }
    }
}

impl fmt::Display for ContainerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One container of a running actor's sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerView {
    /// Pause or app.
    pub role: ContainerRole,
    /// Its runsc container ID.
    pub id: String,
    /// Its OCI bundle directory (`config.json`).
    pub bundle: PathBuf,
    /// Its rootfs on the host.
    pub rootfs: PathBuf,
}

/// Host directories of one actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorDirs {
    /// Root of everything this actor owns.
    pub root: PathBuf,
    /// The app container's OCI bundle (`config.json`).
    pub bundle: PathBuf,
    /// Identity directory, bind-mounted at `/run/ate` in the app container.
    pub identity: PathBuf,
    /// The app container's rootfs.
    pub rootfs: PathBuf,
    /// The pause container's OCI bundle.
    pub pause_bundle: PathBuf,
    /// The pause container's own minimal rootfs.
    pub pause_rootfs: PathBuf,
    /// runsc debug logs, when enabled.
    pub logs: PathBuf,
}

impl ActorDirs {
    /// The agent's layout of an actor's directories under `root`.
    pub fn under(root: &Path) -> ActorDirs {
        ActorDirs {
            bundle: root.join("bundle"),
            identity: root.join("identity"),
            rootfs: root.join("rootfs"),
            pause_bundle: root.join("pause").join("bundle"),
            pause_rootfs: root.join("pause").join("rootfs"),
            logs: root.join("logs"),
            root: root.to_path_buf(),
        }
    }
}

/// `GET /atespaces/{a}/actors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorList {
    /// Every actor of the atespace.
    pub actors: Vec<ActorView>,
}

/// `POST /atespaces` body, and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAtespace {
    /// Atespace name.
    pub name: String,
}

/// `GET /atespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtespaceList {
    /// Every atespace, by name.
    pub atespaces: Vec<String>,
}

/// `POST /atespaces/{a}/actors` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewActor {
    /// Actor ID.
    pub id: String,
    /// Template name.
    pub template: String,
}

/// `POST /atespaces/{a}/actors/{id}/identity/rewrite` body (conformance
/// hook, ID-9): atomic rewrites cycling through `values` for `for_ms`
/// milliseconds or `times` writes, whichever ends first, then the actor's
/// own ID again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRewrite {
    /// Values written in turn.
    pub values: Vec<String>,
    /// How long to keep rewriting.
    pub for_ms: u64,
    /// At most this many writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
}

/// The answer to an identity rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewritten {
    /// Writes made (the final restore of the own ID not counted).
    pub writes: u64,
}

/// `GET /info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// This agent's instance ID (part of every container ID it makes).
    pub instance: String,
    /// The agent's pid.
    pub pid: u32,
    /// The agent's version.
    pub version: String,
    /// `runsc --version`.
    pub runsc_version: String,
    /// The agent's state dir.
    pub state_dir: PathBuf,
    /// The fault mode, or `null` for the healthy agent.
    pub fault: Option<Fault>,
}

/// `GET /sandboxes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandboxes {
    /// Container IDs this agent has started and not removed.
    pub sandboxes: Vec<String>,
}

/// `POST /detach`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    /// Always true.
    pub detaching: bool,
    /// The sandboxes left running (and recorded, for `gc`).
    pub sandboxes: Vec<String>,
    /// The state dir that records them.
    pub state_dir: PathBuf,
}

/// The one JSON line `ate-refagent serve` prints on stdout once it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartupLine {
    /// Control API address.
    pub control: SocketAddr,
    /// Router address.
    pub router: SocketAddr,
    /// The agent's pid.
    pub pid: u32,
    /// This agent's instance ID.
    pub instance: String,
    /// The agent's state dir (canonical).
    pub state_dir: PathBuf,
    /// `runsc --version`.
    pub runsc_version: String,
    /// Sandboxes of an earlier agent on this state dir, removed at start.
    pub orphans_removed: Vec<String>,
    /// The fault mode, or `null` for the healthy agent.
    pub fault: Option<Fault>,
}

/// What kind of error the API answered; each kind has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// 400: invalid input (name, field, body).
    Invalid,
    /// 404: no such template, atespace or actor.
    NotFound,
    /// 409: it exists already.
    AlreadyExists,
    /// 409: not allowed in the current state.
    WrongState,
    /// 500: runsc failed.
    Runtime,
    /// 500: a host operation (files, directories) failed.
    Host,
    /// 502: the path into the actor failed.
    Relay,
    /// 503: the agent is shutting down.
    ShuttingDown,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::WrongState,
        ErrorKind::Runtime,
        ErrorKind::Host,
        ErrorKind::Relay,
        ErrorKind::ShuttingDown,
    ];

    /// The HTTP status the API answers with this kind.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists | ErrorKind::WrongState => 409,
            ErrorKind::Runtime | ErrorKind::Host => 500,
            ErrorKind::Relay => 502,
            ErrorKind::ShuttingDown => 503,
        }
    }

    /// The wire spelling (`not-found`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not-found",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::WrongState => "wrong-state",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Host => "host",
            ErrorKind::Relay => "relay",
            ErrorKind::ShuttingDown => "shutting-down",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error answer's body: `{"error": ..., "kind": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message with its causes.
    pub error: String,
    /// Which kind of error.
    pub kind: ErrorKind,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_spell_as_the_agent_always_printed_them() {
        let spelled: Vec<String> = ErrorKind::ALL
            .iter()
            .map(|k| {
                serde_json::to_value(k)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            spelled,
            [
                "invalid",
                "not-found",
                "already-exists",
                "wrong-state",
                "runtime",
                "host",
                "relay",
                "shutting-down"
            ]
        );
        for k in ErrorKind::ALL {
            assert_eq!(k.to_string(), k.as_str());
            assert!((400..600).contains(&k.status()));
        }
    }

    #[test]
    fn states_spell_in_capitals() {
        for (s, w) in [
            (ActorState::Suspended, "SUSPENDED"),
            (ActorState::Resuming, "RESUMING"),
            (ActorState::Running, "RUNNING"),
            (ActorState::Suspending, "SUSPENDING"),
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(w));
            assert_eq!(s.to_string(), w);
            assert_eq!(serde_json::from_value::<ActorState>(json!(w)).unwrap(), s);
        }
    }

    /// Every key of every object, recursively.
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_field_is_snake_case() {
        let view = TemplateView {
            spec: TemplateSpec {
                image_dir: Some("/i".into()),
                ..TemplateSpec::new("t", "/b")
            },
            status: TemplateStatus {
                phase: Phase::Ready,
                golden_actor_id: Some("g".into()),
                reason: None,
                golden: Some(GoldenPaths {
                    bundle_dir: "/b".into(),
                    pause_bundle_dir: "/p".into(),
                    pause_bin: "/pb".into(),
                    image_dir: "/i".into(),
                    image_bin: "/x".into(),
                }),
                timings_ms: BTreeMap::from([("boot".into(), 1)]),
                golden_evidence: Some(ate_checker::Evidence::default()),
            },
        };
        let actor = ActorView {
            id: "a".into(),
            atespace: "s".into(),
            template: "t".into(),
            state: ActorState::Running,
            sandbox: Some("c".into()),
            containers: vec![ContainerView {
                role: ContainerRole::Pause,
                id: "c".into(),
                bundle: "/r/pause/bundle".into(),
                rootfs: "/r/pause/rootfs".into(),
            }],
            snapshot: SnapshotSource::Own("/o".into()),
            restores: 1,
            last_restore_from: Some(RestoreSource::Own),
            last_restore_ms: Some(1),
            last_resume_ms: Some(2),
            dirs: ActorDirs::under(Path::new("/r")),
        };
        let line = StartupLine {
            control: "127.0.0.1:1".parse().unwrap(),
            router: "127.0.0.1:2".parse().unwrap(),
            pid: 1,
            instance: "i".into(),
            state_dir: "/s".into(),
            runsc_version: "v".into(),
            orphans_removed: vec![],
            fault: Some(Fault::NoReset),
        };
        let mut all = Vec::new();
        for v in [
            serde_json::to_value(&view).unwrap(),
            serde_json::to_value(&actor).unwrap(),
            serde_json::to_value(&line).unwrap(),
            serde_json::to_value(IdentityRewrite {
                values: vec![],
                for_ms: 1,
                times: Some(2),
            })
            .unwrap(),
            serde_json::to_value(ErrorBody {
                error: "e".into(),
                kind: ErrorKind::Host,
            })
            .unwrap(),
        ] {
            keys(&v, &mut all);
        }
        assert!(all.contains(&"golden_actor_id".to_owned()));
        assert!(all.contains(&"timings_ms".to_owned()));
        assert!(all.contains(&"last_restore_from".to_owned()));
        for k in &all {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{k} is not snake_case"
            );
        }
        let back: TemplateView =
            serde_json::from_value(serde_json::to_value(&view).unwrap()).unwrap();
        assert_eq!(back, view);
        let back: ActorView =
            serde_json::from_value(serde_json::to_value(&actor).unwrap()).unwrap();
        assert_eq!(back, actor);
    }

    #[test]
    fn a_spec_with_only_name_and_binary_takes_the_defaults() {
        let s: TemplateSpec = serde_json::from_value(json!({"name": "t", "binary": "/b"})).unwrap();
        assert_eq!(s, TemplateSpec::new("t", "/b"));
        assert_eq!(s.port, 80);
    }
}
