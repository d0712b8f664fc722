//! `switchyard-bench connect --json` prints the two rows the suite documents, exactly
//! those fields, then the isolation rows of a hanging and a slow vendor A in the shape of
//! the isolation row. (A tiny run; speed is never asserted.)

mod common;

use std::process::Command;

#[test]
fn a_tiny_run_prints_the_added_latency_and_isolation_rows() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args([
            "connect",
            "--json",
            "--latency-events",
            "20",
            "--backlog",
            "40",
            "--repeats",
            "1",
        ])
        .output()
        .expect("run the bench");
    let common::Rows {
        rows,
        stdout,
        stderr,
    } = common::json_rows(&out);
    assert_eq!(rows.len(), 4, "{stdout}");
    assert_eq!(rows[0]["suite"], "connect");
    assert_eq!(rows[0]["case"], "added-latency");
    assert_eq!(
        common::keys(&rows[0]),
        ["case", "p50_us", "p99_us", "suite"]
    );
    assert!(rows[0]["p99_us"].as_f64().is_some(), "{}", rows[0]);
    assert_eq!(rows[1]["case"], "isolation");
    assert_eq!(common::keys(&rows[1]), ["case", "ratio", "suite"]);
    assert!(
        rows[1]["ratio"].as_f64().is_some_and(|r| r > 0.0),
        "{}",
        rows[1]
    );
    for (row, case) in rows[2..]
        .iter()
        .zip(["isolation-a-hangs", "isolation-a-slow"])
    {
        assert_eq!(row["case"], case);
        assert_eq!(common::keys(row), ["case", "ratio", "suite"]);
        assert!(row["ratio"].as_f64().is_some_and(|r| r > 0.0), "{row}");
    }
    assert!(stderr.contains("vendor B drains"), "{stderr}");
    assert!(stderr.contains("paired with a direct call"), "{stderr}");
}
