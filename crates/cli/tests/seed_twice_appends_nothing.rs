//! Seeding the same file again changes nothing, with explicit ids and with the derived ones,
//! and even where the server's dedup would not catch it (a topic with dedup off stands for
//! one whose dedup window has passed): the seed looks for its ids in the topic first. A
//! topic that already holds other events keeps them; an event added to the file later is
//! the only one appended the next time.

mod common;
use common::*;

/// Each partition's next offset.
async fn next_offsets(base: &str, topic: &str) -> Vec<u64> {
    let v: serde_json::Value = reqwest::get(format!("{base}/v1/topics/{topic}"))
        .await
        .expect("GET topic")
        .json()
        .await
        .expect("topic json");
    v["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["next-offset"].as_u64().expect("next-offset"))
        .collect()
}

/// Every event id in the topic.
async fn ids(base: &str, topic: &str) -> Vec<String> {
    let v: serde_json::Value = reqwest::get(format!(
        "{base}/v1/topics/{topic}/events?from=earliest&limit=1000"
    ))
    .await
    .expect("GET events")
    .json()
    .await
    .expect("events json");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

fn seed_json(base: &str, file: &str) -> serde_json::Value {
    let r = run_against(base, &["seed", file, "--json", "--no-wait"], "").expect_code(0);
    json(&r.stdout)
}

/// (appended, already there) of `topic` in a `--json` report.
fn counts(report: &serde_json::Value, topic: &str) -> (u64, u64) {
    let t = report["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == topic)
        .unwrap_or_else(|| panic!("no {topic} in {report}"));
    (
        t["appended"].as_u64().expect("appended"),
        t["already_there"].as_u64().expect("already_there"),
    )
}

const FILE: &str = "\
topics:
  nodedup.v1: {partitions: 2, dedup-window-ms: 0}
events:
  nodedup.v1:
    - {type: user.created, key: u-1, data: {name: Ada}}
    - {type: user.created, key: u-2, data: {name: Grace}}
    - {type: ping}
    - {type: ping}
    - {type: user.renamed, key: u-1, id: renamed-1, data: {name: Ada L.}}
  mixed.v1:
    - {type: order.placed, subject: o-1, data: {total: 42}}
    - {type: order.placed, subject: o-2, id: o-2, data: {total: 7}}
";

#[test]
fn seeding_twice_appends_nothing_the_second_time() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = Scratch::new();
    let (mut server, base, _stderr) = start_server(s.data_str(), "127.0.0.1:0");
    // A topic that already holds someone else's events (not declared: it must exist).
    rt.block_on(create_topic(&base, "mixed.v1", "{}"));
    run_against(
        &base,
        &["publish", "mixed.v1", "--type", "other"],
        "1\n2\n3\n",
    )
    .expect_code(0);

    let file = s.data.with_file_name("users.yaml");
    std::fs::write(&file, FILE).expect("write seed");
    let file = file.to_str().expect("utf-8 path");

    let first = seed_json(&base, file);
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(counts(&first, "nodedup.v1"), (5, 0), "{first}");
    assert_eq!(counts(&first, "mixed.v1"), (2, 0), "{first}");
    assert_eq!(first["topics"][0]["created"], true, "{first}");
    let nodedup = rt.block_on(next_offsets(&base, "nodedup.v1"));
    let mixed = rt.block_on(next_offsets(&base, "mixed.v1"));
    assert_eq!(nodedup.iter().sum::<u64>(), 5);
    assert_eq!(mixed, [5]);

    // The derived ids name the file, the topic and the content; identical events differ.
    let stored = rt.block_on(ids(&base, "nodedup.v1"));
    let derived: Vec<&String> = stored
        .iter()
        .filter(|id| id.starts_with("seed:users:nodedup.v1:"))
        .collect();
    assert_eq!(derived.len(), 4, "{stored:?}");
    assert!(stored.contains(&"renamed-1".to_string()), "{stored:?}");

    // Again: nothing appended, the report says so.
    let second = seed_json(&base, file);
    assert_eq!(counts(&second, "nodedup.v1"), (0, 5), "{second}");
    assert_eq!(counts(&second, "mixed.v1"), (0, 2), "{second}");
    assert_eq!(second["topics"][0]["created"], false, "{second}");
    assert_eq!(rt.block_on(next_offsets(&base, "nodedup.v1")), nodedup);
    assert_eq!(rt.block_on(next_offsets(&base, "mixed.v1")), mixed);
    let human = run_against(&base, &["seed", file, "--no-wait"], "").expect_code(0);
    assert!(
        human
            .stdout
            .contains("topic nodedup.v1: appended 0, already there 5"),
        "{}",
        human.stdout
    );

    // An event added in the middle of the file is the only one appended.
    let grown = FILE.replace(
        "    - {type: ping}\n    - {type: ping}\n",
        "    - {type: ping}\n    - {type: user.created, key: u-3, data: {name: Edsger}}\n    - {type: ping}\n",
    );
    std::fs::write(file, grown).expect("write seed");
    let third = seed_json(&base, file);
    assert_eq!(counts(&third, "nodedup.v1"), (1, 5), "{third}");
    assert_eq!(
        rt.block_on(next_offsets(&base, "nodedup.v1"))
            .iter()
            .sum::<u64>(),
        6
    );

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().expect("wait").code(), Some(0));
}
