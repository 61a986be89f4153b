//! The ateom-gvisor stand-in: one process per worker, started in the
//! worker's pod network namespace and the node's mount namespace, as
//! upstream's ateom-gvisor is (`cmd/ateom-gvisor/main.go:87-155`).
//!
//! What it does, in order (upstream's steps, `main.go:106-137`, and its
//! actor network, `main.go:61-70, 445-630`):
//! 1. creates `ateoms/<uid>/` (`main.go:106-110`) and records its PID in
//!    `ateoms/<uid>/standin-pid` (stand-in only: the atelet stand-in makes
//!    its readiness connections in this process's netns, the pod's, as
//!    upstream's ateom makes them);
//! 2. creates the actor's interior network namespace, named
//!    `/run/netns/ateom:<uid>` (`main.go:130-137`, `ateompath.go:52-60`:
//!    an empty file with a new netns bind-mounted on it);
//! 3. joins it to the pod's by a veth pair: `ateom0` with
//!    `169.254.17.1/30` in the pod netns, `eth0` with `169.254.17.2/30`
//!    and a default route via `.1` in the actor's (`main.go:61-70,
//!    529-582`; every argument vector is `ip`'s). gVisor takes the actor's
//!    `eth0` and strips its addresses, so [`configure_actor_veth`] is run
//!    again before every sandbox start (upstream sets the actor network up
//!    anew on every Run and Restore, `main.go:191, 368`);
//! 4. forwards the pod address's port 80 to `169.254.17.2:80`;
//! 5. creates its socket `ateoms/<uid>/ateom.sock`, replacing an old one
//!    (`main.go:119-128`, `ateompath.go:45-50`): **readiness is that the
//!    socket exists**. Connections are accepted and closed at once; the
//!    stand-in serves no `ateom.Ateom` API (the atelet stand-in drives runsc
//!    itself).
//!
//! **Deviation:** upstream forwards the pod's port 80 with an nftables
//! DNAT rule (and `ip_forward=1`, `main.go:667-800`); the stand-in forwards
//! it in user space (nftables is not on every CI box), one connection to
//! the actor per connection accepted, each half-close passed on. The actor
//! sees the connection come from `169.254.17.1` instead of the client.
//! Every restored actor has the same address, `169.254.17.2`, on every
//! worker, as upstream's, so a snapshot restores on any worker.
//!
//! On SIGTERM or SIGINT it stops forwarding, deletes the veth pair,
//! unmounts and removes the netns file, removes the socket and the PID
//! file, then exits 0.

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use ate_cmd::Cmd;

use crate::paths::Paths;

/// The pod end of the veth pair (`cmd/ateom-gvisor/main.go:62`).
pub const HOST_VETH: &str = "ateom0";
/// The actor end, inside the actor netns (`main.go:63`).
pub const ACTOR_VETH: &str = "eth0";
/// The actor end's name before it moves (`main.go:64`).
pub const ACTOR_VETH_TEMP: &str = "ateom1";
/// The pod end's address (`main.go:65`).
pub const HOST_VETH_CIDR: &str = "169.254.17.1/30";
/// The actor end's address (`main.go:66`).
pub const ACTOR_VETH_CIDR: &str = "169.254.17.2/30";
/// The actor's gateway (`main.go:67`).
pub const ACTOR_GATEWAY: &str = "169.254.17.1";
/// The actor's address (`main.go:68`).
pub const ACTOR_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 17, 2);
/// The port forwarded from the pod address to the actor.
pub const ACTOR_PORT: u16 = 80;

const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `ip args...`; its error names the command and its output.
async fn ip(args: &[&str]) -> Result<(), String> {
    Cmd::new("ip")
        .args(args)
        .timeout(IP_TIMEOUT)
        .run()
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// (Re)gives the actor netns `netns_name` its `eth0` address, link and
/// default route (`cmd/ateom-gvisor/main.go:529-582`): run before every
/// sandbox start, since gVisor strips the addresses of the links it takes.
pub async fn configure_actor_veth(netns_name: &str) -> Result<(), String> {
    ip(&[
        "-n",
        netns_name,
        "addr",
        "replace",
        ACTOR_VETH_CIDR,
        "dev",
        ACTOR_VETH,
    ])
    .await?;
    ip(&["-n", netns_name, "link", "set", "dev", ACTOR_VETH, "up"]).await?;
    ip(&["-n", netns_name, "link", "set", "dev", "lo", "up"]).await?;
    ip(&[
        "-n",
        netns_name,
        "route",
        "replace",
        "default",
        "via",
        ACTOR_GATEWAY,
        "dev",
        ACTOR_VETH,
    ])
    .await
}

/// Makes a new network namespace and bind-mounts it on `target` (an
/// existing file), from a thread of its own (the process stays in its
/// netns).
fn new_netns_at(target: &Path) -> std::io::Result<()> {
    let target = target.to_owned();
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        bind(Path::new("/proc/thread-self/ns/net"), &target)
    })
    .join()
    .map_err(|_| std::io::Error::other("the netns thread panicked"))?
}

/// A step of the stand-in that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}", path.display())]
pub struct AteomError {
    /// What was being done.
    pub step: &'static str,
    /// On what.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

fn err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AteomError + 'a {
    move |source| AteomError {
        step,
        path: path.to_owned(),
        source,
    }
}

