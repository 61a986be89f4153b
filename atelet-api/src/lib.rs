//! atelet's gRPC API, as the node backend speaks it: the messages written
//! by us from the API facts (CONTRACT.md V; upstream's definition is
//! `internal/proto/ateletpb/atelet.proto` at 86e138f6, whose file is never
//! copied here), and a typed client over a tonic channel.
//!
//! One service, `atelet.AteomHerder`, three unary methods: `Run`,
//! `Checkpoint`, `Restore`. There is no suspend or delete: suspend is
//! `Checkpoint` (which also deletes the containers and resets the actor's
//! directories), resume is `Restore`. Field numbers are the wire contract;
//! each message lists them as upstream numbers them (gaps are fields
//! upstream reserved).

pub mod server;

use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// The service's full name (`package.Service`).
pub const SERVICE: &str = "atelet.AteomHerder";

/// `Run`: start an actor from its image on one worker (the golden).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunRequest {
    /// The worker (ateom) to run on: its pod UID.
    #[prost(string, tag = "1")]
    pub target_ateom_uid: String,
    /// The template's namespace.
    #[prost(string, tag = "3")]
    pub actor_template_namespace: String,
    /// The template's name.
    #[prost(string, tag = "4")]
    pub actor_template_name: String,
    /// The actor.
    #[prost(string, tag = "5")]
    pub actor_id: String,
    /// What to run.
    #[prost(message, optional, tag = "7")]
    pub spec: Option<WorkloadSpec>,
    /// Where the sandbox's files (runsc) come from.
    #[prost(message, optional, tag = "9")]
    pub sandbox_assets: Option<SandboxAssets>,
}

/// One downloadable file, checked by its sha256 (lowercase hex).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AssetFile {
    /// Where to fetch it when it is not cached.
    #[prost(string, tag = "1")]
    pub url: String,
    /// Its sha256, lowercase hex; also its cache key.
    #[prost(string, tag = "2")]
    pub sha256: String,
}

/// The files of one architecture, by asset name (`runsc`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArchAssets {
    /// Asset name to file.
    #[prost(map = "string, message", tag = "1")]
    pub files: std::collections::HashMap<String, AssetFile>,
}

/// The sandbox class and its files per architecture (Go's `GOARCH`
/// spelling: `amd64`, `arm64`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxAssets {
    /// E.g. `gvisor`.
    #[prost(string, tag = "1")]
    pub sandbox_class: String,
    /// Architecture to files.
    #[prost(map = "string, message", tag = "2")]
    pub assets: std::collections::HashMap<String, ArchAssets>,
}

/// The actor's workload: containers, the pause image, volumes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadSpec {
    /// The application containers.
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
    /// The pause (infrastructure) container's image.
    #[prost(string, tag = "2")]
    pub pause_image: String,
    /// Volumes the containers may mount.
    #[prost(message, repeated, tag = "3")]
    pub volumes: Vec<Volume>,
}

/// A volume's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VolumeType {
    /// Unset.
    Unspecified = 0,
    /// A directory that survives the actor's snapshots.
    DurableDir = 1,
}

/// A durable directory's (empty) settings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DurableDirVolume {}

/// A volume.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Volume {
    /// Its name, as mounts refer to it.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type.
    #[prost(enumeration = "VolumeType", tag = "2")]
    pub r#type: i32,
    /// Its source.
    #[prost(oneof = "volume::Source", tags = "3")]
    pub source: Option<volume::Source>,
}

/// [`Volume`]'s source.
pub mod volume {
    /// Where a volume's bytes come from.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Source {
        /// A durable directory.
        #[prost(message, tag = "3")]
        DurableDir(super::DurableDirVolume),
    }
}

/// A volume mounted into a container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VolumeMount {
    /// The volume's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Where in the container.
    #[prost(string, tag = "2")]
    pub mount_path: String,
}

/// An application container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    /// Its name within the actor.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its image reference.
    #[prost(string, tag = "2")]
    pub image: String,
    /// The command (argv); empty: the image's.
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    /// Extra environment.
    #[prost(message, repeated, tag = "4")]
    pub env: Vec<EnvEntry>,
    /// Readiness check.
    #[prost(message, optional, tag = "5")]
    pub readyz: Option<Readyz>,
    /// Volume mounts.
    #[prost(message, repeated, tag = "6")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// One environment variable.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvEntry {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Readiness check of a container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Readyz {
    /// An HTTP GET inside the actor.
    #[prost(message, optional, tag = "1")]
    pub http_get: Option<HttpGetAction>,
}

/// An HTTP GET readiness check.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpGetAction {
    /// Path, e.g. `/healthz`.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Port inside the actor.
    #[prost(int32, tag = "2")]
    pub port: i32,
}

/// Every answer of this API is empty: success is the status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// Where a snapshot is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CheckpointType {
    /// Unset.
    Unspecified = 0,
    /// On the node, per actor ID: another actor cannot restore from it.
    Local = 1,
    /// At an external URI prefix (`s3://bucket/path/`): the golden
    /// fan-out needs these.
    External = 2,
}

/// How much a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SnapshotScope {
    /// Unset.
    Unspecified = 0,
    /// The whole sandbox (memory and filesystems).
    Full = 1,
    /// Filesystem data only (needs runsc's `fscheckpoint`, which 20240729
    /// lacks).
    Data = 2,
}

/// A local snapshot location.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LocalConfig {
    /// A path prefix on the node.
    #[prost(string, tag = "1")]
    pub snapshot_prefix: String,
}

