//! Runs real processes.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use ate_cmd::{install_hint, Cmd, CmdError, Stdio};

/// A `/bin/sleep` argument no other test uses, to find the process in /proc.
fn marker(test: u32) -> String {
    format!("{}.{}", 3000 + test, std::process::id())
}

/// `xargs` reads the marker from stdin and runs `/bin/sleep <marker>` as its
/// child, in its process group. Unlike timeout(1), xargs does not pass
/// `SIGTERM` on to its child: only a signal to the group ends both.
fn xargs_sleep(marker: &str) -> Cmd {
    Cmd::new("/usr/bin/xargs")
        .arg("/bin/sleep")
        .stdin_bytes(marker)
}

fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Waits for the `sleep <marker>` process and returns every live member of
/// its process group.
async fn find_group(marker: &str) -> (u32, Vec<u32>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sleeper = all_pids().into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()))
                .unwrap_or(false)
        });
        if let Some((_, pgrp)) = sleeper.and_then(proc_stat) {
            let members: Vec<u32> = all_pids()
                .into_iter()
                .filter(|pid| matches!(proc_stat(*pid), Some((s, g)) if g == pgrp && s != 'Z'))
                .collect();
            if members.len() >= 2 {
                return (pgrp, members);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no process group running sleep {marker}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gone, or a zombie waiting for its reaper (pid 1 for orphans).
fn is_dead(pid: u32) -> bool {
    matches!(proc_stat(pid), None | Some(('Z' | 'X', _)))
}

async fn assert_all_dead(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|pid| is_dead(*pid)) {
        let alive: Vec<_> = pids.iter().filter(|p| !is_dead(**p)).collect();
        assert!(Instant::now() < deadline, "still alive: {alive:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn output_captures_stdout_and_stderr() {
    let out = Cmd::new("/bin/echo")
        .args(["hello", "world"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout_str(), "hello world\n");
    assert!(out.stderr.is_empty());

    let out = Cmd::new("/bin/ls")
        .arg("/nonexistent-ate")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "output does not fail on non-zero"
    );
    assert!(out.stderr_str().contains("/nonexistent-ate"));
}

#[tokio::test]
async fn read_stdout_trims_one_newline() {
    assert_eq!(
        Cmd::new("/bin/echo").arg("hi").read_stdout().await.unwrap(),
        "hi"
    );
    let two = Cmd::new("/usr/bin/printf")
        .arg("a\\n\\n")
        .read_stdout()
        .await
        .unwrap();
    assert_eq!(two, "a\n");
    // Looked up on PATH.
    assert_eq!(Cmd::new("echo").arg("x").read_stdout().await.unwrap(), "x");
}

#[tokio::test]
async fn run_fails_on_non_zero_with_tails() {
    let err = Cmd::new("/bin/false").run().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "command failed: `/bin/false` exited with status 1"
    );

    let err = Cmd::new("/bin/cat")
        .args(["-", "/nonexistent-ate"])
        .stdin_bytes("line one\nline two\n")
        .run()
        .await
        .unwrap_err();
    let CmdError::Failed { status, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err.to_string(),
        "command failed: `/bin/cat - /nonexistent-ate` exited with status 1\n\
         stdout:\n    line one\n    line two\n\
         stderr:\n    /bin/cat: /nonexistent-ate: No such file or directory"
    );
}

#[tokio::test]
async fn not_found_names_the_program() {
    let err = Cmd::new("ate-no-such-program").output().await.unwrap_err();
    assert!(
        matches!(err, CmdError::NotFound { hint: None, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "command not found: `ate-no-such-program`");

    // A path is not looked up first: ENOENT from spawning says the same.
    let err = Cmd::new("/nonexistent-ate/runsc").run().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "command not found: `/nonexistent-ate/runsc` (install it with: apt-get install -y runsc)"
    );
    assert!(matches!(
        Cmd::new("/nonexistent-ate/x").spawn(),
        Err(CmdError::NotFound { .. })
    ));

    // A PATH set for the child is the one searched.
    let err = Cmd::new("echo")
        .env("PATH", "/nonexistent-ate")
        .output()
        .await
        .unwrap_err();
    assert!(matches!(err, CmdError::NotFound { .. }), "{err:?}");
}

#[test]
fn install_hints() {
    let hint = |p: &str| install_hint(OsStr::new(p));
    assert_eq!(hint("runsc"), Some("apt-get install -y runsc"));
    assert_eq!(hint("/usr/sbin/runsc"), Some("apt-get install -y runsc"));
    assert_eq!(hint("busybox"), Some("apt-get install -y busybox-static"));
    assert_eq!(
        hint("docker-registry"),
        Some("apt-get install -y docker-registry")
    );
    for known in ["kubectl", "kind", "ko", "cargo"] {
        assert!(hint(known).is_some(), "{known}");
    }
    assert_eq!(hint("ate-no-such-program"), None);
}

#[tokio::test]
async fn missing_cwd_is_a_spawn_error() {
    let cmd = Cmd::new("/bin/pwd").cwd("/nonexistent-ate");
    let err = cmd.output().await.unwrap_err();
    assert!(matches!(err, CmdError::Spawn { .. }), "{err:?}");
    assert_eq!(
        Cmd::new("/bin/pwd")
            .cwd("/tmp")
            .read_stdout()
            .await
            .unwrap(),
        "/tmp"
    );
}

#[tokio::test]
async fn env_set_and_removed() {
    std::env::var("HOME").expect("HOME set for this test");
    let env = Cmd::new("/usr/bin/env")
        .env("ATE_TEST_VAR", "a b")
        .env_remove("HOME")
        .read_stdout()
        .await
        .unwrap();
    assert!(env.lines().any(|l| l == "ATE_TEST_VAR=a b"), "{env}");
    assert!(!env.lines().any(|l| l.starts_with("HOME=")), "{env}");
}

#[tokio::test]
async fn stdin_bytes_are_delivered() {
    let text = "first\nsecond\n".repeat(10_000);
    let out = Cmd::new("/bin/cat")
        .stdin_bytes(text.clone())
        .output()
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), text);
}

#[tokio::test]
async fn stdin_is_null_by_default() {
    // Would hang on an inherited terminal or pipe.
    let out = Cmd::new("/bin/cat")
        .timeout(Duration::from_secs(10))
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn display_quotes_only_when_needed() {
    let cmd = Cmd::new("runsc").args(["--root", "/x", "restore", "--image-path", "/a b", "id"]);
    assert_eq!(
        cmd.to_string(),
        "runsc --root /x restore --image-path '/a b' id"
    );
    let cmd = Cmd::new("ko")
        .arg("apply")
        .arg("")
        .arg("it's")
        .env("KO_CONFIG_PATH", "/src/ate dir")
        .env("A", "1")
        .env_remove("HOME")
        .cwd("/tmp");
    assert_eq!(
        cmd.to_string(),
        r"KO_CONFIG_PATH='/src/ate dir' A=1 ko apply '' 'it'\''s'"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let marker = marker(1);
    let cmd = xargs_sleep(&marker).timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let task = tokio::spawn(async move { cmd.output().await });
    let (_, members) = find_group(&marker).await;
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(err, CmdError::Timeout { after, .. } if after == Duration::from_millis(1500)),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(
            "command timed out: `/usr/bin/xargs /bin/sleep` did not finish within 1.5s"
        ),
        "{err}"
    );
    // Both die of SIGTERM: no need to wait for the grace period.
    assert!(started.elapsed() < Duration::from_millis(1500) + ate_cmd::DEFAULT_GRACE);
    assert_all_dead(&members).await;
}

#[tokio::test]
async fn timeout_keeps_output_tails() {
    // `tail -f` prints the file, then waits for more forever.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "printed before the timeout\n").unwrap();
    let err = Cmd::new("/usr/bin/tail")
        .args([OsStr::new("-f"), file.path().as_os_str()])
        .timeout(Duration::from_millis(500))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, CmdError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("within 500ms\nstdout:\n    printed before the timeout"),
        "{err}"
    );
}

#[tokio::test]
async fn dropped_future_kills_the_group() {
    let marker = marker(2);
    let cmd = xargs_sleep(&marker);
    let task =
        tokio::spawn(
            async move { tokio::time::timeout(Duration::from_secs(1), cmd.output()).await },
        );
    let (_, members) = find_group(&marker).await;
    assert!(task.await.unwrap().is_err(), "the caller's deadline fired");
    assert_all_dead(&members).await;
}

#[tokio::test]
async fn aborted_task_kills_the_group() {
    let marker = marker(3);
    let cmd = xargs_sleep(&marker);
    let task = tokio::spawn(async move { cmd.output().await });
    let (_, members) = find_group(&marker).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_all_dead(&members).await;
}

#[tokio::test]
async fn spawned_terminate_and_pid() {
    let spawned = Cmd::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = spawned.pid();
    assert_eq!(
        proc_stat(pid).map(|(_, pgrp)| pgrp),
        Some(pid),
        "own process group"
    );
    let status = spawned.terminate(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.signal(), Some(15));
    assert!(is_dead(pid));
}

#[tokio::test]
async fn spawned_terminate_escalates_to_sigkill() {
    // GNU env execs sleep with SIGTERM ignored.
    let spawned = Cmd::new("/usr/bin/env")
        .args(["--ignore-signal=TERM", "/bin/sleep", "30"])
        .spawn()
        .unwrap();
    // Signalled before env got to ignore SIGTERM, it would just die of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{}/comm", spawned.pid())).unwrap() != "sleep\n" {
        assert!(Instant::now() < deadline, "env never ran sleep");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let status = spawned.terminate(Duration::from_millis(300)).await.unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn spawned_kill_sends_sigkill_alone_to_the_group() {
    // sleep dies of the first signal it gets: 9, not 15, means no SIGTERM
    // came first.
    let spawned = Cmd::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = spawned.pid();
    let status = spawned.kill().await.unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(is_dead(pid));

    let marker = marker(5);
    let spawned = xargs_sleep(&marker).spawn().unwrap();
    let (pgid, members) = find_group(&marker).await;
    assert_eq!(pgid, spawned.pid());
    assert_eq!(spawned.kill().await.unwrap().signal(), Some(9));
    assert_all_dead(&members).await;
}

#[tokio::test]
async fn timeout_escalates_to_sigkill() {
    let started = Instant::now();
    let err = Cmd::new("/usr/bin/env")
        .args(["--ignore-signal=TERM", "/bin/sleep", "30"])
        .timeout(Duration::from_millis(200))
        .grace(Duration::from_millis(300))
        .output()
        .await
        .unwrap_err();
    assert!(matches!(err, CmdError::Timeout { .. }), "{err:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn dropped_spawned_kills_the_group() {
    let marker = marker(4);
    let spawned = xargs_sleep(&marker).spawn().unwrap();
    let (pgid, members) = find_group(&marker).await;
    assert_eq!(pgid, spawned.pid());
    drop(spawned);
    assert_all_dead(&members).await;
}

#[tokio::test]
async fn spawned_streams() {
    let mut spawned = Cmd::new("/bin/cat").spawn().unwrap();
    let mut stdin = spawned.stdin.take().unwrap();
    let mut stdout = spawned.stdout.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"ping")
        .await
        .unwrap();
    drop(stdin);
    let mut got = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut got)
        .await
        .unwrap();
    assert_eq!(got, "ping");
    assert!(spawned.wait().await.unwrap().success());

    let file = tempfile::NamedTempFile::new().unwrap();
    let mut spawned = Cmd::new("/bin/echo")
        .arg("to a file")
        .stdout_file(file.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(spawned.stdout.is_none());
    assert!(spawned.wait().await.unwrap().success());
    let mut written = String::new();
    file.reopen().unwrap().read_to_string(&mut written).unwrap();
    assert_eq!(written, "to a file\n");
}

/// A stream sent to a file is written there and not captured, and a
/// detached grandchild holding it does not keep `output` waiting.
#[tokio::test]
async fn output_honours_a_file_for_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.log");
    let file = std::fs::File::create(&path).unwrap();
    let out = ate_cmd::Cmd::new("/bin/echo")
        .arg("to-the-file")
        .stdout_file(file)
        .run()
        .await
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "stdout was captured although it went to a file: {:?}",
        out.stdout_str()
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "to-the-file\n");
}
