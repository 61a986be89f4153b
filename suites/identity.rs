//! The identity suite: every actor restored from one golden snapshot reads
//! its own ID from `/run/ate/actor-id`, and the rest of the identity
//! contract (CONTRACT.md I) holds, observed from inside real sandboxes and
//! through the router.
//!
//! Only `/whoami` is the actor's own answer. Everything else inside the
//! sandbox (mounts, write attempts, the actor's environment, reads during
//! host rewrites, restore evidence) comes from the harness's checker where
//! the backend can run it (`ctx.sandbox()`), else from our probe's
//! endpoints, else the trial is skipped with the reason.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use ate_harness::backend::{ActorProcess, Evidence, SandboxAccess};
use ate_harness::backend::{RestoreSource, TemplatePhase};
use ate_harness::probe::{Counter, Snapshot, Whoami};
use ate_harness::suite::{Ctx, Needs, Suite};
use reqwest::Method;

fn main() -> ExitCode {
    Suite::new("identity")
        .trial(
            "gate::own_identity_after_restore",
            &["ID-1", "ID-3", "ID-4", "ID-5"],
            own_identity_after_restore,
        )
        .trial(
            "gate::restored_from_golden_not_booted",
            &["ID-3"],
            restored_not_booted,
        )
        .trial(
            "format::exact_bytes_no_newline",
            &["ID-1", "ID-2"],
            exact_bytes,
        )
        .trial("mount::read_only", &["ID-6"], read_only)
        .trial(
            "mount::directory_bind_not_env",
            &["ID-7"],
            directory_bind_not_env,
        )
        .trial(
            "cycle::suspend_then_routed_request_resumes_own_identity",
            &["ID-10", "ID-11", "ID-15"],
            suspend_resume_cycle,
        )
        .trial("router::host_names", &["ID-14", "ID-15"], router_host_names)
        .trial_needing(
            "host::own_identity_dir_per_actor",
            &["ID-8"],
            Needs::HOST,
            own_identity_dir_per_actor,
        )
        .trial_needing(
            "host::atomic_rewrite_is_never_torn",
            &["ID-9"],
            Needs::HOST_REWRITE,
            atomic_rewrite_is_never_torn,
        )
        .trial_needing(
            "rootfs::planted_symlink_is_refused",
            &["ID-13"],
            Needs::HOST,
            planted_symlink_is_refused,
        )
        .trial_needing(
            "host::pause_container_has_no_identity",
            &["ID-12"],
            Needs::HOST,
            pause_container_has_no_identity,
        )
        .main()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Creates and resumes an actor named `<base>-<run>`; phases are timed.
async fn running_actor(ctx: &Ctx, base: &str) -> anyhow::Result<String> {
    let id = ctx.new_actor(base).await?;
    let info = ctx
        .phase(
            format!("restore {id}"),
            ctx.backend().resume(ctx.atespace(), &id),
        )
        .await?;
    ensure!(
        info.state.is_running(),
        "actor {}/{id} is {} after resume, expected Running",
        ctx.atespace(),
        info.state
    );
    Ok(id)
}

/// The actor's identity directory on the host, where the backend shows it.
async fn host_identity_dir(ctx: &Ctx, id: &str) -> anyhow::Result<Option<std::path::PathBuf>> {
    match ctx.backend().host() {
        Some(host) => Ok(host.actor_dirs(ctx.atespace(), id).await?.identity),
        None => Ok(None),
    }
}

async fn whoami(ctx: &Ctx, id: &str) -> anyhow::Result<Whoami> {
    ctx.phase(
        format!("whoami {id}"),
        ctx.router()
            .get_json::<Whoami>(ctx.atespace(), id, "/whoami"),
    )
    .await
}

/// ID-3 and ID-4 for one actor, with a message that quotes everything a
/// person needs: the actor, what it read, the golden ID, the read error.
fn check_own_identity(ctx: &Ctx, id: &str, w: &Whoami) -> anyhow::Result<()> {
    let golden = &ctx.golden().golden_actor_id;
    let read = w.bytes();
    let shown = String::from_utf8_lossy(&read);
    let err = w.error.as_deref().unwrap_or("none");
    if read == golden.as_bytes() {
        return Err(ctx.violation(
            "ID-4",
            format!(
                "actor {}/{id} read the GOLDEN actor's ID {golden:?} from /run/ate/actor-id: it sees the identity \
                 the snapshot was taken with, not its own (probe read error: {err})",
                ctx.atespace()
            ),
        ));
    }
    if read != id.as_bytes() {
        return Err(ctx.violation(
            "ID-3",
            format!(
                "actor {}/{id} read {shown:?} ({} bytes) from /run/ate/actor-id, expected its own ID {id:?}; \
                 golden actor is {golden:?}; probe read error: {err}",
                ctx.atespace(),
                read.len()
            ),
        ));
    }
    Ok(())
}

/// The regression gate: two actors restored from one golden snapshot,
/// reached through the router, each read their own ID.
async fn own_identity_after_restore(ctx: Ctx) -> anyhow::Result<()> {
    let (alpha, beta) = tokio::try_join!(
        running_actor(&ctx, "probe-alpha"),
        running_actor(&ctx, "probe-beta")
    )?;
    let (wa, wb) = tokio::try_join!(whoami(&ctx, &alpha), whoami(&ctx, &beta))?;
    check_own_identity(&ctx, &alpha, &wa)?;
    check_own_identity(&ctx, &beta, &wb)?;
    ctx.ensure(wa.bytes() != wb.bytes(), "ID-5", || {
        format!(
            "actors {alpha} and {beta}, restored from one golden snapshot, both read {:?}",
            wa.file
        )
    })?;
    Ok(())
}

/// Both actors came from the golden snapshot, while each reads its own ID
/// now. With the checker: each shows the token it planted in the golden's
/// memory before the checkpoint, the golden's `boot_id`, PID and process
/// start time. With the probe alone: the same start-time nonce, and the
/// identity their process saw at start is the golden's.
async fn restored_not_booted(ctx: Ctx) -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(
        running_actor(&ctx, "probe-nonce-a"),
        running_actor(&ctx, "probe-nonce-b")
    )?;
    match ctx.sandbox() {
        Some(sandbox) => restored_from_golden_evidence(&ctx, sandbox, &a, &b).await?,
        None => restored_from_golden_snapshot(&ctx, &a, &b).await?,
    }
    for id in [&a, &b] {
        let info = ctx.backend().get_actor(ctx.atespace(), id).await?;
        if let Some(from) = info.restored_from {
            ensure!(
                from == RestoreSource::Golden,
                "the backend says actor {id} was restored from {from:?}, expected the golden snapshot"
            );
        }
    }
    let (wa, wb) = tokio::try_join!(whoami(&ctx, &a), whoami(&ctx, &b))?;
    check_own_identity(&ctx, &a, &wa)?;
    check_own_identity(&ctx, &b, &wb)
}

