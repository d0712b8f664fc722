//! Exit codes of `switchyard seed`: 1 when the known state was not reached (a call answered
//! a status it did not expect: the calls stop there; subscriptions that do not catch up
//! within `--timeout`), 2 when the server cannot be reached. Calls get `${VAR}`s from the
//! environment, and `--json` reports all of it in one document.

mod common;
use common::*;
use std::process::{Command, Stdio};

/// Runs `switchyard ARGS` against `base` with `env` added to its environment.
fn seed(base: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_URL", base)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn failed_calls_and_timeouts_exit_1_and_a_down_server_exits_2() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // A service: /ok wants the token from the environment, /users/u-1 already has the user.
    let svc = rt.block_on(async {
        let app = axum::Router::new()
            .route(
                "/ok",
                axum::routing::post(|headers: axum::http::HeaderMap| async move {
                    if headers.get("x-token").and_then(|v| v.to_str().ok()) == Some("s3cret") {
                        axum::http::StatusCode::NO_CONTENT
                    } else {
                        axum::http::StatusCode::UNAUTHORIZED
                    }
                }),
            )
            .route(
                "/users/u-1",
                axum::routing::put(|| async { (axum::http::StatusCode::CONFLICT, "exists") }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    });
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");

    let s = Scratch::new();
    let (mut server, base, _stderr) = start_server(s.data_str(), "127.0.0.1:0");
    let file = s.data.with_file_name("calls.yaml");
    let file_str = file.to_str().expect("utf-8 path");
    std::fs::write(
        &file,
        format!(
            "topics:\n  users.v1:\nevents:\n  users.v1:\n    - {{type: user.created, key: u-1}}\n\
             calls:\n  - {{url: '{svc}/ok', headers: {{x-token: '${{SEED_TEST_TOKEN}}'}}}}\n  \
             - {{method: PUT, url: '{svc}/users/u-1', body: {{name: Ada}}, expect: 201}}\n  \
             - {{url: '{svc}/never-reached'}}\n"
        ),
    )
    .expect("write seed");

    // The second call answers 409: exit 1, the third is not made, the events are in.
    let (code, stdout, stderr) = seed(&base, &["seed", file_str], &[("SEED_TEST_TOKEN", "s3cret")]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("topic users.v1: appended 1, already there 0 (created)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("call POST {svc}/ok: 204")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "call PUT {svc}/users/u-1: FAILED answered 409, expected 201: exists"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("never-reached"), "{stdout}");
    assert!(stderr.contains("calls.yaml:8: call PUT"), "{stderr}");

    let (code, stdout, _) = seed(
        &base,
        &["seed", file_str, "--json"],
        &[("SEED_TEST_TOKEN", "s3cret")],
    );
    assert_eq!(code, 1);
    let report = json(&stdout);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["topics"][0]["appended"], 0, "{report}");
    assert_eq!(report["topics"][0]["already_there"], 1, "{report}");
    assert_eq!(
        report["calls"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(report["calls"][0]["status"], 204, "{report}");
    assert_eq!(report["calls"][1]["status"], 409, "{report}");
    assert!(
        report["error"].as_str().is_some_and(|e| e.contains("409")),
        "{report}"
    );

    // Without the variable the file is bad: exit 2 before anything is sent.
    let (code, _, stderr) = seed(&base, &["seed", file_str], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("calls.yaml:7: `calls[1].headers.x-token`: the environment variable SEED_TEST_TOKEN is not set"),
        "{stderr}"
    );

    // A subscription that cannot deliver: the state is not reached within --timeout.
    rt.block_on(async {
        let r = reqwest::Client::new()
            .put(format!("{base}/v1/subscriptions/stuck"))
            .json(&serde_json::json!({"topics": ["users.v1"], "endpoint": format!("http://{closed}/hook")}))
            .send()
            .await
            .expect("PUT subscription");
        assert_eq!(r.status(), 201);
    });
    std::fs::write(
        &file,
        "events:\n  users.v1:\n    - {type: user.created, key: u-1}\n",
    )
    .expect("write seed");
    let (code, stdout, stderr) = seed(&base, &["seed", file_str, "--timeout", "1s", "--json"], &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["caught_up"], false, "{report}");
    assert_eq!(report["subscriptions"][0]["name"], "stuck", "{report}");
    let sub = &report["subscriptions"][0];
    assert_eq!(
        sub["lag"]
            .as_u64()
            .zip(sub["in_flight"].as_u64())
            .map(|(l, f)| l + f),
        Some(1),
        "{report}"
    );
    assert!(
        stderr.contains("did not catch up within 1s: stuck"),
        "{stderr}"
    );
    // --no-wait does not wait for it.
    let (code, _, stderr) = seed(&base, &["seed", file_str, "--no-wait"], &[]);
    assert_eq!(code, 0, "{stderr}");

    // The server is down: exit 2, and the message says which server.
    let down = format!("http://{closed}");
    let (code, stdout, stderr) = seed(&down, &["seed", file_str], &[]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the Switchyard server at {down}")),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");

    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().expect("wait").code(), Some(0));
}
