//! SIGINT/SIGTERM: tear the backend down (even mid-setup), write the
//! report, exit 130. From the signal on, the handler owns teardown and
//! exit; the runner's own teardown stands aside.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::lifecycle::{suite_report, write_and_print, Shared};
use crate::error_chain;

pub(crate) async fn handler(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let sig = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    shared.interrupted.store(true, Ordering::SeqCst);
    eprintln!("\n{sig}: interrupted; cleaning up what this run started");
    let backend = shared.started.lock().unwrap().clone();
    let summary = match backend {
        Some(b) => {
            let live = b.live_sandboxes().await.unwrap_or_default();
            match b.teardown().await {
                Ok(()) => format!(
                    "{sig}: stopped the {} backend and removed its sandboxes {live:?}",
                    b.name()
                ),
                Err(e) => format!("{sig}: cleanup failed: {}", error_chain(&e)),
            }
        }
        None => format!(
            "{sig}: no backend was up yet (an agent still starting stops itself and its sandboxes when this process exits)"
        ),
    };
    eprintln!("{summary}");
    let rep = suite_report(&shared, 0, None, Some(summary), vec![]);
    write_and_print(&shared, &rep);
    std::process::exit(130);
}
