//! The integration gateway from the command line: `switchyard fake-vendor` answers 500,
//! `switchyard serve` runs the adapter of its switchyard.toml, and `messages`, `cases` and
//! `adapters` show and act on what happened. `check` locates a bad adapter.

mod common;

use common::{BIN, Scratch, create_topic, first_said_line, run, run_against};
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
    let line = first_said_line(&mut stderr);
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

/// After a mapping fix: `cases retry --remap` sends a case's failed messages again mapped
/// by the new version, `messages replay --remap` maps a delivered one again, and `cases
/// resolve` closes the case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_replay_with_the_fixed_mapping_then_resolve() {
    let scratch = Scratch::new();
    let (mut vendor, vendor_url, _vendor_err) = start(&[
        "fake-vendor",
        "--listen",
        "127.0.0.1:0",
        "--behaviour",
        r#"{"status": 400, "body": "missing field version"}"#,
    ]);
    let config = scratch
        .data
        .parent()
        .expect("scratch")
        .join("switchyard.toml");
    let write_config = |mapping: &str| {
        std::fs::write(
            &config,
            format!(
                r#"[adapters.bakery]
topic = "inventory.v1"
mapping = "{mapping}"
retry = {{ max-attempts = 1 }}
writer = {{ kind = "http", url = "{vendor_url}/orders" }}
"#
            ),
        )
        .expect("config");
    };
    write_config("{sku: .data.sku}");
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
    for sku in [301, 302] {
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
    let wait_for = |args: &[&str], lines: usize| {
        let start_wait = Instant::now();
        loop {
            let r = run_against(&base, args, "").expect_code(0);
            if r.stdout.lines().count() == lines {
                return r.stdout;
            }
            assert!(
                start_wait.elapsed() < Duration::from_secs(30),
                "waiting for {lines} lines of {args:?}: {}",
                r.stdout
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let failed = [
        "messages",
        "--adapter",
        "bakery",
        "--state",
        "failed",
        "--json",
    ];
    wait_for(&failed, 2);
    let cases = run_against(&base, &["cases", "--adapter", "bakery", "--json"], "").expect_code(0);
    let case: serde_json::Value =
        serde_json::from_str(cases.stdout.lines().next().expect("a case")).expect("json");
    let id = case["id"].as_str().expect("id").to_owned();

    // The fix: the mapping adds the field the vendor wants, and the vendor takes it.
    write_config("{sku: .data.sku, version: 2}");
    let reload = run_against(&base, &["adapters", "reload"], "").expect_code(0);
    assert!(
        reload.stdout.contains("changed: bakery"),
        "{}",
        reload.stdout
    );
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{vendor_url}/_vendor/behaviour"))
        .body(r#"{"status": 200}"#)
        .send()
        .await
        .expect("behaviour");
    assert_eq!(r.status(), 204);
    let retried = run_against(&base, &["cases", "retry", &id, "--remap"], "").expect_code(0);
    assert_eq!(
        retried.stdout.trim(),
        format!("case {id}: 2 message(s) put back (remap)")
    );
    let delivered = [
        "messages",
        "--adapter",
        "bakery",
        "--state",
        "delivered",
        "--json",
    ];
    let out = wait_for(&delivered, 2);
    let requests = |http: reqwest::Client| {
        let url = format!("{vendor_url}/_vendor/requests");
        async move {
            http.get(url)
                .send()
                .await
                .expect("requests")
                .json::<Vec<serde_json::Value>>()
                .await
                .expect("json")
        }
    };
    let got = requests(http.clone()).await;
    let bodies: Vec<&str> = got.iter().filter_map(|r| r["body"].as_str()).collect();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    for sku in [301, 302] {
        assert!(
            bodies.contains(&format!(r#"{{"sku":{sku},"version":2}}"#).as_str()),
            "{bodies:?}"
        );
    }

    // One delivered message mapped again by a newer version.
    write_config("{sku: .data.sku, version: 3}");
    run_against(&base, &["adapters", "reload"], "").expect_code(0);
    let m: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a message")).expect("json");
    let mid = m["id"].to_string();
    let sku = m["event"]["data"]["sku"].clone();
    let replay = run_against(&base, &["messages", "replay", &mid, "--remap"], "").expect_code(0);
    assert_eq!(replay.stdout.trim(), format!("remap {mid}: pending"));
    let start_wait = Instant::now();
    loop {
        let got = requests(http.clone()).await;
        if got.len() == 5 {
            assert_eq!(
                got[4]["body"],
                format!(r#"{{"sku":{sku},"version":3}}"#),
                "{got:?}"
            );
            break;
        }
        assert!(start_wait.elapsed() < Duration::from_secs(30), "{got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(&delivered, 2);

    let resolved = run_against(&base, &["cases", "resolve", &id], "").expect_code(0);
    assert_eq!(resolved.stdout.trim(), format!("case {id}: resolved"));
    let list = run_against(
        &base,
        &[
            "cases",
            "--adapter",
            "bakery",
            "--state",
            "resolved",
            "--json",
        ],
        "",
    )
    .expect_code(0);
    let case: serde_json::Value =
        serde_json::from_str(list.stdout.lines().next().expect("the case")).expect("json");
    assert_eq!(case["id"], id.as_str());
    assert_eq!(case["open-messages"], 0);
    let open = run_against(
        &base,
        &["cases", "--adapter", "bakery", "--state", "open", "--json"],
        "",
    )
    .expect_code(0);
    assert_eq!(open.stdout.trim(), "", "no open case left");
    // A case that does not exist: exit 2 and the server's code.
    let bad = run_against(&base, &["cases", "resolve", "0000000000000000"], "").expect_code(2);
    assert!(bad.stderr.contains("not-found"), "{}", bad.stderr);

    let _ = server.kill();
    let _ = server.wait();
    let _ = vendor.kill();
    let _ = vendor.wait();
}
