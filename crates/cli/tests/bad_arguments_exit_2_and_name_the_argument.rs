//! Bad arguments change nothing, exit 2, and the message names the argument.

mod common;
use common::*;

#[test]
fn each_bad_argument_is_named() {
    let s = Scratch::new();
    let d = s.data_str();
    run(&["journal", "create-topic", d, "t.v1", "--durability", "os"]).expect_code(0);
    let cases: &[(&[&str], &str)] = &[
        (&["journal", "create-topic", d, "bad/name"], "TOPIC"),
        (
            &["journal", "create-topic", d, "t2", "--partitions", "0"],
            "--partitions",
        ),
        (
            &["journal", "create-topic", d, "t2", "--partitions", "many"],
            "--partitions",
        ),
        (
            &["journal", "create-topic", d, "t2", "--segment-bytes", "12"],
            "--segment-bytes",
        ),
        (
            &["journal", "create-topic", d, "t2", "--segment-bytes", "5x"],
            "--segment-bytes",
        ),
        (
            &[
                "journal",
                "create-topic",
                d,
                "t2",
                "--durability",
                "sometimes",
            ],
            "--durability",
        ),
        (
            &[
                "journal",
                "create-topic",
                d,
                "t2",
                "--retention-max-age",
                "soon",
            ],
            "--retention-max-age",
        ),
        (
            &["journal", "create-topic", d, "t2", "--dedup-window", "30d"],
            "--dedup-window",
        ),
        (
            &["journal", "create-topic", d, "t.v1", "--partitions", "3"],
            "TOPIC",
        ),
        (&["journal", "append", d, "missing.v1", "x"], "create-topic"),
        (
            &["journal", "append", d, "t.v1", "x", "--partition", "7"],
            "--partition",
        ),
        (
            &["journal", "append", d, "t.v1", "x", "--header", "novalue"],
            "--header",
        ),
        (&["journal", "append", d, "t.v1", "--id", "a"], "--id"),
        (
            &["journal", "read", d, "t.v1", "--from", "yesterday"],
            "--from",
        ),
        (
            &["journal", "read", d, "t.v1", "--partition", "1"],
            "--partition",
        ),
        (&["journal", "read", d, "t.v1", "--limit", "0"], "--limit"),
        (&["journal", "read", d, "missing.v1"], "TOPIC"),
        (&["journal", "inspect"], "<DIR>"),
        (&["journal", "frobnicate", d], "frobnicate"),
    ];
    for (args, named) in cases {
        let r = run(args);
        assert_eq!(
            r.code, 2,
            "{args:?}\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        assert!(
            r.stderr.contains(named),
            "{args:?}: stderr does not name {named}:\n{}",
            r.stderr
        );
    }
    // Nothing changed: still the one topic, empty.
    let report = json(
        &run(&["journal", "inspect", d, "--json"])
            .expect_code(0)
            .stdout,
    );
    let topics = report["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["partitions"][0]["next_offset"], 0);
}

#[test]
fn commands_on_a_missing_directory_exit_2_and_create_nothing() {
    let s = Scratch::new();
    let d = s.data_str();
    for args in [
        vec!["journal", "append", d, "t.v1", "x"],
        vec!["journal", "read", d, "t.v1"],
        vec!["journal", "inspect", d],
        vec!["journal", "verify", d],
    ] {
        let r = run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("DIR") && r.stderr.contains(d),
            "{args:?}: {}",
            r.stderr
        );
        assert!(!s.data.exists(), "{args:?} created the directory");
    }
}

#[test]
fn help_describes_every_command() {
    for cmd in ["inspect", "verify", "create-topic", "append", "read"] {
        let r = run(&["journal", cmd, "--help"]).expect_code(0);
        assert!(
            r.stdout.contains("Usage: switchyard journal"),
            "{cmd}: {}",
            r.stdout
        );
    }
}