/// The golden's evidence, as the backend recorded it before the
/// checkpoint; it must carry the token planted there.
async fn golden_evidence(ctx: &Ctx, sandbox: &dyn SandboxAccess) -> anyhow::Result<Evidence> {
    let template = &ctx.golden().template;
    let golden = ctx
        .phase("golden evidence", sandbox.golden_evidence(template))
        .await?;
    ensure!(
        golden.token.is_some() && golden.actor.is_some() && golden.boot_id.is_some(),
        "the golden evidence of template {template} is incomplete: {golden:?}"
    );
    Ok(golden)
}

/// ID-3: `id`'s process image is the golden's: the planted token, the
/// sandbox kernel's `boot_id`, the actor's PID and start time. (On runsc a
/// cold boot has no token and a new `boot_id`; PID and start time alone
/// would not tell, so they only corroborate.)
fn check_same_image(
    ctx: &Ctx,
    id: &str,
    golden: &Evidence,
    seen: &Evidence,
    when: &str,
) -> anyhow::Result<()> {
    ctx.ensure(seen.token == golden.token, "ID-3", || {
        format!(
            "actor {id} {when} is not a restore of the golden snapshot: the token the harness's checker planted in the \
             golden sandbox's memory before its checkpoint is {:?}, the actor shows {:?} (token error: {}); a cold \
             boot or another image has none",
            golden.token,
            seen.token,
            seen.token_error.as_deref().unwrap_or("none")
        )
    })?;
    ctx.ensure(seen.boot_id == golden.boot_id, "ID-3", || {
        format!(
            "actor {id} {when} runs on sandbox kernel boot {:?}, the golden ran on {:?} (error: {}): a restore keeps \
             the golden's boot_id, a cold boot makes a new one",
            seen.boot_id,
            golden.boot_id,
            seen.boot_id_error.as_deref().unwrap_or("none")
        )
    })?;
    let (g, s) = (golden.actor.as_ref(), seen.actor.as_ref());
    let same = |p: Option<&ActorProcess>| p.map(|p| (p.pid, p.start_ticks));
    ctx.ensure(same(g) == same(s), "ID-3", || {
        format!(
            "actor {id} {when}: its process (pid, start ticks) is {:?}, the golden's was {:?}: not the golden's \
             process image (checker error: {})",
            same(s),
            same(g),
            seen.actor_error.as_deref().unwrap_or("none")
        )
    })
}

