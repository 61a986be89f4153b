//! The agent killed with SIGKILL while an actor runs: its sandbox is left
//! behind (runsc still lists it); the next agent on the same state dir
//! removes it by ID and says so, and the actor resumes with its own ID and
//! the in-memory state of its own last snapshot. Real runsc, real agent,
//! both started through the one client; needs root.

mod support;

use std::time::Duration;

use ate_agent_api::{ActorState, Phase, TemplateSpec};
use ate_harness::probe::{Counter, Whoami};
use ate_harness::router::RouterClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_orphans_are_removed_and_actor_resumes_its_own_state() -> anyhow::Result<()>
{
    let bins = support::bins().await?;
    let dir = support::test_dir("ate-crash-test-")?;
    let state = dir.path().join("state");

    let mut a1 = support::spawn(&bins, &state, &dir.path().join("agent-1.log")).await?;
    let api = a1.client().clone();
    let t = api
        .deploy_template(
            &TemplateSpec::new("probe", &bins.probe),
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(
        t.status.phase,
        Phase::Ready,
        "the probe template did not become Ready: {:?}",
        t.status.reason
    );
    api.create_atespace("crash").await?;
    api.create_actor("crash", "survivor", "probe").await?;
    api.resume("crash", "survivor").await?;
    let r1 = RouterClient::new(a1.line().router);
    let c: Counter = r1.post_json("crash", "survivor", "/counter").await?;
    assert_eq!(c.counter, 1);
    // Its own snapshot now holds counter = 1.
    api.suspend("crash", "survivor").await?;
    let v = api.resume("crash", "survivor").await?;
    let cid = v
        .sandbox
        .clone()
        .expect("a RUNNING actor names its sandbox");
    let containers = support::container_ids(&v);
    assert_eq!(containers.len(), 2, "pause and app: {v:?}");
    let c: Counter = r1.post_json("crash", "survivor", "/counter").await?;
    assert_eq!(c.counter, 2, "in-memory only, never checkpointed");

    // SIGKILL alone: no chance to clean up.
    let status = a1.take().kill().await?;
    eprintln!("first agent killed: {status}");
    assert!(
        support::runsc_ids().await?.contains(&cid),
        "the killed agent's sandbox {cid} should still be listed"
    );

    let a2 = support::spawn(&bins, &state, &dir.path().join("agent-2.log")).await?;
    let orphans = a2.line().orphans_removed.clone();
    eprintln!("orphans removed by the new agent: {orphans:?}");
    for c in &containers {
        assert!(
            orphans.contains(c),
            "the new agent did not report removing {c} (of sandbox {cid}): {orphans:?}"
        );
        assert!(
            !support::runsc_ids().await?.contains(c),
            "orphan {c} is still listed by runsc"
        );
    }

    let api = a2.client().clone();
    let v = api.actor("crash", "survivor").await?;
    assert_eq!(v.state, ActorState::Suspended, "{v:?}");
    api.resume("crash", "survivor").await?;
    let r2 = RouterClient::new(a2.line().router);
    let w: Whoami = r2.get_json("crash", "survivor", "/whoami").await?;
    assert_eq!(w.file, "survivor", "own ID after the crash");
    let c: Counter = r2.get_json("crash", "survivor", "/counter").await?;
    assert_eq!(
        c.counter, 1,
        "state must come from the actor's own last snapshot"
    );

    let instance = a2.line().instance.clone();
    let mut a2 = a2;
    a2.take().stop(Duration::from_secs(30)).await?;
    let left = support::runsc_ids_of(&instance).await?;
    assert!(left.is_empty(), "sandboxes left after SIGTERM: {left:?}");
    Ok(())
}
