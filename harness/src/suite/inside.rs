//! Observations from inside an actor's sandbox, from whichever observer the
//! run has: the harness's own checker where the backend offers
//! [`SandboxAccess`], else the probe's endpoint of the same shape (a
//! backend the harness cannot look inside, with our probe), else a
//! [`Skip`](super::Skip) naming the endpoint the probe lacks. Each observation is a timed phase that names its
//! observer, so a trial's log says who saw what.
//!
//! **Invariant.** With sandbox access the probe is never asked: a probe
//! with only `/whoami` and `/healthz` gets the same trials as ours.

use reqwest::Method;

use super::Ctx;
use crate::backend::{Env, IdentityDir, IdentityWatch, SandboxAccess, TryWrite};

impl Ctx {
    /// The harness's checker inside actors' sandboxes, when the backend
    /// offers it.
    pub fn sandbox(&self) -> Option<&dyn SandboxAccess> {
        self.setup.backend.sandbox()
    }

    /// `/run/ate`'s entries and its mounts (ID-1, ID-7, ID-9).
    pub async fn identity_dir(&self, id: &str) -> anyhow::Result<IdentityDir> {
        match self.sandbox() {
            Some(s) => {
                let seen = s.mounts(self.atespace(), id);
                Ok(self.phase(format!("checker: mounts of {id}"), seen).await?)
            }
            None => {
                let seen = self.probe_json(Method::GET, id, "/identity-dir");
                self.phase(format!("probe: GET /identity-dir of {id}"), seen)
                    .await
            }
        }
    }

    /// Every write attempt inside `/run/ate` (ID-6).
    pub async fn try_write(&self, id: &str) -> anyhow::Result<TryWrite> {
        match self.sandbox() {
            Some(s) => {
                let seen = s.try_write(self.atespace(), id);
                Ok(self
                    .phase(format!("checker: try-write in {id}"), seen)
                    .await?)
            }
            None => {
                let seen = self.probe_json(Method::POST, id, "/identity-dir/try-write");
                self.phase(format!("probe: POST /identity-dir/try-write of {id}"), seen)
                    .await
            }
        }
    }

    /// The environment of the actor's process (ID-7): read by the checker
    /// from `/proc/<pid>/environ`, or the probe's own.
    pub async fn actor_env(&self, id: &str) -> anyhow::Result<Env> {
        match self.sandbox() {
            Some(s) => {
                let seen = s.env(self.atespace(), id);
                Ok(self.phase(format!("checker: env of {id}"), seen).await?)
            }
            None => {
                let seen = self.probe_json(Method::GET, id, "/env");
                self.phase(format!("probe: GET /env of {id}"), seen).await
            }
        }
    }

    /// `actor-id` read in a loop for `ms` ms (ID-9). Not a phase of its
    /// own: the caller times it together with the host's rewrites.
    pub async fn identity_watch(&self, id: &str, ms: u64) -> anyhow::Result<IdentityWatch> {
        match self.sandbox() {
            Some(s) => Ok(s.watch(self.atespace(), id, ms).await?),
            None => {
                self.probe_json(Method::GET, id, &format!("/identity-watch?ms={ms}"))
                    .await
            }
        }
    }
}