async fn restored_from_golden_evidence(
    ctx: &Ctx,
    sandbox: &dyn SandboxAccess,
    a: &str,
    b: &str,
) -> anyhow::Result<()> {
    let golden = golden_evidence(ctx, sandbox).await?;
    let (ea, eb) = ctx
        .phase("checker: evidence of both actors", async {
            tokio::try_join!(
                sandbox.evidence(ctx.atespace(), a),
                sandbox.evidence(ctx.atespace(), b)
            )
        })
        .await?;
    ctx.note(format!(
        "golden evidence {golden:?}; {a}: {ea:?}; {b}: {eb:?}"
    ));
    check_same_image(ctx, a, &golden, &ea, "after its restore")?;
    check_same_image(ctx, b, &golden, &eb, "after its restore")
}

async fn restored_from_golden_snapshot(ctx: &Ctx, a: &str, b: &str) -> anyhow::Result<()> {
    let golden = ctx.golden().golden_actor_id.clone();
    let (sa, sb) = tokio::try_join!(
        ctx.probe_json::<Snapshot>(Method::GET, a, "/snapshot"),
        ctx.probe_json::<Snapshot>(Method::GET, b, "/snapshot")
    )?;
    for (id, s) in [(a, &sa), (b, &sb)] {
        ensure!(
            s.identity_at_start == golden,
            "actor {id} was not restored from the golden snapshot: its process read {:?} at start (error: {}), \
             the golden actor is {golden:?}; a cold boot or another image would read something else",
            s.identity_at_start,
            s.identity_at_start_error.as_deref().unwrap_or("none")
        );
    }
    ensure!(
        sa.nonce == sb.nonce,
        "actors {a} and {b} carry different start nonces ({} vs {}): they are not restores of one process image",
        sa.nonce,
        sb.nonce
    );
    Ok(())
}

/// ID-2: exactly the raw ID bytes, no newline, nothing else.
async fn exact_bytes(ctx: Ctx) -> anyhow::Result<()> {
    let id = running_actor(&ctx, "probe-format").await?;
    let w = whoami(&ctx, &id).await?;
    ctx.ensure(w.error.is_none(), "ID-1", || {
        format!(
            "actor {id} cannot read /run/ate/actor-id: {}",
            w.error.as_deref().unwrap_or("")
        )
    })?;
    let read = w.bytes();
    ctx.ensure(read == id.as_bytes(), "ID-2", || {
        format!(
            "/run/ate/actor-id of actor {id} holds {} bytes (hex {}), expected exactly the {} bytes of {id:?} \
             (hex {}) with no trailing newline or padding",
            read.len(),
            hex(&read),
            id.len(),
            hex(id.as_bytes())
        )
    })?;
    if let Some(n) = w.file_len {
        ctx.ensure(n as usize == id.len(), "ID-2", || {
            format!(
                "the probe reports {n} bytes in /run/ate/actor-id of {id}, expected {}",
                id.len()
            )
        })?;
    }
    Ok(())
}

/// ID-6: every write, create, unlink, rename and mkdir inside /run/ate
/// fails with EROFS or EACCES, and nothing changes on the host.
async fn read_only(ctx: Ctx) -> anyhow::Result<()> {
    const EACCES: i32 = 13;
    const EROFS: i32 = 30;
    let id = running_actor(&ctx, "probe-readonly").await?;
    let tw = ctx.try_write(&id).await?;
    ensure!(
        !tw.attempts.is_empty(),
        "no write attempts inside /run/ate were reported"
    );
    let bad: Vec<String> = tw
        .attempts
        .iter()
        .filter(|a| a.ok || !matches!(a.errno, Some(EROFS) | Some(EACCES)))
        .map(|a| {
            if a.ok {
                format!("{} SUCCEEDED", a.op)
            } else {
                format!(
                    "{} failed with errno {:?} ({})",
                    a.op,
                    a.errno,
                    a.error.as_deref().unwrap_or("")
                )
            }
        })
        .collect();
    ctx.ensure(bad.is_empty(), "ID-6", || {
        format!(
            "/run/ate is not read-only in actor {id}: {} (every attempt must fail with EROFS or EACCES)",
            bad.join("; ")
        )
    })?;
    if let Some(dir) = host_identity_dir(&ctx, &id).await? {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list the host identity dir {}", dir.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        ctx.ensure(names == ["actor-id"], "ID-6", || {
            format!(
                "the host identity dir {} of {id} changed: it holds {names:?}",
                dir.display()
            )
        })?;
        let host = std::fs::read(dir.join("actor-id"))
            .with_context(|| format!("cannot read {}/actor-id", dir.display()))?;
        ctx.ensure(host == id.as_bytes(), "ID-6", || {
            format!(
                "the host file {}/actor-id of {id} changed to {:?}",
                dir.display(),
                String::from_utf8_lossy(&host)
            )
        })?;
    }
    let w = whoami(&ctx, &id).await?;
    check_own_identity(&ctx, &id, &w)
}

