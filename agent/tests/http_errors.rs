//! The router's and control API's answers to bad input, over real HTTP on
//! loopback, with a real engine on a temp state dir. None of these calls
//! may reach runsc: each is rejected before anything starts, and nothing
//! changes state (checked by listing afterwards).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use ate_refagent::api::{self, ApiState};
use ate_refagent::engine::Engine;
use ate_refagent::router;
use serde_json::{json, Value};

struct Served {
    control: SocketAddr,
    router: SocketAddr,
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    // Never called by these tests: a program that does not exist makes
    // any accidental call fail loudly.
    let cfg = support::in_process_config(
        dir.path().to_path_buf(),
        "/nonexistent/runsc-must-not-be-called".into(),
    );
    let (engine, orphans) = Engine::open(cfg).await.unwrap();
    assert!(orphans.is_empty());
    let c = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (control, router_addr) = (c.local_addr().unwrap(), r.local_addr().unwrap());
    let state = ApiState {
        engine: engine.clone(),
        runsc_version: "test".into(),
        state_dir: dir.path().to_path_buf(),
        detach: None,
    };
    tokio::spawn(async move { axum::serve(c, api::app(state)).await.unwrap() });
    let e = engine.clone();
    tokio::spawn(async move { axum::serve(r, router::app(e)).await.unwrap() });
    Served {
        control,
        router: router_addr,
        _dir: dir,
        engine,
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.request(method.parse().unwrap(), format!("http://{addr}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn routed(addr: SocketAddr, host: Option<&str>) -> (u16, String) {
    // A raw request, so the Host line is exactly what the test says (or
    // absent).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let host_line = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    s.write_all(format!("GET /whoami HTTP/1.1\r\n{host_line}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    // The error message itself, unescaped, when the body is our JSON.
    let msg = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from));
    (status, msg.unwrap_or(body))
}

const LABEL_RULE: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const DOMAIN: &str = "actors.resources.substrate.ate.dev";

#[tokio::test]
async fn router_rejects_bad_hosts_naming_the_rule() {
    let s = serve().await;
    s.engine.create_atespace("team-a").unwrap();
    let long = "a".repeat(64);
    let cases: Vec<(Option<String>, u16, &str)> = vec![
        (None, 400, "missing"),
        (Some(String::new()), 400, "missing"),
        (
            Some(format!("Probe.team-a.{DOMAIN}")),
            404,
            "actor \"team-a/probe\" not found",
        ),
        (Some(format!("-x.team-a.{DOMAIN}")), 400, LABEL_RULE),
        (Some(format!("{long}.team-a.{DOMAIN}")), 400, "63"),
        (Some(format!("x.{DOMAIN}")), 400, "names no atespace"),
        (Some("x.team-a.example.com".into()), 400, DOMAIN),
        (Some("127.0.0.1:8080".into()), 400, "127.0.0.1"),
        (Some(format!("x.team-a.{DOMAIN}:notaport")), 400, "port"),
        (Some(format!("x.y.team-a.{DOMAIN}")), 400, "x.y.team-a"),
        // Well-formed, but nothing there.
        (
            Some(format!("ghost.team-a.{DOMAIN}")),
            404,
            "actor \"team-a/ghost\" not found",
        ),
        (Some(format!("ghost.team-a.{DOMAIN}.:80")), 404, "not found"),
        (
            Some(format!("ghost.nowhere.{DOMAIN}")),
            404,
            "atespace \"nowhere\" not found",
        ),
    ];
    for (host, status, needle) in cases {
        let (got, body) = routed(s.router, host.as_deref()).await;
        assert_eq!(got, status, "Host {host:?}: body {body}");
        assert!(
            body.contains(needle),
            "Host {host:?}: body {body} does not mention {needle:?}"
        );
    }
}

#[tokio::test]
async fn api_rejects_bad_names_and_wrong_state_without_changing_anything() {
    let s = serve().await;
    let c = s.control;
    // Names (ID-14): each 400 names the field and the rule.
    let long = "a".repeat(64);
    for (name, needle) in [
        ("", "must not be empty"),
        ("Team", LABEL_RULE),
        ("-team", LABEL_RULE),
        ("team-", LABEL_RULE),
        ("te.am", LABEL_RULE),
        ("te/am", LABEL_RULE),
        ("..", LABEL_RULE),
        ("tëam", LABEL_RULE),
        ("te\0am", LABEL_RULE),
        (long.as_str(), "at most 63"),
    ] {
        let (st, body) = call(c, "POST", "/atespaces", Some(json!({ "name": name }))).await;
        assert_eq!(st, 400, "atespace {name:?}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains("atespace") && msg.contains(needle),
            "atespace {name:?}: {msg}"
        );
    }
    let (st, body) = call(
        c,
        "POST",
        "/atespaces",
        Some(json!({ "name": "ate-golden" })),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("reserved"),
        "{body}"
    );
    let (st, body) = call(c, "POST", "/atespaces", Some(json!({ "nom": "x" }))).await;
    assert_eq!(st, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("name"), "{body}");
    let (_, list) = call(c, "GET", "/atespaces", None).await;
    assert_eq!(
        list["atespaces"],
        json!([]),
        "a rejected call changed state"
    );

    // Actor and template names.
    s.engine.create_atespace("team-a").unwrap();
    let (st, body) = call(
        c,
        "POST",
        "/atespaces/team-a/actors",
        Some(json!({ "id": "Alpha", "template": "probe" })),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("actor id \"Alpha\""),
        "{body}"
    );
    let (st, body) = call(
        c,
        "POST",
        "/atespaces/team-a/actors",
        Some(json!({ "id": "alpha", "template": "no-such" })),
    )
    .await;
    assert_eq!(st, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("template \"no-such\" not found"),
        "{body}"
    );
    let (st, body) = call(
        c,
        "POST",
        "/atespaces/nowhere/actors",
        Some(json!({ "id": "alpha", "template": "probe" })),
    )
    .await;
    assert_eq!(st, 404, "{body}");

    // Template specs.
    for (spec, needle) in [
        (
            json!({ "name": "p", "binary": "relative/probe" }),
            "absolute",
        ),
        (
            json!({ "name": "p", "binary": "/nonexistent/probe" }),
            "must exist",
        ),
        (
            json!({ "name": "p", "binary": "/etc" }),
            "executable regular file",
        ),
        (
            json!({ "name": "p", "binary": "/bin/true", "port": 0 }),
            "1..=65535",
        ),
        (
            json!({ "name": "p", "binary": "/bin/true", "port": 70000 }),
            "port",
        ),
        (
            json!({ "name": "P_Q", "binary": "/bin/true" }),
            "template name",
        ),
        (
            json!({ "name": "p", "binary": "/bin/true", "args": ["rel"] }),
            "absolute path inside the image",
        ),
        (
            json!({ "name": "p", "binary": "/bin/true", "env": ["NOEQUALS"] }),
            "KEY=VALUE",
        ),
    ] {
        let (st, body) = call(c, "POST", "/templates", Some(spec.clone())).await;
        assert_eq!(st, 400, "{spec}: {body}");
        let msg = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(msg.contains(needle), "{spec}: {msg}");
    }
    let (_, list) = call(c, "GET", "/templates", None).await;
    assert_eq!(list["templates"], json!([]), "a rejected template was kept");

    // Unknown things are 404 with the name.
    for path in [
        "/templates/nope",
        "/atespaces/team-a/actors/ghost",
        "/atespaces/nowhere/actors/ghost",
    ] {
        let (st, body) = call(c, "GET", path, None).await;
        assert_eq!(st, 404, "{path}: {body}");
    }
    for path in [
        "/atespaces/team-a/actors/ghost/resume",
        "/atespaces/team-a/actors/ghost/suspend",
    ] {
        let (st, body) = call(c, "POST", path, None).await;
        assert_eq!(st, 404, "{path}: {body}");
    }
    let (st, _) = call(c, "DELETE", "/atespaces/team-a/actors/ghost", None).await;
    assert_eq!(st, 404);
    let (st, body) = call(c, "POST", "/atespaces", Some(json!({ "name": "team-a" }))).await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already exists"),
        "{body}"
    );
}

