//! The node's namespaces: one private mount and network namespace for the
//! node (what atelet and every worker see), and one "pod" network namespace
//! per worker, joined to the node by a veth pair whose pod end is `eth0`
//! with a link-local IPv4 address (CONTRACT.md V: ateom-gvisor needs an
//! `eth0` with an IPv4 address in its pod netns; upstream's pods get theirs
//! from the CNI).
//!
//! **Nothing of the host's is touched.** Each namespace is held by a holder
//! process of ours (`unshare ... -- cat`, standard input a pipe we own):
//! the namespaces live as long as their holders, which end when we close
//! that pipe, or when this process dies, so a crashed run leaves no
//! namespace behind unless a process it started inside still runs. No
//! `ip netns` name is made (that would write to the host's `/run/netns`);
//! every namespace is reached through `/proc/<holder>/ns/*`. In the node's
//! mount namespace (propagation private):
//!
//! - `/run` and `/var/lib` are fresh tmpfs mounts, with `/run/netns` and
//!   `/var/lib/ateom-gvisor` a bind of this run's own directories: atelet
//!   and ateom hardcode those two paths (`internal/ateompath/ateompath.go`)
//!   and must not see or change the host's;
//! - `/proc/sys/net` is masked the way CONTRACT.md V measured works with an
//!   unpatched runsc 20240729: the real `/proc/sys` is bound aside first, a
//!   tmpfs hides `/proc/sys/net` (so runsc's root-netns test,
//!   `access("/proc/sys/net/core/rmem_default")`, fails in every netns), and
//!   `ipv4/ip_forward` in it is a *symlink* into the real tree, resolved in
//!   the opener's netns, so ateom's `ip_forward` write still lands in its
//!   own pod netns.
//!
//! Every step is an argument vector (`unshare`, `nsenter`, `mount`, `ip`),
//! and every process is ended by its own PID ([`Spawned`] kills its process
//! group when dropped). Sockets into the node's network are made on a
//! thread of their own that joins the node netns ([`Node::connect`],
//! [`Node::listen`]); no other thread ever changes namespace.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ate_cmd::{Cmd, Spawned, Stdio};
use tracing::{debug, warn};

/// How long one namespace set-up step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A process holding namespaces open: `unshare <flags> -- cat`, whose
/// standard input is a pipe we own. Closing it (or our death) ends `cat`.
struct Holder {
    what: String,
    child: Spawned,
}

impl Holder {
    /// Starts `cmd` (an `unshare <flags> -- cat`, perhaps behind
    /// `nsenter`) and waits until `cat` runs, which is after unshare(2):
    /// the pid then names the new namespaces.
    async fn start(what: &str, cmd: Cmd) -> Result<Holder> {
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the holder of the {what}"))?;
        let holder = Holder {
            what: what.to_owned(),
            child,
        };
        let ours = std::fs::read_link("/proc/self/ns/net")?;
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            match std::fs::read_link(holder.ns("net")) {
                Ok(theirs) if theirs != ours => {
                    let exe = std::fs::read_link(format!("/proc/{}/exe", holder.pid()))
                        .unwrap_or_default();
                    if exe.file_name().is_some_and(|n| n == "cat") {
                        break;
                    }
                }
                Ok(_) | Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the holder of the {what} (pid {}) did not enter its namespaces within {STEP_TIMEOUT:?}",
                    holder.pid()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        debug!(what, pid = holder.pid(), "namespace holder up");
        Ok(holder)
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `/proc/<pid>/ns/<kind>`.
    fn ns(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid()))
    }

    /// Ends the holder: its standard input closed, then killed by PID if it
    /// does not end at once.
    async fn stop(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        self.child
            .terminate(Duration::from_secs(2))
            .await
            .with_context(|| format!("cannot stop the holder of the {}", self.what))?;
        Ok(())
    }
}