/// ID-7: what is mounted is the directory (one read-only mount at
/// /run/ate, none on the file), and the ID is not in the environment.
async fn directory_bind_not_env(ctx: Ctx) -> anyhow::Result<()> {
    let id = running_actor(&ctx, "probe-dirmount").await?;
    let d = ctx.identity_dir(&id).await?;
    ensure!(
        d.mountinfo_error.is_none(),
        "mountinfo inside actor {id} cannot be read: {}",
        d.mountinfo_error.as_deref().unwrap_or("")
    );
    let at_dir: Vec<_> = d
        .mounts
        .iter()
        .filter(|m| m.mount_point == "/run/ate")
        .collect();
    let below: Vec<_> = d
        .mounts
        .iter()
        .filter(|m| m.mount_point.starts_with("/run/ate/"))
        .collect();
    ctx.ensure(below.is_empty(), "ID-7", || {
        format!(
            "actor {id} has mounts inside /run/ate ({:?}): a single-file mount cannot take sibling files",
            below.iter().map(|m| &m.mount_point).collect::<Vec<_>>()
        )
    })?;
    ctx.ensure(at_dir.len() == 1, "ID-7", || {
        format!(
            "actor {id} has {} mounts at /run/ate (expected exactly one bind mount of its identity directory); mounts seen: {:?}",
            at_dir.len(),
            d.mounts
        )
    })?;
    if !at_dir[0].read_only() {
        return Err(ctx.violations(
            &["ID-6", "ID-7"],
            format!(
                "the mount at /run/ate in actor {id} is not read-only: options {:?}",
                at_dir[0].mount_options
            ),
        ));
    }
    ctx.ensure(
        d.entries
            .iter()
            .any(|e| e.name == "actor-id" && e.kind == "file"),
        "ID-1",
        || {
            format!(
                "/run/ate of actor {id} has no regular file actor-id; entries: {:?} (error: {})",
                d.entries
                    .iter()
                    .map(|e| format!("{} ({})", e.name, e.kind))
                    .collect::<Vec<_>>(),
                d.entries_error.as_deref().unwrap_or("none")
            )
        },
    )?;
    let env = ctx.actor_env(&id).await?;
    ensure!(
        env.error.is_none(),
        "the environment of actor {id}'s process cannot be read: {}",
        env.error.as_deref().unwrap_or("")
    );
    let golden = &ctx.golden().golden_actor_id;
    let leaks: Vec<String> = env
        .env
        .iter()
        .filter(|(_, v)| v.contains(id.as_str()) || v.contains(golden.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    ctx.ensure(leaks.is_empty(), "ID-7", || {
        format!(
            "the identity is passed in the environment of actor {id}: {leaks:?} (golden actor {golden}); \
             an environment variable is frozen into the snapshot"
        )
    })?;
    Ok(())
}

/// What a suspend/resume cycle checks of an actor's memory: a token the
/// harness's checker plants in it before each suspend (with sandbox
/// access), or the probe's in-memory counter.
enum Memory<'a> {
    /// The checker's mark, and the golden's evidence the process must keep.
    Checker {
        sandbox: &'a dyn SandboxAccess,
        golden: Box<Evidence>,
    },
    /// The probe's `/counter` and `/snapshot`.
    Probe,
}

impl Memory<'_> {
    async fn new(ctx: &Ctx) -> anyhow::Result<Memory<'_>> {
        Ok(match ctx.sandbox() {
            Some(sandbox) => Memory::Checker {
                sandbox,
                golden: Box::new(golden_evidence(ctx, sandbox).await?),
            },
            None => Memory::Probe,
        })
    }

    /// Before suspend `cycle`: leaves a mark in the actor's memory.
    async fn mark(&self, ctx: &Ctx, id: &str, cycle: u64) -> anyhow::Result<()> {
        match self {
            Memory::Checker { sandbox, .. } => {
                let token = cycle_token(ctx, cycle);
                let e = ctx
                    .phase(
                        format!("checker: mark {id} with {token} (cycle {cycle})"),
                        sandbox.mark(ctx.atespace(), id, &token),
                    )
                    .await?;
                ensure!(
                    e.token.as_deref() == Some(token.as_str()),
                    "the checker could not plant {token:?} in actor {id} before suspend {cycle}: it reads back {:?} \
                     (error: {})",
                    e.token,
                    e.token_error.as_deref().unwrap_or("none")
                );
                Ok(())
            }
            Memory::Probe => {
                let c: Counter = ctx.probe_json(Method::POST, id, "/counter").await?;
                ctx.ensure(c.counter == cycle, "ID-11", || {
                    format!(
                        "in-memory counter of {id} is {} before suspend {cycle}, expected {cycle} (state not restored from its own snapshot)",
                        c.counter
                    )
                })
            }
        }
    }

    /// After resume `cycle`: the mark is there, and the process is still
    /// the one restored from the golden snapshot.
    async fn check(&self, ctx: &Ctx, id: &str, cycle: u64) -> anyhow::Result<()> {
        match self {
            Memory::Checker { sandbox, golden } => {
                let token = cycle_token(ctx, cycle);
                let e = ctx
                    .phase(
                        format!("checker: evidence of {id} (cycle {cycle})"),
                        sandbox.evidence(ctx.atespace(), id),
                    )
                    .await?;
                ctx.ensure(e.token.as_deref() == Some(token.as_str()), "ID-11", || {
                    format!(
                        "the token the harness's checker planted in the memory of {id} before suspend {cycle} \
                         ({token:?}) is {:?} after the on-demand resume (error: {}): its memory did not come from \
                         its own last snapshot",
                        e.token,
                        e.token_error.as_deref().unwrap_or("none")
                    )
                })?;
                let planted = Evidence {
                    token: Some(token),
                    ..(**golden).clone()
                };
                check_same_image(ctx, id, &planted, &e, &format!("after resume {cycle}"))
            }
            Memory::Probe => {
                let c: Counter = ctx.probe_json(Method::GET, id, "/counter").await?;
                ctx.ensure(c.counter == cycle, "ID-11", || {
                    format!(
                        "in-memory counter of {id} is {} after resume {cycle}, expected {cycle}: its memory did not come from its own last snapshot",
                        c.counter
                    )
                })?;
                let golden = &ctx.golden().golden_actor_id;
                let s: Snapshot = ctx.probe_json(Method::GET, id, "/snapshot").await?;
                ensure!(
                    &s.identity_at_start == golden,
                    "actor {id}'s process is not the one restored from the golden snapshot (it read {:?} at start)",
                    s.identity_at_start
                );
                Ok(())
            }
        }
    }
}

