//! `switchyard serve` as users run it: it prints where it listens, answers HTTP, stops on
//! SIGTERM with exit code 0 after flushing, and what it acknowledged is in the journal
//! afterwards. It refuses a non-loopback address (no access tokens yet) and a bad config.

mod common;
use common::*;
use std::io::BufReader;
use std::process::{Command, Stdio};

#[test]
fn serve_answers_then_stops_on_sigterm() {
    let s = Scratch::new();
    let mut child = Command::new(BIN)
        .args(["serve", "--data", s.data_str(), "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let line = first_said_line(&mut stderr);
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = reqwest::Client::new();
        create_topic(&base, "orders.v1", "{}").await;
        let r = c
            .post(format!("{base}/v1/topics/orders.v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(r#"{"specversion":"1.0","id":"o-1","source":"/t","type":"order.placed","data":{"total":42}}"#)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200);
        let r = c.get(format!("{base}/healthz")).send().await.expect("health");
        assert_eq!(r.status(), 200);
        let r = c.get(format!("{base}/readyz")).send().await.expect("ready");
        assert_eq!(r.status(), 200);
    });

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("rest of stderr");
    assert_eq!(status.code(), Some(0), "stderr: {rest}");
    assert!(rest.contains("stopped"), "{rest}");

    let out = run(&["journal", "read", s.data_str(), "orders.v1"]).expect_code(0);
    assert!(out.stdout.contains("o-1"), "{}", out.stdout);
}

#[test]
fn serve_refuses_what_it_cannot_do_safely() {
    let s = Scratch::new();
    let r = run(&["serve", "--data", s.data_str(), "--listen", "0.0.0.0:0"]).expect_code(2);
    assert!(r.stderr.contains("access tokens"), "{}", r.stderr);

    // With a token whose secret is in a file, a non-loopback address is allowed; a short
    // secret or a missing variable is refused naming the token.
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "short\n").expect("write");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"0.0.0.0:0\"\n[[server.tokens]]\nname = \"ci\"\n\
             secret-file = {:?}\nscopes = [\"publish\"]\n",
            secret
        ),
    )
    .expect("write");
    let r = run(&[
        "serve",
        "--data",
        s.data_str(),
        "--config",
        cfg.to_str().expect("utf-8"),
    ])
    .expect_code(2);
    assert!(r.stderr.contains("token `ci`"), "{}", r.stderr);
    std::fs::write(
        &cfg,
        "[server]\n[[server.tokens]]\nname = \"ci\"\nsecret-env = \"SWITCHYARD_TEST_UNSET_VAR\"\n\
         scopes = [\"publish\"]\n",
    )
    .expect("write");
    let r = run(&[
        "serve",
        "--data",
        s.data_str(),
        "--config",
        cfg.to_str().expect("utf-8"),
    ])
    .expect_code(2);
    assert!(
        r.stderr.contains("SWITCHYARD_TEST_UNSET_VAR"),
        "{}",
        r.stderr
    );

    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").expect("write");
    let r = run(&["serve", "--config", cfg.to_str().expect("utf-8")]).expect_code(2);
    assert!(r.stderr.contains("lisen"), "{}", r.stderr);
    assert!(r.stderr.contains("line 3"), "{}", r.stderr);
}

#[test]
fn serve_with_a_token_may_listen_off_loopback_and_demands_the_token() {
    let s = Scratch::new();
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-long-enough-secret-0123\n").expect("write");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"0.0.0.0:0\"\n[[server.tokens]]\nname = \"ops\"\n\
             secret-file = {secret:?}\nscopes = [\"admin\", \"read\"]\n"
        ),
    )
    .expect("write");
    let mut child = Command::new(BIN)
        .args(["serve", "--data", s.data_str(), "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let line = first_said_line(&mut stderr);
    assert!(line.contains("1 access token(s)"), "{line}");
    let port = line
        .split("http://0.0.0.0:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
        .to_string();
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c
            .get(format!("{base}/v1/topics"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 401);
        let r = c
            .get(format!("{base}/v1/topics"))
            .bearer_auth("a-long-enough-secret-0123")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}
