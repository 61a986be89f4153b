//! The harness's checker run by the agent on real gVisor sandboxes: the
//! golden is marked before its checkpoint, `POST .../check` runs
//! `ate-check` in a RUNNING actor's sandbox and answers its JSON, refuses
//! a suspended or unknown actor with the API's error kinds and hands the
//! checker's usage error back as `invalid`. The template runs the minimal
//! probe (only `/whoami` and `/healthz`): nothing here depends on the
//! actor's program. Needs root and runsc.

mod support;

use std::time::Duration;

use anyhow::{ensure, Context};
use ate_agent_api::client::ApiError;
use ate_agent_api::{ErrorKind, Phase, TemplateSpec};
use ate_checker::{Command, Env, Evidence, IdentityDir, IdentityWatch, TryWrite};

fn kind_of(e: &ApiError) -> Option<ErrorKind> {
    e.kind()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_observe_running_actors_and_the_golden_is_marked() -> anyhow::Result<()> {
    let bins = support::bins().await?;
    let probe = bins
        .minimal_probe()
        .context("the minimal probe is built with ours")?;
    let dir = support::test_dir("ate-check-")?;
    let mut guard = support::spawn(
        &bins,
        &dir.path().join("state"),
        &dir.path().join("agent.log"),
    )
    .await?;
    let api = guard.client().clone();
    let instance = guard.line().instance.clone();

    let spec = TemplateSpec {
        env: vec!["ATE_CHECK_TEST=seen in environ".into()],
        ..TemplateSpec::new("probe", &probe)
    };
    let t = api.deploy_template(&spec, Duration::from_secs(60)).await?;
    ensure!(t.status.phase == Phase::Ready, "{:?}", t.status);
    let golden = t.status.golden_evidence.context("no golden evidence")?;
    let token = golden
        .token
        .clone()
        .context("the golden carries no token")?;
    ensure!(token.starts_with("golden-") && token.len() == 39, "{token}");
    let gp = golden.actor.clone().context("no golden actor process")?;
    ensure!(gp.pid == 1 && gp.comm.starts_with("ate-probe"), "{gp:?}");
    ensure!(golden.boot_id.is_some(), "{golden:?}");

    // Another golden is another cold boot: its own token and boot_id, so
    // equal ones in an actor mean a restore of this golden.
    let other = api
        .deploy_template(
            &TemplateSpec::new("probe-2", &probe),
            Duration::from_secs(60),
        )
        .await?
        .status
        .golden_evidence
        .context("no evidence for the second golden")?;
    ensure!(other.token != golden.token, "{other:?} vs {golden:?}");
    ensure!(other.boot_id != golden.boot_id, "{other:?} vs {golden:?}");
    api.delete_template("probe-2").await?;

    api.create_atespace("team-a").await?;
    api.create_actor("team-a", "a1", "probe").await?;
    api.resume("team-a", "a1").await?;

    // A restore of the golden: its token, boot_id, PID and start time.
    let e: Evidence = api.check("team-a", "a1", &Command::Evidence).await?;
    ensure!(e.token == golden.token, "{e:?} vs golden {golden:?}");
    ensure!(e.boot_id == golden.boot_id, "{e:?} vs golden {golden:?}");
    ensure!(e.actor == golden.actor, "{e:?} vs golden {golden:?}");

    let d: IdentityDir = api.check("team-a", "a1", &Command::Mounts).await?;
    ensure!(
        d.mounts.len() == 1 && d.mounts[0].mount_point == "/run/ate",
        "{d:?}"
    );
    ensure!(d.mounts[0].read_only(), "{d:?}");
    let names: Vec<_> = d
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.mode.as_str(), e.size))
        .collect();
    ensure!(names == [("actor-id", "0644", 2)], "{d:?}");

    let tw: TryWrite = api.check("team-a", "a1", &Command::TryWrite).await?;
    ensure!(tw.attempts.len() == 5, "{tw:?}");
    for a in &tw.attempts {
        ensure!(!a.ok && matches!(a.errno, Some(30) | Some(13)), "{a:?}");
    }

    let env: Env = api.check("team-a", "a1", &Command::Env).await?;
    ensure!(env.pid == Some(1) && env.error.is_none(), "{env:?}");
    ensure!(
        env.env.get("ATE_CHECK_TEST").map(String::as_str) == Some("seen in environ"),
        "{env:?}"
    );

    let w: IdentityWatch = api
        .check("team-a", "a1", &Command::Watch { ms: 50 })
        .await?;
    ensure!(w.reads > 0 && w.errors == 0 && w.empty_reads == 0, "{w:?}");
    ensure!(
        w.distinct.len() == 1 && w.distinct[0].value_hex == "6131",
        "{w:?}"
    );

    // The mark survives the actor's own checkpoint and restore.
    let m: Evidence = api
        .check(
            "team-a",
            "a1",
            &Command::Mark {
                token: "own-1".into(),
            },
        )
        .await?;
    ensure!(m.token.as_deref() == Some("own-1"), "{m:?}");
    api.suspend("team-a", "a1").await?;

    // Suspended: refused as a wrong state, naming it.
    let err = api
        .check::<Evidence>("team-a", "a1", &Command::Evidence)
        .await
        .unwrap_err();
    ensure!(kind_of(&err) == Some(ErrorKind::WrongState), "{err}");
    ensure!(
        err.to_string()
            .contains("only a RUNNING actor can be checked"),
        "{err}"
    );
    let err = api
        .check::<Evidence>("team-a", "ghost", &Command::Evidence)
        .await
        .unwrap_err();
    ensure!(kind_of(&err) == Some(ErrorKind::NotFound), "{err}");

    api.resume("team-a", "a1").await?;
    let e: Evidence = api.check("team-a", "a1", &Command::Evidence).await?;
    ensure!(e.token.as_deref() == Some("own-1"), "{e:?}");
    ensure!(e.boot_id == golden.boot_id, "{e:?}");

    // The checker's own usage error comes back as invalid, with its words.
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .post(format!(
            "http://{}/atespaces/team-a/actors/a1/check",
            guard.line().control
        ))
        .json(&serde_json::json!({ "args": ["watch", "--ms", "0"] }))
        .send()
        .await?;
    ensure!(resp.status().as_u16() == 400, "{}", resp.status());
    let body: serde_json::Value = resp.json().await?;
    ensure!(body["kind"] == "invalid", "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    ensure!(
        msg.contains(
            "the checker says: ate-check: bad --ms value \"0\": must be an integer in 1..=10000"
        ),
        "{msg}"
    );

    api.suspend("team-a", "a1").await?;
    api.delete_actor("team-a", "a1").await?;
    let agent = guard.take();
    agent.stop(support::TERM_GRACE).await?;
    let left = support::runsc_ids_of(&instance).await?;
    ensure!(left.is_empty(), "sandboxes left: {left:?}");
    Ok(())
}
