//! The pause container's program: the agent binary itself, run as
//! `/pause pause` in each sandbox's own minimal rootfs (the binary alone).
//!
//! Like Kubernetes' pause image, it holds the sandbox open for its app
//! container and does nothing else: no files, no network, no identity
//! (ID-12). It is killed with its sandbox.

/// Sleeps until the process is killed. Never returns.
pub fn run_in_sandbox() -> ! {
    loop {
        std::thread::park();
    }
}
