//! `switchyard subs ls|show|parked|seek` against a real server whose subscriber refuses
//! everything with 400: the events park, the commands list, retry and discard them, and bad
//! arguments are refused with exit code 2 and a message naming them.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn parked_deliveries_are_listed_retried_and_discarded() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let hook = rt.block_on(async {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(|| async { axum::http::StatusCode::BAD_REQUEST }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    });
    let s = Scratch::new();
    let (mut server, base, _stderr) = start_server(s.data_str(), "127.0.0.1:0");
    rt.block_on(async {
        create_topic(&base, "mail.v1", "{}").await;
        let c = reqwest::Client::new();
        let r = c
            .put(format!("{base}/v1/subscriptions/mailer"))
            .json(&serde_json::json!({"topics": ["mail.v1"], "endpoint": hook}))
            .send()
            .await
            .expect("sub");
        assert_eq!(r.status(), 201);
    });
    for i in 0..2 {
        run_against(
            &base,
            &[
                "publish",
                "mail.v1",
                "--type",
                "mail.queued",
                "--data",
                &format!("{{\"n\":{i}}}"),
            ],
            "",
        )
        .expect_code(0);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let r = run_against(&base, &["subs", "parked", "mailer"], "").expect_code(0);
        if r.stdout.lines().count() == 2 {
            break r.stdout;
        }
        assert!(Instant::now() < deadline, "not parked: {}", r.stdout);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        parked.contains("mail.v1/0@0  attempts 1  HTTP 400"),
        "{parked}"
    );
    assert_eq!(
        run_against(&base, &["subs", "ls"], "")
            .expect_code(0)
            .stdout
            .trim(),
        "mailer"
    );
    let show = run_against(&base, &["subs", "show", "mailer"], "").expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&show.stdout).expect("json");
    assert_eq!(v["parked"], serde_json::json!(2));

    run_against(
        &base,
        &["subs", "parked", "mailer", "--discard", "mail.v1/0@0"],
        "",
    )
    .expect_code(0);
    run_against(
        &base,
        &["subs", "parked", "mailer", "--retry", "mail.v1/0@1"],
        "",
    )
    .expect_code(0);
    // Retried, refused again, parked again with a second attempt.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = run_against(&base, &["subs", "parked", "mailer"], "").expect_code(0);
        if r.stdout.contains("mail.v1/0@1  attempts 1") && r.stdout.lines().count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.stdout);
        std::thread::sleep(Duration::from_millis(50));
    }

    let r = run_against(
        &base,
        &["subs", "parked", "mailer", "--retry", "mail.v1@1"],
        "",
    )
    .expect_code(2);
    assert!(r.stderr.contains("TOPIC/PARTITION@OFFSET"), "{}", r.stderr);
    let r = run_against(
        &base,
        &["subs", "seek", "mailer", "other.v1", "earliest"],
        "",
    )
    .expect_code(2);
    assert!(r.stderr.contains("invalid-seek"), "{}", r.stderr);
    let r = run_against(&base, &["subs", "show", "ghost"], "").expect_code(2);
    assert!(
        r.stderr.contains("404 subscription-not-found"),
        "{}",
        r.stderr
    );
    run_against(&base, &["subs", "seek", "mailer", "mail.v1", "latest"], "").expect_code(0);

    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().expect("wait").code(), Some(0));
}
