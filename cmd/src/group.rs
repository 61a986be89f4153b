//! A child that leads its own process group, and the guard that kills the
//! group when the child is dropped before it was reaped.

use std::io;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;

use rustix::io::Errno;
use rustix::process::{kill_process_group, pidfd_open, Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::Child;
use tracing::{debug, warn};

/// A spawned child, leader of its own process group (`process_group(0)`, so
/// the group id is the child's pid).
///
/// **While the leader is not reaped its pid, and so the group id, cannot be
/// reused**: signalling the group is then always safe. When a pidfd is
/// available, [`exited`](GroupChild::exited) waits for the leader's exit
/// without reaping it, so the group can still be killed after the leader is
/// gone (grandchildren holding the output pipes, a timeout, a drop).
pub(crate) struct GroupChild {
    pub(crate) child: Child,
    pid: u32,
    pgid: Option<Pid>,
    exit: Option<AsyncFd<OwnedFd>>,
}

impl GroupChild {
    /// Wraps a child just spawned with `process_group(0)`.
    pub(crate) fn new(child: Child) -> GroupChild {
        let pid = child.id().unwrap_or(0);
        let pgid = i32::try_from(pid).ok().and_then(Pid::from_raw);
        // Without a pidfd (old kernel, seccomp) `exited` falls back to reaping.
        let exit = pgid
            .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok())
            .and_then(|fd| {
                // SAFETY: an `OwnedFd` stays open, and its `as_raw_fd` returns
                // the same descriptor, for as long as the `AsyncFd` owns it.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
            });
        GroupChild {
            child,
            pid,
            pgid,
            exit,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn is_reaped(&self) -> bool {
        self.child.id().is_none()
    }

    /// Waits until the leader has exited; does not reap it when it can avoid
    /// to. Cancel-safe.
    pub(crate) async fn exited(&mut self) -> io::Result<()> {
        match &self.exit {
            // A pidfd turns readable when the process exits and stays so.
            Some(pidfd) if !self.is_reaped() => pidfd.readable().await.map(drop),
            _ => self.child.wait().await.map(drop),
        }
    }

    /// Waits for the leader and reaps it. Cancel-safe; after the first
    /// success it returns the same status again.
    pub(crate) async fn reap(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.exit = None;
        Ok(status)
    }

    /// Sends `signal` to the whole group, unless the leader was reaped
    /// already (its pid may then belong to someone else).
    pub(crate) fn signal_group(&self, signal: Signal) {
        let Some(pgid) = self.pgid else { return };
        if self.is_reaped() {
            return;
        }
        match kill_process_group(pgid, signal) {
            Ok(()) | Err(Errno::SRCH) => {}
            Err(err) => {
                warn!(pgid = pgid.as_raw_nonzero().get(), ?signal, %err, "cannot signal process group")
            }
        }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if !self.is_reaped() {
            debug!(
                pgid = self.pid,
                "child dropped before it was reaped: killing its process group"
            );
            self.signal_group(Signal::KILL);
            // tokio reaps a dropped child in the background.
        }
    }
}