/// One worker's pod network namespace.
pub struct Worker {
    /// The worker's pod UID (ateom's `--pod-uid`).
    pub uid: String,
    /// The pod's address on its `eth0` (what upstream's router targets).
    pub pod_addr: Ipv4Addr,
    /// The node's end of the veth pair.
    pub node_addr: Ipv4Addr,
    /// The node end's interface name.
    pub node_if: String,
    holder: Holder,
}

impl Worker {
    /// `/proc/<holder>/ns/net` of this pod.
    pub fn netns(&self) -> PathBuf {
        self.holder.ns("net")
    }
}

/// The node: its namespaces, its directories and its workers' pods.
pub struct Node {
    dir: PathBuf,
    /// `None` only after teardown.
    holder: Option<Holder>,
    workers: Vec<Worker>,
}

/// The link-local /30 of worker `i` (0-based): node `169.254.<i+1>.1`, pod
/// `.2`. At most 254 workers.
fn worker_addrs(i: usize) -> (Ipv4Addr, Ipv4Addr) {
    let third = u8::try_from(i + 1).expect("at most 254 workers");
    (
        Ipv4Addr::new(169, 254, third, 1),
        Ipv4Addr::new(169, 254, third, 2),
    )
}

impl Node {
    /// The most workers one node can have (one link-local /30 each).
    pub const MAX_WORKERS: usize = 254;

    /// Makes the node's namespaces under `dir` (this run's own directory,
    /// created if missing) with `workers` pods named by `uids`.
    pub async fn create(dir: &Path, uids: &[String]) -> Result<Node> {
        if uids.is_empty() || uids.len() > Self::MAX_WORKERS {
            bail!(
                "a node needs 1 to {} workers, {} were asked for",
                Self::MAX_WORKERS,
                uids.len()
            );
        }
        for d in ["var-lib-ateom-gvisor", "run-netns", "proc-sys"] {
            std::fs::create_dir_all(dir.join(d))
                .with_context(|| format!("cannot create {}", dir.join(d).display()))?;
        }
        let holder = Holder::start(
            "node's mount and network namespaces",
            Cmd::new("unshare").args(["--mount", "--net", "--propagation", "private", "--", "cat"]),
        )
        .await?;
        let mut node = Node {
            dir: dir.to_owned(),
            holder: Some(holder),
            workers: Vec::new(),
        };
        if let Err(e) = node.set_up(uids).await {
            if let Err(t) = node.teardown_inner().await {
                warn!(error = %format!("{t:#}"), "teardown after a failed node set-up");
            }
            return Err(e);
        }
        Ok(node)
    }

