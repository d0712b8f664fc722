//! What `journal append` writes, `journal read` prints back as JSON lines: ids dedup, keys
//! pick partitions, headers and payloads survive, `--from` seeks, `--follow` stops cleanly.

mod common;
use common::*;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn appended_records_read_back() {
    let s = Scratch::new();
    let d = s.data_str();
    let r = run(&[
        "journal",
        "append",
        d,
        "orders.v1",
        "--create",
        "--key",
        "order-1",
        "--id",
        "evt-1",
        "--header",
        "ce-type=order.created",
        "--header",
        "x=a=b",
        "{\"total\":3}",
    ])
    .expect_code(0);
    assert_eq!(r.stdout.trim(), "partition 0 offset 0");
    let dup = run(&[
        "journal",
        "append",
        d,
        "orders.v1",
        "--id",
        "evt-1",
        "--json",
        "again",
    ])
    .expect_code(0);
    let dup = json(&dup.stdout);
    assert_eq!(
        (dup["offset"].as_u64(), dup["duplicate"].as_bool()),
        (Some(0), Some(true))
    );
    run_with_stdin(&["journal", "append", d, "orders.v1"], "a\n\nb\r\nc\n").expect_code(0);

    let out = run(&["journal", "read", d, "orders.v1"])
        .expect_code(0)
        .stdout;
    let recs = json_lines(&out);
    assert_eq!(recs.len(), 4, "{out}");
    assert_eq!(recs[0]["topic"], "orders.v1");
    assert_eq!(recs[0]["id"], "evt-1");
    assert_eq!(recs[0]["key"], "order-1");
    assert_eq!(recs[0]["headers"]["ce-type"], "order.created");
    assert_eq!(recs[0]["headers"]["x"], "a=b");
    assert_eq!(recs[0]["payload"], "{\"total\":3}");
    let payloads: Vec<_> = recs
        .iter()
        .map(|r| r["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads[1..], ["a", "b", "c"]);
    let offsets: Vec<_> = recs.iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [0, 1, 2, 3]);

    let from2 = json_lines(
        &run(&[
            "journal",
            "read",
            d,
            "orders.v1",
            "--from",
            "2",
            "--limit",
            "1",
        ])
        .expect_code(0)
        .stdout,
    );
    assert_eq!(from2.len(), 1);
    assert_eq!(from2[0]["payload"], "b");
    let from_end = run(&["journal", "read", d, "orders.v1", "--from", "end"])
        .expect_code(0)
        .stdout;
    assert!(from_end.is_empty(), "{from_end}");
    let ts = recs[3]["timestamp"].as_str().unwrap().to_string();
    let from_time = json_lines(
        &run(&["journal", "read", d, "orders.v1", "--from", &ts])
            .expect_code(0)
            .stdout,
    );
    assert!(
        !from_time.is_empty() && from_time.last().unwrap()["payload"] == "c",
        "{from_time:?}"
    );
    let later = json_lines(
        &run(&[
            "journal",
            "read",
            d,
            "orders.v1",
            "--from",
            "2999-01-01T00:00:00Z",
        ])
        .expect_code(0)
        .stdout,
    );
    assert!(later.is_empty());
}

#[test]
fn keys_pick_stable_partitions() {
    let s = Scratch::new();
    let d = s.data_str();
    run(&[
        "journal",
        "create-topic",
        d,
        "k.v1",
        "--partitions",
        "8",
        "--durability",
        "os",
    ])
    .expect_code(0);
    let first = run(&[
        "journal",
        "append",
        d,
        "k.v1",
        "--key",
        "customer-42",
        "x",
        "--json",
    ])
    .expect_code(0);
    let second = run(&[
        "journal",
        "append",
        d,
        "k.v1",
        "--key",
        "customer-42",
        "y",
        "--json",
    ])
    .expect_code(0);
    let (a, b) = (json(&first.stdout), json(&second.stdout));
    assert_eq!(a["partition"], b["partition"]);
    assert_eq!(b["offset"], 1);
    let p = a["partition"].as_u64().unwrap().to_string();
    let recs = json_lines(
        &run(&["journal", "read", d, "k.v1", "--partition", &p])
            .expect_code(0)
            .stdout,
    );
    assert_eq!(recs.len(), 2);
}

#[test]
fn follow_with_a_limit_stops_and_ctrl_c_exits_cleanly() {
    let s = Scratch::new();
    let d = s.data_str();
    run_with_stdin(&["journal", "append", d, "f.v1", "--create"], "one\ntwo\n").expect_code(0);
    let r = run(&["journal", "read", d, "f.v1", "--follow", "--limit", "2"]).expect_code(0);
    assert_eq!(json_lines(&r.stdout).len(), 2);

    let mut child = Command::new(BIN)
        .args(["journal", "read", d, "f.v1", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"f.v1\""), "{line}");
    }
    // Now it waits for more. Ctrl-C:
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            Instant::now() < deadline,
            "read --follow did not exit on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    // And the journal is free again.
    run(&["journal", "append", d, "f.v1", "three"]).expect_code(0);
}