/// The IPv4 address of interface `ifname` in this process's netns.
pub fn interface_ipv4(ifname: &str) -> std::io::Result<Option<Ipv4Addr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: cur is a valid node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr points at a sockaddr of the family it names.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        if name.to_bytes() == ifname.as_bytes() && family == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            break;
        }
    }
    // SAFETY: list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

/// Bind-mounts `source` on `target` (an existing file).
fn bind(source: &Path, target: &Path) -> std::io::Result<()> {
    let src = cpath(source);
    let dst = cpath(target);
    // SAFETY: both are valid C strings; a bind mount takes no data.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches whatever is mounted on `target`; not mounted is fine.
fn unmount(target: &Path) -> std::io::Result<()> {
    let dst = cpath(target);
    // SAFETY: dst is a valid C string.
    if unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

/// A running ateom stand-in: what it made, to undo on exit.
pub struct Ateom {
    netns: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
    listener: tokio::net::UnixListener,
    forward: tokio::net::TcpListener,
}

fn io_err(e: String) -> std::io::Error {
    std::io::Error::other(e)
}

impl Ateom {
    /// Steps 1-5 above, for worker `uid`.
    pub async fn start(paths: &Paths, uid: &str) -> Result<Ateom, AteomError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = paths.ateom(uid);
        std::fs::create_dir_all(&dir).map_err(err("cannot create", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(err("cannot chmod", &dir))?;
        let pid_file = paths.ateom_pid_file(uid);
        std::fs::write(&pid_file, std::process::id().to_string())
            .map_err(err("cannot write", &pid_file))?;

        let pod_addr = interface_ipv4("eth0")
            .map_err(err("cannot list the interfaces of its netns for", &dir))?
            .ok_or_else(|| AteomError {
                step: "no IPv4 address on eth0 in this (the pod's) network namespace, which upstream's ateom needs too; worker",
                path: dir.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;

        let netns = paths.netns(uid);
        let name = Paths::netns_name(uid);
        if let Some(parent) = netns.parent() {
            std::fs::create_dir_all(parent).map_err(err("cannot create", parent))?;
        }
        unmount(&netns).map_err(err("cannot unmount an old", &netns))?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&netns)
            .map_err(err("cannot create", &netns))?;
        new_netns_at(&netns).map_err(err("while creating ateom-interior netns", &netns))?;

        let veth = async {
            // A pair left by an earlier run in this pod goes first.
            let _ = ip(&["link", "del", HOST_VETH]).await;
            ip(&[
                "link",
                "add",
                HOST_VETH,
                "type",
                "veth",
                "peer",
                "name",
                ACTOR_VETH_TEMP,
            ])
            .await?;
            ip(&["link", "set", ACTOR_VETH_TEMP, "netns", &name]).await?;
            ip(&["addr", "add", HOST_VETH_CIDR, "dev", HOST_VETH]).await?;
            ip(&["link", "set", "dev", HOST_VETH, "up"]).await?;
            ip(&[
                "-n",
                &name,
                "link",
                "set",
                "dev",
                ACTOR_VETH_TEMP,
                "name",
                ACTOR_VETH,
            ])
            .await?;
            configure_actor_veth(&name).await
        };
        veth.await
            .map_err(|e| err("while setting up actor network in", &netns)(io_err(e)))?;

        let forward = tokio::net::TcpListener::bind((pod_addr, ACTOR_PORT))
            .await
            .map_err(err(
                "cannot listen on the pod address's port 80 for",
                &netns,
            ))?;

        let socket = paths.ateom_socket(uid);
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("while removing", &socket)(e)),
        }
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(err("while opening unix socket", &socket))?;
        Ok(Ateom {
            netns,
            socket,
            pid_file,
            listener,
            forward,
        })
    }

    /// Accepts (and closes) socket connections and forwards the pod's port
    /// 80 until SIGTERM or SIGINT, then undoes what [`Ateom::start`] made.
    pub async fn serve_until_signal(self) -> Result<(), AteomError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .map_err(err("cannot watch SIGTERM for", &self.socket))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(err("cannot watch SIGINT for", &self.socket))?;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                r = self.listener.accept() => drop(r),
                r = self.forward.accept() => {
                    if let Ok((mut inbound, _)) = r {
                        tasks.spawn(async move {
                            let to = std::net::SocketAddr::from((ACTOR_IP, ACTOR_PORT));
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                                let _ = inbound.set_nodelay(true);
                                let _ = outbound.set_nodelay(true);
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
        self.stop().await
    }

    /// Deletes the veth pair, unmounts and removes the netns file, removes
    /// the socket and the PID file.
    pub async fn stop(self) -> Result<(), AteomError> {
        drop(self.forward);
        ip(&["link", "del", HOST_VETH])
            .await
            .map_err(|e| err("cannot delete the veth pair of", &self.netns)(io_err(e)))?;
        unmount(&self.netns).map_err(err("cannot unmount", &self.netns))?;
        for p in [&self.netns, &self.socket, &self.pid_file] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("cannot remove", p)(e)),
            }
        }
        Ok(())
    }
}