/// The token planted before suspend `cycle`: unique to the run and cycle.
fn cycle_token(ctx: &Ctx, cycle: u64) -> String {
    ctx.unique(&format!("cycle-{cycle}"))
}

/// ID-10/11/15: suspend, then a request through the router resumes the
/// actor on demand from its own snapshot; it reads its own ID and keeps
/// its own in-memory state. Twice.
async fn suspend_resume_cycle(ctx: Ctx) -> anyhow::Result<()> {
    let id = running_actor(&ctx, "probe-cycle").await?;
    let r = ctx.router();
    let memory = Memory::new(&ctx).await?;
    for cycle in 1..=2u64 {
        memory.mark(&ctx, &id, cycle).await?;
        let info = ctx
            .phase(
                format!("suspend {id} (cycle {cycle})"),
                ctx.backend().suspend(ctx.atespace(), &id),
            )
            .await?;
        ensure!(
            info.state.is_suspended(),
            "actor {id} is {} after suspend, expected Suspended",
            info.state
        );
        if let Some(dir) = host_identity_dir(&ctx, &id).await? {
            let left: Vec<String> = std::fs::read_dir(&dir)
                .map(|it| {
                    it.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            ctx.ensure(left.is_empty(), "ID-10", || {
                format!(
                    "after suspending {id} its host identity dir {} still holds {left:?}",
                    dir.display()
                )
            })?;
        }
        let w = ctx
            .phase(
                format!("whoami {id} via router, resumes on demand (cycle {cycle})"),
                r.get_json::<Whoami>(ctx.atespace(), &id, "/whoami"),
            )
            .await
            .map_err(|e| {
                ctx.violation_context(
                    e,
                    "ID-15",
                    format!(
                        "a request to suspended actor {id} through the router did not resume it"
                    ),
                )
            })?;
        check_own_identity(&ctx, &id, &w).map_err(|e| {
            ctx.violation_context(e, "ID-11", format!("after suspend/resume cycle {cycle}"))
        })?;
        let info = ctx.backend().get_actor(ctx.atespace(), &id).await?;
        ensure!(
            info.state.is_running(),
            "actor {id} is {} after an on-demand resume, expected Running",
            info.state
        );
        if let Some(from) = info.restored_from {
            ctx.ensure(from == RestoreSource::Own, "ID-11", || {
                format!("actor {id} was resumed from {from:?} after a suspend, expected its own snapshot")
            })?;
        }
        memory.check(&ctx, &id, cycle).await?;
    }
    Ok(())
}

/// ID-15: the router routes on Host, accepts a trailing dot and a port,
/// answers 400 naming the rule for malformed names and 404 for unknown
/// actors.
async fn router_host_names(ctx: Ctx) -> anyhow::Result<()> {
    let id = running_actor(&ctx, "probe-router").await?;
    let r = ctx.router();
    let host = ate_harness::router::actor_host(&id, ctx.atespace());
    for h in [
        format!("{host}."),
        format!("{host}:80"),
        format!("{host}.:8080"),
    ] {
        let resp = r
            .send_with_host(reqwest::Method::GET, Some(&h), "/whoami")
            .await?
            .ok()?;
        let w: Whoami = resp.json()?;
        check_own_identity(&ctx, &id, &w)
            .map_err(|e| ctx.violation_context(e, "ID-15", format!("with Host {h:?}")))?;
    }
    let unknown = ate_harness::router::actor_host(&ctx.unique("no-such-actor"), ctx.atespace());
    let resp = r
        .send_with_host(reqwest::Method::GET, Some(&unknown), "/whoami")
        .await?;
    ctx.ensure(resp.status == 404, "ID-15", || {
        format!(
            "Host {unknown:?} (no such actor) answered {}, expected 404: {}",
            resp.status,
            resp.body_text()
        )
    })?;
    let cases = [
        (
            format!(
                "Bad_Name.{}.actors.resources.substrate.ate.dev",
                ctx.atespace()
            ),
            "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        ),
        (
            format!("-a.{}.actors.resources.substrate.ate.dev", ctx.atespace()),
            "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        ),
        (
            format!(
                "{}.{}.actors.resources.substrate.ate.dev",
                "a".repeat(64),
                ctx.atespace()
            ),
            "63",
        ),
        (
            format!("{id}.{}.example.com", ctx.atespace()),
            "actors.resources.substrate.ate.dev",
        ),
        (
            "127.0.0.1".to_string(),
            "actors.resources.substrate.ate.dev",
        ),
    ];
    for (h, rule) in cases {
        let resp = r
            .send_with_host(reqwest::Method::GET, Some(&h), "/whoami")
            .await?;
        if resp.status != 400 {
            return Err(ctx.violations(
                &["ID-14", "ID-15"],
                format!(
                    "Host {h:?} answered {}, expected 400: {}",
                    resp.status,
                    resp.body_text()
                ),
            ));
        }
        if !resp.body_text().contains(rule) {
            return Err(ctx.violations(
                &["ID-14", "ID-15"],
                format!(
                    "the 400 for Host {h:?} does not name the rule {rule:?}: {}",
                    resp.body_text()
                ),
            ));
        }
    }
    Ok(())
}

/// ID-8: each actor has its own host identity directory, holding only its
/// own ID.
async fn own_identity_dir_per_actor(ctx: Ctx) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = tokio::try_join!(
        running_actor(&ctx, "probe-hostdir-a"),
        running_actor(&ctx, "probe-hostdir-b")
    )?;
    let (da, db) = tokio::try_join!(host_identity_dir(&ctx, &a), host_identity_dir(&ctx, &b))?;
    let (Some(da), Some(db)) = (da, db) else {
        bail!(
            "backend {} has host access but does not show actors' identity directories",
            ctx.backend().name()
        );
    };
    let (ma, mb) = (std::fs::metadata(&da)?, std::fs::metadata(&db)?);
    ctx.ensure(
        da != db && (ma.dev(), ma.ino()) != (mb.dev(), mb.ino()),
        "ID-8",
        || {
            format!(
                "actors {a} and {b} share one host identity directory ({} and {})",
                da.display(),
                db.display()
            )
        },
    )?;
    for (id, dir) in [(&a, &da), (&b, &db)] {
        let names: Vec<String> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names != ["actor-id"] {
            return Err(ctx.violations(
                &["ID-8", "ID-9"],
                format!(
                    "host identity dir {} of {id} holds {names:?}, expected exactly [\"actor-id\"]",
                    dir.display()
                ),
            ));
        }
        let bytes = std::fs::read(dir.join("actor-id"))?;
        ctx.ensure(bytes == id.as_bytes(), "ID-8", || {
            format!(
                "host identity dir {} of {id} holds {:?}, not its own ID",
                dir.display(),
                String::from_utf8_lossy(&bytes)
            )
        })?;
    }
    Ok(())
}

/// ID-9: while the host rewrites actor-id over and over, a reader inside
/// the actor sees the old value or the new one, never a torn, empty or
/// missing file; afterwards exactly one entry remains, 0644 in a 0755 dir.
async fn atomic_rewrite_is_never_torn(ctx: Ctx) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    const MS: u64 = 1500;
    let id = running_actor(&ctx, "probe-atomic").await?;
    let other = format!("{id}-rewritten");
    let values = vec![id.clone(), other.clone()];
    let host = ctx.host()?;
    let (watch, writes) = ctx
        .phase(
            format!("{MS} ms of host rewrites while the actor reads"),
            async {
                tokio::join!(
                    ctx.identity_watch(&id, MS),
                    host.rewrite_identity(ctx.atespace(), &id, &values, MS)
                )
            },
        )
        .await;
    let writes = writes?;
    let watch = watch?;
    let seen: Vec<(String, u64)> = watch
        .distinct
        .iter()
        .map(|v| {
            (
                String::from_utf8_lossy(
                    &ate_harness::probe::unhex(&v.value_hex).unwrap_or_default(),
                )
                .into_owned(),
                v.count,
            )
        })
        .collect();
    ctx.note(format!(
        "{writes} host rewrites; {} reads inside the actor; values seen: {seen:?}",
        watch.reads
    ));
    eprintln!("ID-9: {writes} atomic rewrites on the host, {} concurrent reads inside the actor, values seen {seen:?}", watch.reads);
    ctx.ensure(watch.errors == 0 && watch.empty_reads == 0, "ID-9", || {
        format!(
            "during {writes} rewrites the actor saw {} failed reads (first: {}) and {} empty reads out of {}: the replace is not atomic",
            watch.errors,
            watch.first_error.as_deref().unwrap_or("none"),
            watch.empty_reads,
            watch.reads
        )
    })?;
    let torn: Vec<&(String, u64)> = seen
        .iter()
        .filter(|(v, _)| v != &id && v != &other)
        .collect();
    ctx.ensure(torn.is_empty(), "ID-9", || {
        format!("the actor read torn values {torn:?} while the host rewrote {id:?} <-> {other:?}")
    })?;
    ensure!(
        seen.iter().any(|(v, _)| v == &other),
        "the actor never saw any of {writes} rewrites in {} reads ({seen:?}): it does not read the file fresh (ID-3), so atomicity cannot be judged",
        watch.reads
    );
    let w = whoami(&ctx, &id).await?;
    check_own_identity(&ctx, &id, &w).context("after the rewrites")?;
    let d = ctx.identity_dir(&id).await?;
    let entries: Vec<(String, String)> = d
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.mode.clone()))
        .collect();
    ctx.ensure(
        entries == [("actor-id".to_string(), "0644".to_string())],
        "ID-9",
        || format!("after the rewrites /run/ate holds {entries:?}, expected exactly actor-id with mode 0644 (no temp file left)"),
    )?;
    if let Some(dir) = host_identity_dir(&ctx, &id).await? {
        let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o7777;
        ctx.ensure(mode == 0o755, "ID-9", || {
            format!(
                "host identity dir {} has mode {mode:o}, expected 755",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// ID-13: an image that plants a symlink where the runtime creates its
/// mount point (`run -> /outside`, or `run/ate -> ../../..`) makes the
/// golden run fail with an error naming the path, and nothing is written
/// outside the rootfs.
async fn planted_symlink_is_refused(ctx: Ctx) -> anyhow::Result<()> {
    let outside = tempfile::Builder::new().prefix("ate-outside-").tempdir()?;
    let out = outside
        .path()
        .to_str()
        .context("temp path is not UTF-8")?
        .to_owned();
    let cases = [
        (
            "probe-evil-abs",
            vec![("run".to_string(), out.clone())],
            "run",
        ),
        (
            "probe-evil-rel",
            vec![("run/ate".to_string(), "../../..".to_string())],
            "run/ate",
        ),
    ];
    let host = ctx.host()?;
    for (base, links, path) in cases {
        let outcome = ctx
            .phase(
                format!("deploy {base} ({links:?})"),
                host.deploy_probe_with_symlinks(base, &links, Duration::from_secs(60)),
            )
            .await?;
        let name = outcome.name.clone();
        ctx.defer(format!("delete template {name}"), {
            let b = ctx.clone();
            async move { Ok(b.backend().delete_template(&name).await?) }
        });
        let reason = outcome.reason.clone().unwrap_or_default();
        ctx.ensure(outcome.phase == TemplatePhase::Failed, "ID-13", || {
            format!(
                "template {} whose image plants {links:?} became {:?}: the runtime created its mount point through the symlink",
                outcome.name,
                outcome.phase
            )
        })?;
        // The refusal must be for the planted path: the reference agent says
        // "<path> is a symlink"; upstream's atelet creates the mount point
        // through os.Root, which refuses with "path escapes from parent"
        // naming "run/ate" (cmd/atelet/oci.go:235-250).
        ctx.note(format!("{} refused: {reason}", outcome.name));
        let names_it = reason.contains(&format!("{path} is a symlink"))
            || (reason.contains("run/ate") && reason.contains("escapes"));
        ctx.ensure(names_it, "ID-13", || {
            format!(
                "template {} failed, but the error does not name the symlink {path:?} as the reason: {reason}",
                outcome.name
            )
        })?;
        let written: Vec<String> = std::fs::read_dir(outside.path())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ctx.ensure(written.is_empty(), "ID-13", || {
            format!(
                "the runtime wrote {written:?} into {} outside the rootfs",
                outside.path().display()
            )
        })?;
    }
    Ok(())
}

/// ID-12: in a restored actor's sandbox the pause container's bundle
/// mounts nothing at or under `/run/ate` and nothing from the actor's
/// identity directory, and its rootfs has no `run/ate`; the app container
/// of the same sandbox does have the read-only bind of that directory, so
/// the check is looking at the right files.
async fn pause_container_has_no_identity(ctx: Ctx) -> anyhow::Result<()> {
    use ate_harness::backend::ContainerRole;
    let id = running_actor(&ctx, "probe-pause").await?;
    let host = ctx.host()?;
    let identity = host
        .actor_dirs(ctx.atespace(), &id)
        .await?
        .identity
        .context("the backend does not show the actor's identity directory")?;
    let identity = identity.canonicalize().unwrap_or(identity);
    let containers = host.containers(ctx.atespace(), &id).await?;
    let one = |role: ContainerRole| -> anyhow::Result<_> {
        let of_role: Vec<_> = containers.iter().filter(|c| c.role == role).collect();
        ensure!(
            of_role.len() == 1,
            "actor {id}'s sandbox has {} {role:?} containers, expected exactly one: {containers:?}",
            of_role.len()
        );
        Ok(of_role[0])
    };
    let (pause, app) = (one(ContainerRole::Pause)?, one(ContainerRole::App)?);
    let config = |bundle: &std::path::Path| -> anyhow::Result<serde_json::Value> {
        let path = bundle.join("config.json");
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("cannot parse {}", path.display()))
    };
    let under_run_ate = |m: &serde_json::Value| {
        let d = m["destination"]
            .as_str()
            .unwrap_or("")
            .trim_end_matches('/');
        d == "/run/ate" || d.starts_with("/run/ate/")
    };
    // Paths in a bundle are the runtime's view of the machine; the host
    // may see them elsewhere (the node backend's private mount namespace).
    let from_identity = |m: &serde_json::Value| {
        m["source"].as_str().is_some_and(|s| {
            let s = host.host_path(std::path::Path::new(s));
            let s = s.canonicalize().unwrap_or(s);
            s.starts_with(&identity)
        })
    };
    let mounts = |cfg: &serde_json::Value| cfg["mounts"].as_array().cloned().unwrap_or_default();

    // The app container: the read-only bind is there (else this trial
    // could not tell a pause bundle from any other).
    let app_cfg = config(&app.bundle)?;
    let app_binds: Vec<_> = mounts(&app_cfg)
        .into_iter()
        .filter(|m| under_run_ate(m) && from_identity(m))
        .collect();
    ensure!(
        app_binds.iter().any(|m| m["options"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "ro"))),
        "the app container {} of actor {id} has no read-only bind of {} at /run/ate in {}; mounts: {}",
        app.id,
        identity.display(),
        app.bundle.display(),
        serde_json::Value::Array(mounts(&app_cfg))
    );

    // The pause container: no identity mount, no mount point.
    let pause_cfg = config(&pause.bundle)?;
    let bad: Vec<_> = mounts(&pause_cfg)
        .into_iter()
        .filter(|m| under_run_ate(m) || from_identity(m))
        .collect();
    ctx.ensure(bad.is_empty(), "ID-12", || {
        format!(
            "the pause container {} of actor {id} mounts the identity: {} in {}",
            pause.id,
            serde_json::Value::Array(bad.clone()),
            pause.bundle.join("config.json").display()
        )
    })?;
    let root = pause_cfg["root"]["path"]
        .as_str()
        .context("the pause bundle's config.json has no root.path")?;
    let root = pause
        .bundle
        .join(host.host_path(std::path::Path::new(root)));
    ensure!(
        root.is_dir(),
        "the pause container's rootfs {} is not a directory",
        root.display()
    );
    let mount_point = root.join("run/ate");
    ctx.ensure(
        std::fs::symlink_metadata(&mount_point).is_err(),
        "ID-12",
        || {
            format!(
            "the pause container {} of actor {id} has the identity mount point {} in its rootfs",
            pause.id,
            mount_point.display()
        )
        },
    )?;
    let app_root = app_cfg["root"]["path"]
        .as_str()
        .map(|r| app.bundle.join(host.host_path(std::path::Path::new(r))));
    ensure!(
        app_root.as_deref() != Some(root.as_path()),
        "the pause and app containers of actor {id} share one rootfs {}",
        root.display()
    );
    Ok(())
}
