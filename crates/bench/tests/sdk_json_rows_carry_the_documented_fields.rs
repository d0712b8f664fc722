//! `switchyard-bench sdk --json` prints the two rows the suite documents, exactly those
//! fields. (A tiny run; speed and memory are never asserted.)

mod common;

use std::process::Command;

#[test]
fn a_tiny_run_prints_the_memory_and_latency_rows() {
    let data = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args([
            "sdk",
            "--json",
            "--services",
            "3",
            "--events",
            "20",
            "--rate",
            "200",
            "--seconds",
            "0.5",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .expect("run the bench");
    let common::Rows { rows, stdout, .. } = common::json_rows(&out);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!(rows[0]["suite"], "sdk");
    assert_eq!(rows[0]["case"], "rss-3-services");
    assert_eq!(common::keys(&rows[0]), ["case", "rss_mb", "suite"]);
    assert!(
        rows[0]["rss_mb"].as_f64().is_some_and(|mb| mb > 0.0),
        "{}",
        rows[0]
    );
    assert_eq!(rows[1]["case"], "publish-to-handler");
    assert_eq!(
        common::keys(&rows[1]),
        ["case", "p50_us", "p99_us", "suite"]
    );
    assert!(
        rows[1]["p99_us"].as_f64().is_some_and(|us| us > 0.0),
        "{}",
        rows[1]
    );
    // The benchmark cleans up after itself.
    assert_eq!(std::fs::read_dir(data.path()).expect("read").count(), 0);
}