#[tokio::test]
async fn info_shows_no_fault_and_rewrite_checks_times_and_for_ms() {
    let s = serve().await;
    let c = s.control;
    let (st, info) = call(c, "GET", "/info", None).await;
    assert_eq!(st, 200, "{info}");
    assert_eq!(info["fault"], Value::Null, "{info}");

    s.engine.create_atespace("team-a").unwrap();
    let path = "/atespaces/team-a/actors/ghost/identity/rewrite";
    for body in [
        json!({ "values": ["x"], "for_ms": 0 }),
        json!({ "values": ["x"], "for_ms": 30_001 }),
        json!({ "values": ["x"], "for_ms": 60_001, "times": 10 }),
        json!({ "values": ["x"], "for_ms": 100, "times": 0 }),
        json!({ "values": ["x"], "for_ms": 100, "times": 100_001 }),
        json!({ "values": [], "for_ms": 100, "times": 1 }),
        json!({ "values": ["x"], "times": 1 }),
    ] {
        let (st, resp) = call(c, "POST", path, Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {resp}");
    }
    // Within bounds: only the actor is missing.
    for body in [
        json!({ "values": ["x"], "for_ms": 30_000 }),
        json!({ "values": ["x"], "for_ms": 60_000, "times": 100_000 }),
        json!({ "values": ["x"], "for_ms": 1, "times": 1 }),
    ] {
        let (st, resp) = call(c, "POST", path, Some(body.clone())).await;
        assert_eq!(st, 404, "{body}: {resp}");
    }
}

#[tokio::test]
async fn check_validates_its_args_and_needs_a_checker() {
    // This engine was opened without --checker-bin.
    let s = serve().await;
    let c = s.control;
    s.engine.create_atespace("team-a").unwrap();
    let path = "/atespaces/team-a/actors/ghost/check";
    let long = "x".repeat(300);
    let nine: Vec<String> = (0..9).map(|i| i.to_string()).collect();
    for (body, says) in [
        (json!({ "args": [] }), "invalid args \"\": 1..=8 arguments"),
        (
            json!({ "args": nine }),
            "invalid args \"0 1 2 3 4 5 6 7 8\"",
        ),
        (
            json!({ "args": ["mark", "--token", long] }),
            "... (300 bytes)\": 1..=8 arguments of at most 256 bytes",
        ),
        (json!({ "argv": ["evidence"] }), "invalid request body"),
    ] {
        let (st, resp) = call(c, "POST", path, Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {resp}");
        assert_eq!(resp["kind"], "invalid", "{resp}");
        let msg = resp["error"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let (st, resp) = call(c, "POST", path, Some(json!({ "args": ["evidence"] }))).await;
    assert_eq!(st, 409, "{resp}");
    assert_eq!(
        resp["error"].as_str().unwrap(),
        "cannot check actor team-a/ghost: it is on an agent started without --checker-bin; \
         start the agent with --checker-bin PATH (the static ate-check)"
    );
}
