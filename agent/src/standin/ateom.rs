//! The ateom-gvisor stand-in: one process per worker, started in the
//! worker's pod network namespace and the node's mount namespace, as
//! upstream's ateom-gvisor is (`cmd/ateom-gvisor/main.go:87-155`).
//!
//! What it does, in order:
//! 1. creates `ateoms/<uid>/` (`main.go:106-110`) and records the pod's
//!    `eth0` IPv4 address in `ateoms/<uid>/standin-pod-ipv4` (stand-in
//!    only: the atelet stand-in's readiness checks dial it);
//! 2. makes its own network namespace the actor's: an empty file at
//!    `/run/netns/ateom:<uid>` with `/proc/self/ns/net` bind-mounted on it
//!    (the name and path of `internal/ateompath/ateompath.go:52-60`);
//! 3. creates its socket `ateoms/<uid>/ateom.sock`, replacing an old one
//!    (`main.go:119-128`, `ateompath.go:45-50`): **readiness is that the
//!    socket exists**. Connections are accepted and closed at once; the
//!    stand-in serves no `ateom.Ateom` API (the atelet stand-in drives runsc
//!    itself).
//!
//! **Deviation:** upstream creates a separate interior netns for the actor,
//! with a veth pair and nftables DNAT from the pod address's port 80 to the
//! actor (`main.go:130-137, 445-800`). The stand-in hands gVisor the pod
//! netns itself, so gVisor's netstack takes `eth0` and `<pod addr>:80`
//! reaches the actor as upstream's DNAT path does, without nftables.
//!
//! On SIGTERM or SIGINT it unmounts and removes the netns file, removes
//! the socket and the address file, then exits 0.

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::paths::Paths;

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

/// Bind-mounts `/proc/self/ns/net` on `target` (an existing file).
fn bind_netns(target: &Path) -> std::io::Result<()> {
    let src = cpath(Path::new("/proc/self/ns/net"));
    let dst = cpath(target);
    // SAFETY: both are valid C strings; a bind mount takes no data.
    let r = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
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
    addr_file: PathBuf,
    listener: tokio::net::UnixListener,
}

impl Ateom {
    /// Steps 1-3 above, for worker `uid`.
    pub fn start(paths: &Paths, uid: &str) -> Result<Ateom, AteomError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = paths.ateom(uid);
        std::fs::create_dir_all(&dir).map_err(err("cannot create", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(err("cannot chmod", &dir))?;

        let addr_file = paths.pod_addr_file(uid);
        let addr = interface_ipv4("eth0")
            .map_err(err("cannot list interfaces for", &addr_file))?
            .ok_or_else(|| AteomError {
                step: "no IPv4 address on eth0 in this network namespace (upstream's ateom needs one too); cannot write",
                path: addr_file.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        crate::identity::write_file_atomic(&dir, "standin-pod-ipv4", addr.to_string().as_bytes(), 0o644).map_err(|e| AteomError {
            step: "cannot write",
            path: addr_file.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;

        let netns = paths.netns(uid);
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
        bind_netns(&netns).map_err(err("cannot bind-mount /proc/self/ns/net on", &netns))?;

        let socket = paths.ateom_socket(uid);
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("while removing", &socket)(e)),
        }
        let listener = tokio::net::UnixListener::bind(&socket).map_err(err("while opening unix socket", &socket))?;
        Ok(Ateom {
            netns,
            socket,
            addr_file,
            listener,
        })
    }

    /// Accepts (and closes) connections until SIGTERM or SIGINT, then
    /// undoes what [`Ateom::start`] made.
    pub async fn serve_until_signal(self) -> Result<(), AteomError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(err("cannot watch SIGTERM for", &self.socket))?;
        let mut int = signal(SignalKind::interrupt()).map_err(err("cannot watch SIGINT for", &self.socket))?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                r = self.listener.accept() => drop(r),
            }
        }
        self.stop()
    }

    /// Unmounts and removes the netns file, removes the socket and the
    /// address file.
    pub fn stop(self) -> Result<(), AteomError> {
        unmount(&self.netns).map_err(err("cannot unmount", &self.netns))?;
        for p in [&self.netns, &self.socket, &self.addr_file] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("cannot remove", p)(e)),
            }
        }
        Ok(())
    }
}
