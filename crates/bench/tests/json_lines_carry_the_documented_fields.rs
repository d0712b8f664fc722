//! `switchyard-bench journal --json` prints one object per case with the documented fields.
//! (A tiny run of the embedded journal only; speed is never asserted.)

mod common;

use std::process::Command;

#[test]
fn a_tiny_run_prints_one_json_object_per_case() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args([
            "journal",
            "--json",
            "--only",
            "switchyard",
            "--seconds",
            "0.2",
            "--warmup",
            "0.05",
        ])
        .args([
            "--repeats",
            "1",
            "--payloads",
            "256",
            "--appenders",
            "1,4",
            "--durability",
            "os",
        ])
        .args(["--in-flight", "8", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let common::Rows {
        rows,
        stdout,
        stderr,
    } = common::json_rows(&out);
    assert_eq!(rows.len(), 2, "{stdout}");
    for (row, appenders) in rows.iter().zip([1, 4]) {
        assert_eq!(row["suite"], "journal");
        assert_eq!(row["system"], "switchyard");
        assert_eq!(row["durability"], "os");
        assert_eq!(row["payload_bytes"], 256);
        assert_eq!(row["appenders"], appenders);
        assert_eq!(row["in_flight_per_appender"], 8);
        assert!(row["case"].as_str().is_some_and(|c| !c.is_empty()));
        for field in ["events_per_s", "p50_us", "p99_us", "seconds"] {
            assert!(
                row[field].as_f64().is_some_and(|v| v > 0.0),
                "{field}: {row}"
            );
        }
        assert!(row["events"].as_u64().is_some_and(|v| v > 0), "{row}");
    }
    assert!(
        stderr.contains("in flight"),
        "the in-flight window is stated: {stderr}"
    );
    // The benchmark cleans up after itself.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

#[test]
fn bad_arguments_are_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["journal", "--durability", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--durability"));
}

#[test]
fn the_dev_suite_prints_ready_seed_and_reset_rows() {
    // The `switchyard` and `shop-host` binaries next to this one: `cargo test --workspace`
    // builds them.
    let bench = std::path::Path::new(env!("CARGO_BIN_EXE_switchyard-bench"));
    let switchyard = bench.with_file_name("switchyard");
    let host = bench.with_file_name("shop-host");
    if !switchyard.is_file() || !host.is_file() {
        eprintln!(
            "skipped: no {} or {} (cargo test --workspace builds them)",
            switchyard.display(),
            host.display()
        );
        return;
    }
    let out = Command::new(bench)
        .args([
            "dev",
            "--json",
            "--quick",
            "--events",
            "300",
            "--switchyard",
        ])
        .arg(&switchyard)
        .arg("--host")
        .arg(&host)
        .output()
        .unwrap();
    let common::Rows { rows, stdout, .. } = common::json_rows(&out);
    let cases: Vec<&str> = rows.iter().filter_map(|r| r["case"].as_str()).collect();
    assert_eq!(cases, ["ready", "seed-300", "reset"], "{stdout}");
    for r in &rows {
        assert_eq!(
            (r["suite"].as_str(), r["system"].as_str()),
            (Some("dev"), Some("switchyard"))
        );
        assert!(r["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{r}");
    }
    assert!(
        rows[0]["rss_mb"].as_f64().is_some_and(|mb| mb > 0.0),
        "{}",
        rows[0]
    );
    assert!(
        rows[1]["peak_rss_mb"].as_f64().is_some_and(|mb| mb > 0.0),
        "{}",
        rows[1]
    );
}

/// `switchyard-bench bus --journal nats`: the HTTP API over a NATS JetStream journal on a
/// private nats-server the bench starts (and removes) itself.
#[test]
fn the_bus_suite_runs_on_a_private_nats_journal() {
    if switchyard_journal::nats_server::for_test("the_bus_suite_runs_on_a_private_nats_journal")
        .is_none()
    {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["bus", "--json", "--journal", "nats", "--only", "switchyard"])
        .args(["--seconds", "0.3", "--warmup", "0.05", "--repeats", "1"])
        .args([
            "--publishers",
            "2",
            "--batch",
            "10",
            "--durability",
            "always",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let common::Rows { rows, stdout, .. } = common::json_rows(&out);
    let cases: Vec<&str> = rows.iter().filter_map(|r| r["case"].as_str()).collect();
    assert_eq!(cases.len(), 2, "{stdout}");
    assert!(cases[0].starts_with("publish-http-") && cases[1] == "publish-to-delivery");
    for r in &rows {
        assert_eq!(r["system"], "switchyard-on-nats", "{r}");
        assert!(r["events"].as_u64().is_some_and(|v| v > 0), "{r}");
    }
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["bus", "--journal", "kafka://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--journal"));
}

/// `switchyard-bench bus --store postgres://...`: the delivery case on a PostgreSQL store (a
/// database of its own here), which keeps nothing of the run; a bad store URL is refused
/// naming the flag and without the password.
#[test]
fn the_bus_suite_delivers_on_a_postgres_store() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(switchyard_store::postgres::testing::TestDatabase::create(
        "the_bus_suite_delivers_on_a_postgres_store",
    )) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["bus", "--json", "--only", "switchyard", "--store", &db.url])
        .args(["--seconds", "0.3", "--warmup", "0.05", "--repeats", "1"])
        .args([
            "--publishers",
            "2",
            "--batch",
            "10",
            "--durability",
            "always",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let common::Rows { rows, stdout, .. } = common::json_rows(&out);
    let systems: Vec<(&str, &str)> = rows
        .iter()
        .filter_map(|r| Some((r["case"].as_str()?, r["system"].as_str()?)))
        .collect();
    assert_eq!(systems.len(), 2, "{stdout}");
    assert!(systems[0].0.starts_with("publish-http-") && systems[0].1 == "switchyard");
    assert_eq!(systems[1], ("publish-to-delivery", "switchyard-pg-store"));
    assert!(
        rows[1]["events"].as_u64().is_some_and(|v| v > 0),
        "{stdout}"
    );
    // Each repeat deleted its subscription.
    rt.block_on(async {
        use switchyard_store::Store as _;
        let store = switchyard_store::postgres::PostgresStore::open(&db.options(1))
            .await
            .unwrap();
        assert!(store.list_subscriptions().await.unwrap().is_empty());
        store.close().await;
    });
    rt.block_on(db.drop_it());

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["bus", "--store", "mysql://u:s3cret@h/db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--store") && !stderr.contains("s3cret"),
        "{stderr}"
    );
}
