//! Atespaces and actors, driven with `kubectl ate` (`tools::ate_*`; the
//! subcommands and their upstream sources are in `docs/upstream.md`).
//!
//! **Invariants.** An atespace or actor is tracked in the run's record
//! before the command that makes it runs, and forgotten only after the
//! command that removes it succeeded. An actor's state is read from
//! `kubectl ate get actor -o json` (upstream's `ListActorsResponse`), never
//! assumed; a recording executor answers that read with the state the
//! operation leads to (documented at each call).

use anyhow::Result;

use super::{tools, KindBackend, GOLDEN_ATESPACE};
use crate::backend::ActorInfo;

impl KindBackend {
    pub(super) async fn create_atespace_named(&self, atespace: &str) -> Result<()> {
        self.update(|st| {
            st.atespaces.insert(atespace.to_owned());
        });
        self.exec
            .run(
                &format!("create atespace {atespace}"),
                self.tools.ate_create_atespace(atespace),
                "",
            )
            .await?;
        Ok(())
    }

    pub(super) async fn delete_atespace_named(&self, atespace: &str) -> Result<()> {
        self.exec
            .run(
                &format!("delete atespace {atespace}"),
                self.tools.ate_delete_atespace(atespace),
                "",
            )
            .await?;
        self.update(|st| {
            st.atespaces.remove(atespace);
        });
        Ok(())
    }

    pub(super) async fn create_actor_of(
        &self,
        atespace: &str,
        id: &str,
        template: &str,
    ) -> Result<ActorInfo> {
        self.track_actor(atespace, id);
        self.exec
            .run(
                &format!("create actor {atespace}/{id} of template {template}"),
                self.tools.ate_create_actor(atespace, id, template),
                "",
            )
            .await?;
        // A created actor is suspended until resumed.
        self.actor_info(atespace, id, "SUSPENDED").await
    }

    pub(super) async fn resume_actor(&self, atespace: &str, id: &str) -> Result<ActorInfo> {
        self.exec
            .run(
                &format!("resume actor {atespace}/{id} (returns once RUNNING)"),
                self.tools.ate_resume(atespace, id),
                "",
            )
            .await?;
        self.actor_info(atespace, id, "RUNNING").await
    }

    pub(super) async fn suspend_actor(&self, atespace: &str, id: &str) -> Result<ActorInfo> {
        self.exec
            .run(
                &format!("suspend actor {atespace}/{id}"),
                self.tools.ate_suspend(atespace, id),
                "",
            )
            .await?;
        self.actor_info(atespace, id, "SUSPENDED").await
    }

    pub(super) async fn delete_actor_named(&self, atespace: &str, id: &str) -> Result<()> {
        self.exec
            .run(
                &format!("delete actor {atespace}/{id}"),
                self.tools.ate_delete_actor(atespace, id),
                "",
            )
            .await?;
        self.forget_actor(atespace, id);
        Ok(())
    }

    /// Reads the actor's state; a recording executor answers upstream's
    /// list shape with `STATUS_<stand_in_state>`.
    pub(super) async fn actor_info(
        &self,
        atespace: &str,
        id: &str,
        stand_in_state: &str,
    ) -> Result<ActorInfo> {
        let json = self
            .exec
            .run(
                &format!("read actor {atespace}/{id}"),
                self.tools.ate_get_actor(atespace, id),
                &format!(
                    r#"{{"actors":[{{"actorId":"{id}","atespace":"{atespace}","status":"STATUS_{stand_in_state}"}}]}}"#
                ),
            )
            .await?;
        let state = tools::parse_actor_state(&json, atespace, id).map_err(anyhow::Error::msg)?;
        Ok(ActorInfo {
            atespace: atespace.to_owned(),
            id: id.to_owned(),
            state: tools::actor_state(&state),
            restored_from: None,
            restore_ms: None,
            sandbox: None,
        })
    }

    /// Suspends (unless suspended) and deletes the golden actor `id` in
    /// `ate-golden`; an actor already gone (ateapi's NotFound) is fine.
    pub(super) async fn remove_golden_actor(&self, id: &str) -> Result<()> {
        let a = GOLDEN_ATESPACE;
        // The controller suspends the golden actor once Ready
        // (actortemplate_controller.go:146-160): the stand-in says so.
        let info = match self.actor_info(a, id, "SUSPENDED").await {
            Ok(info) => info,
            Err(e) if tools::is_actor_not_found(&format!("{e:#}"), id) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !info.state.is_suspended() {
            self.exec
                .run(
                    &format!("suspend the golden actor {a}/{id}"),
                    self.tools.ate_suspend(a, id),
                    "",
                )
                .await?;
        }
        self.exec
            .run(
                &format!("delete the golden actor {a}/{id} (it outlives its template)"),
                self.tools.ate_delete_actor(a, id),
                "",
            )
            .await?;
        Ok(())
    }

    /// Records the actor as made by this run.
    pub(super) fn track_actor(&self, atespace: &str, id: &str) {
        let key = (atespace.to_owned(), id.to_owned());
        self.update(|st| {
            st.actors.insert(key);
        });
    }

    /// Records the actor as gone.
    pub(super) fn forget_actor(&self, atespace: &str, id: &str) {
        let key = (atespace.to_owned(), id.to_owned());
        self.update(|st| {
            st.actors.remove(&key);
        });
    }

    /// The actors this run made and has not deleted, as `actor <a>/<id>`.
    pub(super) fn tracked_actors(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .actors
            .iter()
            .map(|(a, i)| format!("actor {a}/{i}"))
            .collect()
    }
}
