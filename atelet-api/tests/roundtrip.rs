//! The client against the hand-written server over real HTTP/2 on
//! loopback: every field arrives, failures carry atelet's status with the
//! method, actor and worker, deadlines hold, unknown methods are refused.
//! And the field numbers on the wire are upstream's (CONTRACT.md V).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ate_atelet_api::server::{AteomHerder, AteomHerderServer};
use ate_atelet_api::*;
use prost::Message;
use tonic::transport::{Channel, Server};
use tonic::Status;

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    runs: Mutex<Vec<RunRequest>>,
    snapshots: Mutex<Vec<SnapshotRequest>>,
}

#[async_trait::async_trait]
impl AteomHerder for Recorder {
    async fn run(self: Arc<Self>, req: RunRequest) -> Result<(), Status> {
        self.calls.lock().unwrap().push("Run".into());
        self.runs.lock().unwrap().push(req);
        Ok(())
    }
    async fn checkpoint(self: Arc<Self>, req: SnapshotRequest) -> Result<(), Status> {
        self.calls.lock().unwrap().push("Checkpoint".into());
        if req.actor_id == "slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        self.snapshots.lock().unwrap().push(req);
        Ok(())
    }
    async fn restore(self: Arc<Self>, req: SnapshotRequest) -> Result<(), Status> {
        self.calls.lock().unwrap().push("Restore".into());
        if req.actor_id == "missing" {
            return Err(Status::not_found("no manifest.json under s3://b/p/"));
        }
        self.snapshots.lock().unwrap().push(req);
        Ok(())
    }
}

async fn serve(rec: Arc<Recorder>) -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        Server::builder()
            .add_service(AteomHerderServer::new(rec))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(l),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (ch, stop)
}

fn spec() -> WorkloadSpec {
    WorkloadSpec {
        containers: vec![Container {
            name: "probe".into(),
            image: "127.0.0.1:5000/probe@sha256:aa".into(),
            command: vec!["/ate-probe".into()],
            env: vec![EnvEntry {
                name: "ATE_PROBE_PORT".into(),
                value: "80".into(),
            }],
            readyz: Some(Readyz {
                http_get: Some(HttpGetAction {
                    path: "/healthz".into(),
                    port: 80,
                }),
            }),
            volume_mounts: vec![],
        }],
        pause_image: "127.0.0.1:5000/pause@sha256:bb".into(),
        volumes: vec![],
    }
}

fn target(id: &str) -> Target {
    Target {
        ateom_uid: "w-0".into(),
        namespace: "ate-conf-r1".into(),
        template: "probe".into(),
        actor_id: id.into(),
    }
}

