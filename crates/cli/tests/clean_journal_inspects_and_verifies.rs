//! `journal inspect` and `journal verify` on a healthy journal: exit 0, and the report shows
//! every topic, partition, offset and segment.

mod common;
use common::*;

#[test]
fn inspect_and_verify_a_clean_journal() {
    let s = Scratch::new();
    let d = s.data_str();
    run(&[
        "journal",
        "create-topic",
        d,
        "orders.v1",
        "--partitions",
        "2",
        "--durability",
        "os",
        "--segment-bytes",
        "4096",
    ])
    .expect_code(0);
    run(&["journal", "create-topic", d, "empty.v1"]).expect_code(0);
    run_with_stdin(
        &[
            "journal",
            "append",
            d,
            "orders.v1",
            "--partition",
            "0",
            "--batch-size",
            "4",
        ],
        &lines(120),
    )
    .expect_code(0);
    run(&[
        "journal",
        "append",
        d,
        "orders.v1",
        "--partition",
        "1",
        "one",
    ])
    .expect_code(0);

    let human = run(&["journal", "inspect", d]).expect_code(0).stdout;
    assert!(
        human.contains("topic orders.v1: 2 partitions, durability os"),
        "{human}"
    );
    assert!(human.contains("topic empty.v1: 1 partition,"), "{human}");
    assert!(
        human.contains("sealed") && human.contains("active"),
        "{human}"
    );

    let report = json(
        &run(&["journal", "inspect", d, "--json"])
            .expect_code(0)
            .stdout,
    );
    let topics = report["topics"].as_array().expect("topics");
    assert_eq!(topics.len(), 2);
    let orders = topics
        .iter()
        .find(|t| t["name"] == "orders.v1")
        .expect("orders.v1");
    assert_eq!(orders["config"]["partitions"], 2);
    assert_eq!(orders["config"]["segment-bytes"], 4096);
    let p0 = &orders["partitions"][0];
    assert_eq!(p0["first_offset"], 0);
    assert_eq!(p0["next_offset"], 120);
    let segments = p0["segments"].as_array().expect("segments");
    assert!(
        segments.len() >= 3,
        "120 records of ~100 B in 4 KiB segments: {segments:?}"
    );
    let total: u64 = segments
        .iter()
        .map(|s| s["records"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 120);
    assert_eq!(orders["partitions"][1]["next_offset"], 1);

    let verify = run(&["journal", "verify", d]).expect_code(0).stdout;
    assert!(verify.contains("OK: no corruption found"), "{verify}");
    assert!(verify.contains("121 records"), "{verify}");
    let vj = json(
        &run(&["journal", "verify", d, "--json"])
            .expect_code(0)
            .stdout,
    );
    assert_eq!(vj["records_checked"], 121);
    assert_eq!(vj["problems"].as_array().map(Vec::len), Some(0));
}

#[test]
fn inspect_and_verify_a_missing_directory_exit_2() {
    let s = Scratch::new();
    for cmd in ["inspect", "verify"] {
        let r = run(&["journal", cmd, s.data_str()]).expect_code(2);
        assert!(
            r.stderr.contains("DIR") && r.stderr.contains("does not exist"),
            "{}",
            r.stderr
        );
        assert!(!s.data.exists(), "{cmd} must not create the directory");
    }
}

#[test]
fn inspect_of_a_directory_that_is_not_a_journal_exits_2() {
    let s = Scratch::new();
    std::fs::create_dir_all(&s.data).unwrap();
    let r = run(&["journal", "verify", s.data_str()]).expect_code(2);
    assert!(
        r.stderr.contains("not a Switchyard journal"),
        "{}",
        r.stderr
    );
}
