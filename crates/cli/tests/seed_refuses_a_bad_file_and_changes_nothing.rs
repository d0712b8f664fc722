//! A bad seed file (unknown key, wrong type, YAML syntax error, missing `type`, bad time, an
//! event its topic's schema refuses, a topic that neither exists nor is declared) exits 2
//! with the file, line and key, and changes nothing: no event appended, no topic created,
//! no call made.

mod common;
use common::*;

/// A valid start: a topic to create, events for it and for an existing topic, and a call
/// that must never be made (nothing listens there).
const GOOD: &str = "\
topics:
  fresh.v1: {partitions: 2}
events:
  existing.v1:
    - {type: order.placed, subject: o-1, data: {total: 42}}
  fresh.v1:
    - {type: thing.made, data: {n: 1}}
";

/// Each case: what the bad part is, the line to append after GOOD, and what stderr must
/// say (file:line and the key).
const CASES: [(&str, &str, &[&str]); 7] = [
    (
        "unknown key",
        "    - {type: thing.made, dat: 1}\n",
        &["bad.yaml:8:", "`events.fresh.v1[2].dat`", "unknown field"],
    ),
    (
        "wrong type",
        "    - {type: thing.made, key: {a: 1}}\n",
        &["bad.yaml:8:", "`events.fresh.v1[2].key`"],
    ),
    (
        "YAML syntax error",
        "    - {type: thing.made, data: [1, 2}\n",
        &["bad.yaml:8:"],
    ),
    (
        "missing type",
        "    - {data: {n: 2}}\n",
        &[
            "bad.yaml:8:",
            "`events.fresh.v1[2]`",
            "missing field `type`",
        ],
    ),
    (
        "bad time",
        "    - {type: thing.made, time: soon}\n",
        &["bad.yaml:8: `events.fresh.v1[2].time`", "RFC 3339"],
    ),
    (
        "schema violation",
        "  existing.v1:\n    - {type: order.placed, subject: o-2, data: {total: lots}}\n",
        &[
            "bad.yaml:7: `events.existing.v1[1].data`",
            "schema",
            "/data/total",
        ],
    ),
    (
        "undeclared topic",
        "  ghost.v1:\n    - {type: boo}\n",
        // The line that names the topic.
        &["bad.yaml:8:", "topic `ghost.v1` does not exist", "topics:"],
    ),
];

#[test]
fn a_bad_file_exits_2_names_the_spot_and_changes_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = Scratch::new();
    let (mut server, base, _stderr) = start_server(s.data_str(), "127.0.0.1:0");
    rt.block_on(create_topic(
        &base,
        "existing.v1",
        r#"{"schemas": {"order.placed": {"type": "object", "required": ["total"],
            "properties": {"total": {"type": "integer"}}}}}"#,
    ));
    let file = s.data.with_file_name("bad.yaml");
    let file_str = file.to_str().expect("utf-8 path");
    let calls = "calls:\n  - {method: POST, url: 'http://127.0.0.1:9/never'}\n";

    for (what, bad, expected) in CASES {
        // The schema and topic cases replace the events of `existing.v1` / add a topic.
        let text =
            if bad.starts_with("  existing.v1:") {
                format!("{}{}{calls}", GOOD.replace(
                "  existing.v1:\n    - {type: order.placed, subject: o-1, data: {total: 42}}\n",
                "",
            ), bad)
            } else {
                format!("{GOOD}{bad}{calls}")
            };
        std::fs::write(&file, &text).expect("write seed");
        let r = run_against(&base, &["seed", file_str], "");
        assert_eq!(r.code, 2, "{what}: exit code\n{text}\nstderr: {}", r.stderr);
        for e in expected {
            assert!(
                r.stderr.contains(e),
                "{what}: stderr lacks {e:?}\n{text}\nstderr: {}",
                r.stderr
            );
        }
        assert!(r.stdout.is_empty(), "{what}: {}", r.stdout);
    }

    // Nothing changed: no event in the existing topic, the declared topic not created.
    rt.block_on(async {
        let t: serde_json::Value = reqwest::get(format!("{base}/v1/topics/existing.v1"))
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        assert_eq!(t["partitions"][0]["next-offset"], 0, "{t}");
        let r = reqwest::get(format!("{base}/v1/topics/fresh.v1"))
            .await
            .expect("GET");
        assert_eq!(r.status(), 404);
    });

    // The file that was fine all along goes in (proving the cases failed for their fault).
    std::fs::write(&file, GOOD).expect("write seed");
    let r = run_against(&base, &["seed", file_str, "--no-wait"], "").expect_code(0);
    assert!(
        r.stdout
            .contains("topic fresh.v1: appended 1, already there 0 (created)"),
        "{}",
        r.stdout
    );

    let help = run(&["seed", "--help"]).expect_code(0);
    for part in [
        "topics:",
        "events:",
        "calls:",
        "key:",
        "expect:",
        "Exit codes",
    ] {
        assert!(
            help.stdout.contains(part),
            "--help lacks {part}:\n{}",
            help.stdout
        );
    }

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().expect("wait").code(), Some(0));
}
