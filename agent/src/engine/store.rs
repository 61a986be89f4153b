//! The persisted registry, `<state dir>/state.json`: every template and
//! every actor's view, written after each change and read at start.
//!
//! **Invariants.** The file is replaced by rename, never written in place.
//! Nothing runs when an agent starts (its predecessor's sandboxes were
//! removed as orphans first), so every loaded actor is Suspended and
//! resumes from its last own snapshot or the golden one, and a template
//! whose golden boot was interrupted is Failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::actor::Actor;
use super::template::Template;
use super::{host_err, ActorState, ActorView, Engine, EngineError, Phase, TemplateView};

/// What `state.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Persisted {
    pub(super) templates: Vec<TemplateView>,
    pub(super) atespaces: BTreeMap<String, Vec<ActorView>>,
}

impl Engine {
    fn state_file(&self) -> PathBuf {
        self.cfg.state_dir.join("state.json")
    }

    /// Loads `state.json` into the (empty) registry, if there is one.
    pub(super) fn load(&self) -> Result<(), EngineError> {
        let path = self.state_file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(host_err(format!("cannot read {}", path.display()))(e)),
        };
        let p: Persisted = serde_json::from_slice(&bytes)
            .map_err(host_err(format!("cannot parse {}", path.display())))?;
        let mut reg = self.reg.lock().unwrap();
        for mut t in p.templates {
            if t.status.phase != Phase::Ready {
                t.status.phase = Phase::Failed;
                t.status.reason.get_or_insert_with(|| {
                    "the agent stopped while the golden actor was booting".into()
                });
            }
            reg.templates.insert(
                t.spec.name.clone(),
                Arc::new(Template {
                    view: Mutex::new(t),
                }),
            );
        }
        for (a, actors) in p.atespaces {
            let mut m = BTreeMap::new();
            for mut v in actors {
                let port = reg
                    .templates
                    .get(&v.template)
                    .map(|t| t.view.lock().unwrap().spec.port)
                    .unwrap_or(80);
                // Whatever ran before is gone (orphans were removed): the
                // actor resumes from its last own snapshot, or the golden.
                v.state = ActorState::Suspended;
                v.sandbox = None;
                v.containers = Vec::new();
                m.insert(v.id.clone(), Arc::new(Actor::new(v, port)));
            }
            reg.atespaces.insert(a, m);
        }
        info!(
            templates = reg.templates.len(),
            atespaces = reg.atespaces.len(),
            "loaded agent state"
        );
        Ok(())
    }

    /// Writes the registry to `state.json` (temp file, rename); a failure
    /// is logged, the running agent carries on.
    pub(super) fn persist(&self) {
        let _g = self.persist_lock.lock().unwrap();
        let p = {
            let reg = self.reg.lock().unwrap();
            Persisted {
                templates: reg
                    .templates
                    .values()
                    .map(|t| t.view.lock().unwrap().clone())
                    .collect(),
                atespaces: reg
                    .atespaces
                    .iter()
                    .map(|(a, m)| (a.clone(), m.values().map(|x| x.view()).collect()))
                    .collect(),
            }
        };
        let path = self.state_file();
        let tmp = self.cfg.state_dir.join(".state.json.tmp");
        let res = serde_json::to_vec_pretty(&p)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            error!(error = %e, path = %path.display(), "cannot persist agent state");
        }
    }
}