/// An external snapshot location.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExternalConfig {
    /// A URI prefix such as `s3://bucket/path/` (host and path are used).
    #[prost(string, tag = "1")]
    pub snapshot_uri_prefix: String,
}

/// The location of a snapshot, one of two kinds.
pub mod snapshot {
    /// Local or external.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Config {
        /// On the node.
        #[prost(message, tag = "10")]
        Local(super::LocalConfig),
        /// At a URI prefix.
        #[prost(message, tag = "11")]
        External(super::ExternalConfig),
    }
}

/// `Checkpoint` and `Restore` carry the same fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotRequest {
    /// The worker.
    #[prost(string, tag = "1")]
    pub target_ateom_uid: String,
    /// The template's namespace.
    #[prost(string, tag = "3")]
    pub actor_template_namespace: String,
    /// The template's name.
    #[prost(string, tag = "4")]
    pub actor_template_name: String,
    /// The actor.
    #[prost(string, tag = "5")]
    pub actor_id: String,
    /// Its workload.
    #[prost(message, optional, tag = "7")]
    pub spec: Option<WorkloadSpec>,
    /// Local or external.
    #[prost(enumeration = "CheckpointType", tag = "9")]
    pub r#type: i32,
    /// The location.
    #[prost(oneof = "snapshot::Config", tags = "10, 11")]
    pub config: Option<snapshot::Config>,
    /// Full or data.
    #[prost(enumeration = "SnapshotScope", tag = "12")]
    pub scope: i32,
}

/// An actor on a worker: the fields every request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The worker's pod UID.
    pub ateom_uid: String,
    /// The template's namespace.
    pub namespace: String,
    /// The template's name.
    pub template: String,
    /// The actor.
    pub actor_id: String,
}

impl SnapshotRequest {
    /// A FULL snapshot at the external URI prefix `uri_prefix`.
    pub fn external(t: &Target, spec: &WorkloadSpec, uri_prefix: &str) -> SnapshotRequest {
        SnapshotRequest {
            target_ateom_uid: t.ateom_uid.clone(),
            actor_template_namespace: t.namespace.clone(),
            actor_template_name: t.template.clone(),
            actor_id: t.actor_id.clone(),
            spec: Some(spec.clone()),
            r#type: CheckpointType::External as i32,
            config: Some(snapshot::Config::External(ExternalConfig {
                snapshot_uri_prefix: uri_prefix.to_owned(),
            })),
            scope: SnapshotScope::Full as i32,
        }
    }
}

/// A failed call: the method, the actor, and atelet's status.
#[derive(Debug, thiserror::Error)]
#[error("atelet {method} of {actor} on worker {worker}: {code:?}: {message}")]
pub struct CallError {
    /// `Run`, `Checkpoint`, `Restore`.
    pub method: &'static str,
    /// The actor.
    pub actor: String,
    /// The worker.
    pub worker: String,
    /// gRPC status code.
    pub code: tonic::Code,
    /// atelet's message.
    pub message: String,
}

/// A client of one atelet.
#[derive(Clone)]
pub struct AteletClient {
    grpc: tonic::client::Grpc<Channel>,
    deadline: Duration,
}

impl AteletClient {
    /// A client over `channel`; every call has `deadline`.
    pub fn new(channel: Channel, deadline: Duration) -> AteletClient {
        AteletClient {
            grpc: tonic::client::Grpc::new(channel),
            deadline,
        }
    }

    async fn unary<Req>(
        &self,
        method: &'static str,
        actor: &str,
        worker: &str,
        req: Req,
    ) -> Result<(), CallError>
    where
        Req: prost::Message + Send + Sync + 'static,
    {
        let err = |s: tonic::Status| CallError {
            method,
            actor: actor.to_owned(),
            worker: worker.to_owned(),
            code: s.code(),
            message: s.message().to_owned(),
        };
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|e| {
            err(tonic::Status::unavailable(format!(
                "atelet is not reachable: {e}"
            )))
        })?;
        let mut request = tonic::Request::new(req);
        request.set_timeout(self.deadline);
        let path =
            PathAndQuery::try_from(format!("/{SERVICE}/{method}")).expect("a valid method path");
        let codec = tonic_prost::ProstCodec::<Req, Empty>::default();
        match grpc.unary(request, path, codec).await {
            Ok(_) => Ok(()),
            // tonic's client reports its own deadline as CANCELLED.
            Err(s) if s.code() == tonic::Code::Cancelled && s.message() == "Timeout expired" => {
                Err(err(tonic::Status::deadline_exceeded(format!(
                    "no answer within the call's deadline of {:?}",
                    self.deadline
                ))))
            }
            Err(s) => Err(err(s)),
        }
    }

    /// `Run` (the golden actor).
    pub async fn run(&self, req: RunRequest) -> Result<(), CallError> {
        let (a, w) = (req.actor_id.clone(), req.target_ateom_uid.clone());
        self.unary("Run", &a, &w, req).await
    }

    /// `Checkpoint` (suspend: the containers are deleted too).
    pub async fn checkpoint(&self, req: SnapshotRequest) -> Result<(), CallError> {
        let (a, w) = (req.actor_id.clone(), req.target_ateom_uid.clone());
        self.unary("Checkpoint", &a, &w, req).await
    }

    /// `Restore` (resume).
    pub async fn restore(&self, req: SnapshotRequest) -> Result<(), CallError> {
        let (a, w) = (req.actor_id.clone(), req.target_ateom_uid.clone());
        self.unary("Restore", &a, &w, req).await
    }
}
