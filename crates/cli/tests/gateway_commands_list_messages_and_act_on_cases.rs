//! The integration gateway from the command line: `switchyard fake-vendor` answers 500,
//! `switchyard serve` runs the adapter of its switchyard.toml, and `messages`, `cases` and
//! `adapters` show and act on what happened. `check` locates a bad adapter.

mod common;

use common::{BIN, Scratch, create_topic, run, run_against};
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `switchyard ARGS` and returns it with the URL of its first stderr line.
fn start(
    args: &[&str],
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStderr>,
) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches([',', ')'])
        .to_string();
    (child, url, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cases_and_adapters_commands() {
    let scratch = Scratch::new();
    let (mut vendor, vendor_url, _vendor_err) = start(&[
        "fake-vendor",
        "--listen",
        "127.0.0.1:0",
        "--behaviour",
        r#"{"status": 500, "body": "boom 1"}"#,
    ]);
    let config = scratch
        .data
        .parent()
        .expect("scratch")
        .join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[adapters.bakery]
topic = "inventory.v1"
mapping = "{{sku: .data.sku}}"
retry = {{ max-attempts = 1 }}
writer = {{ kind = "http", url = "{vendor_url}/orders" }}
"#
        ),
    )
    .expect("config");
    let config_arg = config.to_str().expect("utf-8").to_owned();
    let (mut server, base, _err) = start(&[
        "serve",
        "--data",
        scratch.data_str(),
        "--listen",
        "127.0.0.1:0",
        "--config",
        &config_arg,
    ]);
    create_topic(&base, "inventory.v1", r#"{"partitions": 1}"#).await;
    for sku in [201, 202] {
        run_against(
            &base,
            &[
                "publish",
                "inventory.v1",
                "--type",
                "stock.low",
                "--data",
                &format!(r#"{{"sku":{sku}}}"#),
            ],
            "",
        )
        .expect_code(0);
    }
    let start_wait = Instant::now();
    loop {
        let r = run_against(
            &base,
            &[
                "messages",
                "--adapter",
                "bakery",
                "--state",
                "failed",
                "--json",
            ],
            "",
        )
        .expect_code(0);
        if r.stdout.lines().count() == 2 {
            break;
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(20),
            "no failures: {}",
            r.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = run_against(
        &base,
        &[
            "messages",
            "--adapter",
            "bakery",
            "--state",
            "failed",
            "--since",
            "1h",
        ],
        "",
    )
    .expect_code(0);
    assert!(table.stdout.contains("2 message(s)"), "{}", table.stdout);
    assert!(
        table.stdout.contains("HTTP 500: boom 1"),
        "{}",
        table.stdout
    );

    let cases = run_against(&base, &["cases", "--adapter", "bakery", "--json"], "").expect_code(0);
    let case: serde_json::Value =
        serde_json::from_str(cases.stdout.lines().next().expect("a case")).expect("json");
    assert_eq!(case["open-messages"], 2);
    assert_eq!(case["message"], "http #: boom #");
    let id = case["id"].as_str().expect("id").to_owned();
    let shown = run_against(&base, &["cases", "show", &id], "").expect_code(0);
    assert!(shown.stdout.contains("\"samples\""), "{}", shown.stdout);
    let table = run_against(&base, &["cases"], "").expect_code(0);
    assert!(
        table.stdout.contains(&id) && table.stdout.contains("1 case(s)"),
        "{}",
        table.stdout
    );

    let first = run_against(
        &base,
        &["messages", "--adapter", "bakery", "--json", "--limit", "1"],
        "",
    )
    .expect_code(0);
    let m: serde_json::Value = serde_json::from_str(first.stdout.trim()).expect("json");
    let mid = m["id"].to_string();
    let detail = run_against(&base, &["messages", "show", &mid], "").expect_code(0);
    assert!(detail.stdout.contains("\"attempts\""), "{}", detail.stdout);

    let lanes = run_against(&base, &["adapters", "ls"], "").expect_code(0);
    assert!(
        lanes.stdout.contains("bakery") && lanes.stdout.contains("failed 2"),
        "{}",
        lanes.stdout
    );
    let paused = run_against(&base, &["adapters", "pause", "bakery"], "").expect_code(0);
    assert_eq!(paused.stdout.trim(), "bakery: paused");
    run_against(&base, &["adapters", "resume", "bakery"], "").expect_code(0);
    let reload = run_against(&base, &["adapters", "reload"], "").expect_code(0);
    assert!(
        reload.stdout.contains("unchanged: bakery"),
        "{}",
        reload.stdout
    );

    let discarded = run_against(&base, &["cases", "discard", &id], "").expect_code(0);
    assert!(
        discarded.stdout.contains("2 message(s) discarded"),
        "{}",
        discarded.stdout
    );
    let replay = run_against(&base, &["messages", "replay", &mid], "").expect_code(0);
    assert!(replay.stdout.contains("pending"), "{}", replay.stdout);

    // Bad input: exit 2 and the server's code.
    let bad = run_against(&base, &["messages", "--state", "lost"], "").expect_code(2);
    assert!(bad.stderr.contains("invalid-query"), "{}", bad.stderr);
    let bad = run_against(&base, &["adapters", "pause", "nosuch"], "").expect_code(2);
    assert!(bad.stderr.contains("adapter-not-found"), "{}", bad.stderr);

    let _ = server.kill();
    let _ = server.wait();
    let _ = vendor.kill();
    let _ = vendor.wait();
}

#[test]
fn check_locates_a_bad_adapter() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("switchyard.toml"),
        "[system]\nname = \"shop\"\n\n[adapters.bakery]\ntopic = \"inventory.v1\"\nmapping = \"{\"\nwriter = { kind = \"http\", url = \"http://127.0.0.1:9/x\" }\n",
    )
    .expect("write");
    let r = run(&["check", dir.path().to_str().expect("utf-8")]).expect_code(1);
    assert!(
        r.stdout
            .contains("error[invalid-adapter]: switchyard.toml:6:"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("adapters.bakery.mapping"), "{}", r.stdout);
}
