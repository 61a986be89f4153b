//! The node backend's namespaces, for real (root): a private mount and
//! network namespace for the node, a pod netns per worker with `eth0`, the
//! `/proc/sys/net` mask, sockets made in the node's network, and a teardown
//! that leaves nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ate_cmd::{Cmd, Stdio};
use ate_harness::backend::node::ns::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the node namespace tests make namespaces, mounts and veth pairs: run them as root"
    );
}

async fn out(cmd: Cmd) -> String {
    cmd.timeout(Duration::from_secs(10))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .stdout_str()
        .trim()
        .to_owned()
}

async fn http_get(node: &Node, addr: SocketAddr) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match node.connect(addr).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot connect to {addr} from the node's network: {e}"),
        }
    };
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("no answer within 5 s")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn node_and_pods_are_private_and_leave_nothing() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_has_var_lib = Path::new("/var/lib/ateom-gvisor").exists();
    let node = Node::create(tmp.path(), &["w-a".into(), "w-b".into()])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pids = node.holder_pids();
    assert_eq!(
        pids.len(),
        3,
        "one holder for the node, one per pod: {pids:?}"
    );
    let (a, b) = (&node.workers()[0], &node.workers()[1]);

    // Each pod has its eth0 with its own link-local address.
    for w in [a, b] {
        let addrs = out(node.in_worker(
            w,
            "ip",
            &[
                "-4".into(),
                "-o".into(),
                "addr".into(),
                "show".into(),
                "dev".into(),
                "eth0".into(),
            ],
        ))
        .await;
        assert!(
            addrs.contains(&format!("inet {}/30", w.pod_addr)),
            "pod {} has no {} on eth0: {addrs}",
            w.uid,
            w.pod_addr
        );
    }
    assert_ne!(a.pod_addr, b.pod_addr);

    // The mask: runsc's root-netns test file is gone in the node's mount
    // namespace, and ip_forward lands in the writer's own netns.
    let rmem = node
        .in_worker(a, "cat", &["/proc/sys/net/core/rmem_default".into()])
        .timeout(Duration::from_secs(10))
        .run()
        .await;
    assert!(
        rmem.is_err(),
        "/proc/sys/net/core/rmem_default is still visible in the node"
    );
    let fwd = "/proc/sys/net/ipv4/ip_forward".to_owned();
    let b_before = out(node.in_worker(b, "cat", std::slice::from_ref(&fwd))).await;
    let flipped = if b_before == "1" { "0" } else { "1" };
    node.in_worker(a, "tee", std::slice::from_ref(&fwd))
        .stdin_bytes(flipped.as_bytes().to_vec())
        .stdout(Stdio::null())
        .timeout(Duration::from_secs(10))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        out(node.in_worker(a, "cat", std::slice::from_ref(&fwd))).await,
        flipped
    );
    assert_eq!(
        out(node.in_worker(b, "cat", std::slice::from_ref(&fwd))).await,
        b_before,
        "pod b's ip_forward changed with a's"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward,
        "the host's ip_forward changed"
    );

    // /var/lib/ateom-gvisor in the node is this run's directory.
    out(node.in_node("touch", &["/var/lib/ateom-gvisor/written-in-node".into()])).await;
    assert!(node.var_lib().join("written-in-node").exists());
    assert_eq!(
        Path::new("/var/lib/ateom-gvisor").exists(),
        host_has_var_lib,
        "the host's /var/lib changed"
    );

    // A server in pod a is reached from the node's network, not the host's.
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "served by pod w-a").unwrap();
    let listen = format!("{}:80", a.pod_addr);
    let httpd = node
        .in_worker(
            a,
            "/usr/bin/busybox",
            &[
                "httpd".into(),
                "-f".into(),
                "-p".into(),
                listen.clone(),
                "-h".into(),
                www.display().to_string(),
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let addr: SocketAddr = listen.parse().unwrap();
    let body = http_get(&node, addr).await;
    assert!(body.contains("served by pod w-a"), "{body}");
    // From the host's network the same address is not the pod (this
    // machine's egress may answer for any address: judge by the body).
    let from_host = tokio::time::timeout(Duration::from_secs(2), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    })
    .await;
    if let Ok(Ok(text)) = &from_host {
        assert!(
            !text.contains("served by pod w-a"),
            "the pod's address {addr} is reachable from the host's network"
        );
    }

    // A listener made in the node's network is on the node's loopback.
    let l = node.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accept = tokio::spawn(async move { l.accept().await.map(|_| ()) });
    node.connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("node loopback");
    accept.await.unwrap().unwrap();

    // A host-loopback forward leads to the pod too (clients that dial a
    // plain address: tonic, reqwest).
    let fwd = node.forward(addr).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(fwd.local_addr())
        .await
        .unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf).contains("served by pod w-a"));
    drop(fwd);

    httpd.terminate(Duration::from_secs(2)).await.unwrap();
    node.teardown().await.unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(
        left.is_empty(),
        "namespace holders still alive after teardown: {left:?}"
    );
    let host_links = out(Cmd::new("ip").args(["-o", "link", "show"])).await;
    assert!(
        !host_links.contains("ate-w"),
        "a veth of the node is on the host: {host_links}"
    );
}

#[tokio::test]
async fn bad_worker_counts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Node::create(tmp.path(), &[])
        .await
        .err()
        .expect("0 workers refused");
    assert!(
        format!("{e:#}").contains("1 to 254 workers, 0 were asked for"),
        "{e:#}"
    );
}
