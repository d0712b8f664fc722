//! `switchyard publish` and `switchyard tail` against a real `switchyard serve`.

mod common;
use common::*;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

#[test]
fn publish_then_tail_from_the_start() {
    let s = Scratch::new();
    let (mut server, base, _stderr) = start_server(s.data_str(), "127.0.0.1:0");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(create_topic(&base, "orders.v1", "{}"));
    let r = run_against(
        &base,
        &[
            "publish",
            "orders.v1",
            "--type",
            "order.placed",
            "--subject",
            "o-1",
            "--id",
            "ev-1",
            "--data",
            "{\"total\":42}",
        ],
        "",
    )
    .expect_code(0);
    assert_eq!(r.stdout.trim(), "partition 0 offset 0");
    let r = run_against(
        &base,
        &[
            "publish",
            "orders.v1",
            "--type",
            "order.placed",
            "--id",
            "ev-1",
            "--data",
            "{}",
        ],
        "",
    )
    .expect_code(0);
    assert_eq!(r.stdout.trim(), "partition 0 offset 0 (duplicate)");
    let r = run_against(
        &base,
        &["publish", "orders.v1", "--type", "order.imported"],
        "{\"n\":1}\n\n{\"n\":2}\n",
    )
    .expect_code(0);
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    let r = run_against(
        &base,
        &["publish", "orders.v1", "--type", "t", "--data", "{nope"],
        "",
    )
    .expect_code(2);
    assert!(r.stderr.contains("--data is not JSON"), "{}", r.stderr);
    let r = run_against(
        &base,
        &["publish", "nope.v1", "--type", "t", "--data", "1"],
        "",
    )
    .expect_code(2);
    assert!(r.stderr.contains("404 topic-not-found"), "{}", r.stderr);

    let mut tail = Command::new(BIN)
        .args(["tail", "orders.v1", "--from", "earliest", "--json"])
        .env("SWITCHYARD_URL", &base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tail");
    let mut out = BufReader::new(tail.stdout.take().expect("stdout"));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).expect("tail line");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        ids.push(v["type"].as_str().expect("type").to_string());
    }
    assert_eq!(ids, ["order.placed", "order.imported", "order.imported"]);
    let _ = tail.kill();
    let _ = tail.wait();

    let r = run_against(&base, &["tail", "nope.v1"], "").expect_code(2);
    assert!(r.stderr.contains("topic-not-found"), "{}", r.stderr);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().expect("wait").code(), Some(0));
}