    async fn set_up(&mut self, uids: &[String]) -> Result<()> {
        let var_lib = self.dir.join("var-lib-ateom-gvisor");
        let run_netns = self.dir.join("run-netns");
        let real_sys = self.dir.join("proc-sys");
        let s = |p: &Path| p.display().to_string();
        // Order matters: the real /proc/sys is bound aside before its net
        // entry is hidden; the run dir's paths are read before /run and
        // /var/lib are covered (they live under the workspace's target/).
        let steps: Vec<Vec<String>> = vec![
            argv(&["mount", "--bind", "/proc/sys", &s(&real_sys)]),
            argv(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "mode=0755",
                "ate-node-run",
                "/run",
            ]),
            argv(&["mkdir", "-p", "/run/netns"]),
            argv(&["mount", "--bind", &s(&run_netns), "/run/netns"]),
            argv(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "mode=0755",
                "ate-node-var-lib",
                "/var/lib",
            ]),
            argv(&["mkdir", "-p", "/var/lib/ateom-gvisor"]),
            argv(&["mount", "--bind", &s(&var_lib), "/var/lib/ateom-gvisor"]),
            argv(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "mode=0555",
                "ate-node-proc-sys-net",
                "/proc/sys/net",
            ]),
            argv(&["mkdir", "/proc/sys/net/ipv4"]),
            argv(&[
                "ln",
                "-s",
                &format!("{}/net/ipv4/ip_forward", s(&real_sys)),
                "/proc/sys/net/ipv4/ip_forward",
            ]),
            argv(&["ip", "link", "set", "lo", "up"]),
        ];
        for step in &steps {
            self.in_node(&step[0], &step[1..])
                .timeout(STEP_TIMEOUT)
                .run()
                .await?;
        }
        for (i, uid) in uids.iter().enumerate() {
            let w = self.add_worker(i, uid).await?;
            self.workers.push(w);
        }
        Ok(())
    }

    async fn add_worker(&self, i: usize, uid: &str) -> Result<Worker> {
        let holder = Holder::start(
            &format!("pod network namespace of worker {uid}"),
            self.in_node("unshare", &argv(&["--net", "--", "cat"])),
        )
        .await?;
        let (node_addr, pod_addr) = worker_addrs(i);
        let node_if = format!("ate-w{i}");
        let pod = holder.pid().to_string();
        let in_node: Vec<Vec<String>> = vec![
            argv(&[
                "ip", "link", "add", &node_if, "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ]),
            argv(&[
                "ip",
                "addr",
                "add",
                &format!("{node_addr}/30"),
                "dev",
                &node_if,
            ]),
            argv(&["ip", "link", "set", &node_if, "up"]),
        ];
        for step in &in_node {
            self.in_node(&step[0], &step[1..])
                .timeout(STEP_TIMEOUT)
                .run()
                .await?;
        }
        let worker = Worker {
            uid: uid.to_owned(),
            pod_addr,
            node_addr,
            node_if,
            holder,
        };
        let in_pod: Vec<Vec<String>> = vec![
            argv(&[
                "ip",
                "addr",
                "add",
                &format!("{pod_addr}/30"),
                "dev",
                "eth0",
            ]),
            argv(&["ip", "link", "set", "eth0", "up"]),
            argv(&["ip", "link", "set", "lo", "up"]),
            argv(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &node_addr.to_string(),
            ]),
        ];
        for step in &in_pod {
            self.in_worker(&worker, &step[0], &step[1..])
                .timeout(STEP_TIMEOUT)
                .run()
                .await?;
        }
        Ok(worker)
    }

    /// `nsenter --mount=<node> --net=<net> -- program args...`.
    fn nsenter(&self, net: &Path, program: &str, args: &[String]) -> Cmd {
        Cmd::new("nsenter")
            .arg(format!("--mount={}", self.holder().ns("mnt").display()))
            .arg(format!("--net={}", net.display()))
            .arg("--")
            .arg(program)
            .args(args)
    }

    /// `program args...` in the node's mount and network namespaces (by
    /// `nsenter`, which execs it: the PID is the program's). Environment and
    /// working directory set on the returned [`Cmd`] reach the program.
    pub fn in_node(&self, program: &str, args: &[String]) -> Cmd {
        self.nsenter(&self.holder().ns("net"), program, args)
    }

    /// `program args...` in worker `w`'s pod netns and the node's mount
    /// namespace (where ateom-gvisor runs).
    pub fn in_worker(&self, w: &Worker, program: &str, args: &[String]) -> Cmd {
        self.nsenter(&w.netns(), program, args)
    }

    fn holder(&self) -> &Holder {
        self.holder
            .as_ref()
            .expect("the node is used after its teardown")
    }

    /// The PIDs of the namespace holders (the node's first), for a record
    /// of what this run made.
    pub fn holder_pids(&self) -> Vec<u32> {
        self.holder
            .iter()
            .chain(self.workers.iter().map(|w| &w.holder))
            .map(Holder::pid)
            .collect()
    }

    /// The workers' pods.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// This run's directory behind `/var/lib/ateom-gvisor` in the node.
    pub fn var_lib(&self) -> PathBuf {
        self.dir.join("var-lib-ateom-gvisor")
    }

    /// `/proc/<holder>/ns/net` of the node.
    pub fn netns(&self) -> PathBuf {
        self.holder().ns("net")
    }

    /// A TCP connection to `addr` as seen from the node's network.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        connect_in(&self.netns(), addr).await
    }

    /// A port on the host's loopback that leads to `target` in the node's
    /// network, for clients that dial a plain address (tonic, reqwest): each
    /// accepted connection is joined to a new one made in the node's netns.
    /// It ends when the [`Forward`] is dropped.
    pub async fn forward(&self, target: SocketAddr) -> std::io::Result<Forward> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let local = listener.local_addr()?;
        let netns = self.netns();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let netns = netns.clone();
                tokio::spawn(async move {
                    match connect_in(&netns, target).await {
                        Ok(mut outbound) => {
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(e) => {
                            debug!(%target, error = %e, "forward into the node: connect failed")
                        }
                    }
                });
            }
        });
        Ok(Forward { local, task })
    }

    /// A TCP listener on `addr` in the node's network (e.g. the S3 endpoint
    /// on the node's loopback).
    pub async fn listen(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let std = in_netns(&self.netns(), move || std::net::TcpListener::bind(addr)).await?;
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    }

    /// Kills (SIGKILL) every process still in the node's mount namespace
    /// except the namespace holders, and every process whose command line
    /// holds `marker` (a path only this run uses: runsc may re-execute
    /// itself into a mount namespace of its own), and waits until each is
    /// gone: after atelet and the ateoms are stopped, a runsc call one of
    /// them had in flight (a `runsc delete`, say) can outlive it.
    /// Everything in that namespace was started by this run; nothing else
    /// can be in it. Returns `pid: command` of each one killed.
    pub async fn kill_remaining(&self, marker: &str) -> Result<Vec<String>> {
        let mnt =
            std::fs::read_link(self.holder().ns("mnt")).context("the node's mount namespace")?;
        let holders = self.holder_pids();
        let inside = || -> Vec<(u32, String)> {
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| !holders.contains(pid) && *pid != std::process::id())
                .filter_map(|pid| {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let cmd = String::from_utf8_lossy(&cmd)
                        .replace('\0', " ")
                        .trim()
                        .to_owned();
                    let in_node =
                        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|m| m == mnt);
                    (in_node || (!marker.is_empty() && cmd.contains(marker))).then_some((pid, cmd))
                })
                .collect()
        };
        let found = inside();
        for (pid, _) in &found {
            if let Some(p) = i32::try_from(*pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = inside();
            if left.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= until {
                bail!("processes still in the node 5 s after SIGKILL: {left:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(found
            .into_iter()
            .map(|(p, c)| format!("{p}: {c}"))
            .collect())
    }

    /// Ends every holder (workers first); the namespaces, the veth pairs
    /// and every mount of the node go with them. Fails naming each holder
    /// that could not be stopped.
    pub async fn teardown(mut self) -> Result<()> {
        self.teardown_inner().await
    }

    async fn teardown_inner(&mut self) -> Result<()> {
        let mut failed = Vec::new();
        for w in self.workers.drain(..) {
            if let Err(e) = w.holder.stop().await {
                failed.push(format!("{e:#}"));
            }
        }
        if let Some(holder) = self.holder.take() {
            if let Err(e) = holder.stop().await {
                failed.push(format!("{e:#}"));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("node teardown: {}", failed.join("; "))
        }
    }
}

/// A loopback port leading into the node's network ([`Node::forward`]).
pub struct Forward {
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Forward {
    /// The host-loopback address to dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP connection to `addr` made in the network namespace at `netns`.
pub async fn connect_in(netns: &Path, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let std = in_netns(netns, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .await?;
    std.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std)
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Runs `f` on a new thread that first joins the network namespace at
/// `netns`; the thread ends with `f`, so no pooled thread is ever left in
/// another namespace. Sockets keep the namespace they were made in.
async fn in_netns<T, F>(netns: &Path, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let ns = File::open(netns)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ate-node-netns".into())
        .spawn(move || {
            let r = rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(std::io::Error::from)
            .and_then(|()| f());
            let _ = tx.send(r);
        })?;
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread died")))
}