#[tokio::test]
async fn every_field_arrives_and_failures_name_the_call() {
    let rec = Arc::new(Recorder::default());
    let (ch, _stop) = serve(rec.clone()).await;
    let client = AteletClient::new(ch, Duration::from_secs(1));
    let mut files = HashMap::new();
    files.insert(
        "runsc".to_owned(),
        AssetFile {
            url: "file:///nowhere".into(),
            sha256: "ab".repeat(32),
        },
    );
    let mut assets = HashMap::new();
    assets.insert("amd64".to_owned(), ArchAssets { files });
    let run = RunRequest {
        target_ateom_uid: "w-0".into(),
        actor_template_namespace: "ate-conf-r1".into(),
        actor_template_name: "probe".into(),
        actor_id: "golden-1".into(),
        spec: Some(spec()),
        sandbox_assets: Some(SandboxAssets {
            sandbox_class: "gvisor".into(),
            assets,
        }),
    };
    client.run(run.clone()).await.unwrap();
    let cp = SnapshotRequest::external(&target("golden-1"), &spec(), "s3://ate/ate-conf-r1/probe/");
    client.checkpoint(cp.clone()).await.unwrap();
    client
        .restore(SnapshotRequest::external(
            &target("probe-alpha"),
            &spec(),
            "s3://ate/ate-conf-r1/probe/",
        ))
        .await
        .unwrap();
    assert_eq!(*rec.runs.lock().unwrap(), vec![run]);
    assert_eq!(rec.snapshots.lock().unwrap()[0], cp);
    assert_eq!(rec.snapshots.lock().unwrap()[1].actor_id, "probe-alpha");
    assert_eq!(
        rec.snapshots.lock().unwrap()[1].r#type,
        CheckpointType::External as i32
    );

    let e = client
        .restore(SnapshotRequest::external(
            &target("missing"),
            &spec(),
            "s3://b/p/",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code, tonic::Code::NotFound);
    let text = e.to_string();
    for part in [
        "Restore",
        "missing",
        "w-0",
        "no manifest.json under s3://b/p/",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }

    let e = client
        .checkpoint(SnapshotRequest::external(
            &target("slow"),
            &spec(),
            "s3://b/p/",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code, tonic::Code::DeadlineExceeded, "{e}");
    assert_eq!(
        *rec.calls.lock().unwrap(),
        ["Run", "Checkpoint", "Restore", "Restore", "Checkpoint"]
    );
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() {
    let (ch, _stop) = serve(Arc::new(Recorder::default())).await;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Empty, Empty>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/atelet.AteomHerder/Delete");
    let e = grpc
        .unary(tonic::Request::new(Empty {}), path, codec)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
}

/// The wire keys (field number << 3 | wire type) of the fields the node
/// backend sets, as upstream numbers them: a renumbered field would be
/// read as another (or dropped) by the real atelet.
#[test]
fn field_numbers_are_upstreams() {
    fn key(field: u32, wire: u32) -> u8 {
        u8::try_from((field << 3) | wire).unwrap()
    }
    let one = |r: RunRequest| r.encode_to_vec();
    let only = |bytes: Vec<u8>| bytes[0];
    assert_eq!(
        only(one(RunRequest {
            target_ateom_uid: "w".into(),
            ..Default::default()
        })),
        key(1, 2)
    );
    assert_eq!(
        only(one(RunRequest {
            actor_template_namespace: "n".into(),
            ..Default::default()
        })),
        key(3, 2)
    );
    assert_eq!(
        only(one(RunRequest {
            actor_template_name: "t".into(),
            ..Default::default()
        })),
        key(4, 2)
    );
    assert_eq!(
        only(one(RunRequest {
            actor_id: "a".into(),
            ..Default::default()
        })),
        key(5, 2)
    );
    assert_eq!(
        only(one(RunRequest {
            spec: Some(WorkloadSpec::default()),
            ..Default::default()
        })),
        key(7, 2)
    );
    assert_eq!(
        only(one(RunRequest {
            sandbox_assets: Some(SandboxAssets::default()),
            ..Default::default()
        })),
        key(9, 2)
    );
    let snap = |r: SnapshotRequest| r.encode_to_vec()[0];
    assert_eq!(
        snap(SnapshotRequest {
            r#type: 2,
            ..Default::default()
        }),
        key(9, 0)
    );
    assert_eq!(
        snap(SnapshotRequest {
            scope: 1,
            ..Default::default()
        }),
        key(12, 0)
    );
    assert_eq!(
        snap(SnapshotRequest {
            config: Some(snapshot::Config::Local(LocalConfig::default())),
            ..Default::default()
        }),
        key(10, 2)
    );
    assert_eq!(
        snap(SnapshotRequest {
            config: Some(snapshot::Config::External(ExternalConfig::default())),
            ..Default::default()
        }),
        key(11, 2)
    );
    let c = |c: Container| c.encode_to_vec()[0];
    assert_eq!(
        c(Container {
            readyz: Some(Readyz::default()),
            ..Default::default()
        }),
        key(5, 2)
    );
    assert_eq!(
        c(Container {
            volume_mounts: vec![VolumeMount::default()],
            ..Default::default()
        }),
        key(6, 2)
    );
    assert_eq!(
        WorkloadSpec {
            pause_image: "p".into(),
            ..Default::default()
        }
        .encode_to_vec()[0],
        key(2, 2)
    );
    assert_eq!(
        HttpGetAction {
            port: 80,
            ..Default::default()
        }
        .encode_to_vec()[0],
        key(2, 0)
    );
    assert_eq!(CheckpointType::External as i32, 2);
    assert_eq!(SnapshotScope::Full as i32, 1);
}
