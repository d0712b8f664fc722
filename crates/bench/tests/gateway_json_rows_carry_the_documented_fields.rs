//! `switchyard-bench gateway --json` prints one row per system and mode, exactly the
//! documented fields, then the added-latency rows (the gateway's and nginx's). A tiny run (short windows, a low rate, a
//! few connections); speed is never asserted.
//!
//! It needs the `switchyard` binary next to the bench's (`cargo test --workspace` builds
//! it) and nginx (Debian's package `nginx`; `.ci/run` installs it): without either it
//! prints why and skips, unless `SWITCHYARD_REQUIRE_SERVICES=1`, where it fails. Missing
//! peers and bad arguments are refused with their names before anything starts.

mod common;

use std::path::Path;
use std::process::Command;

fn missing(why: String) {
    let required = std::env::var("SWITCHYARD_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    assert!(!required, "{why} (SWITCHYARD_REQUIRE_SERVICES=1)");
    eprintln!("skipped: {why}");
}

#[test]
fn a_tiny_run_prints_a_row_per_system_and_mode() {
    let bench = Path::new(env!("CARGO_BIN_EXE_switchyard-bench"));
    let switchyard = bench.with_file_name("switchyard");
    if !switchyard.is_file() {
        return missing(format!(
            "no {} (cargo test --workspace, or cargo build -p switchyard, builds it)",
            switchyard.display()
        ));
    }
    let has_nginx = Path::new("/usr/sbin/nginx").is_file()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nginx").is_file()));
    if !has_nginx {
        return missing("no nginx (apt-get install nginx)".to_string());
    }
    let out = Command::new(bench)
        .args([
            "gateway",
            "--json",
            "--connections",
            "4",
            "--seconds",
            "0.3",
            "--warmup",
            "0.1",
            "--repeats",
            "1",
            "--rate",
            "200",
            "--switchyard",
        ])
        .arg(&switchyard)
        .output()
        .expect("run the bench");
    let common::Rows {
        rows,
        stdout,
        stderr,
    } = common::json_rows(&out);
    let seen: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["case"].as_str().unwrap(), r["system"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("plain", "switchyard"),
            ("plain", "nginx"),
            ("plain", "direct"),
            ("jwt-ratelimit", "switchyard"),
            ("jwt-ratelimit", "nginx"),
            ("jwt-ratelimit", "direct"),
            ("added-latency-200", "switchyard"),
            ("added-latency-200", "nginx"),
        ],
        "{stdout}"
    );
    for r in &rows[..6] {
        assert_eq!(r["suite"], "gateway");
        assert_eq!(
            common::keys(r),
            ["case", "p99_us", "requests_per_s", "suite", "system"],
            "{r}"
        );
        assert!(r["requests_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        assert!(r["p99_us"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
    for lat in &rows[6..] {
        assert_eq!(lat["suite"], "gateway");
        assert_eq!(
            common::keys(lat),
            [
                "case",
                "p50_us",
                "p99_us",
                "requests_per_s",
                "suite",
                "system"
            ],
            "{lat}"
        );
        // Added latency may be negative on a noisy machine; it is a number.
        assert!(lat["p99_us"].as_f64().is_some(), "{lat}");
        assert!(
            lat["requests_per_s"].as_f64().is_some_and(|x| x > 0.0),
            "{lat}"
        );
    }
    assert!(stderr.contains("repeat their plain figures"), "{stderr}");
}

#[test]
fn missing_peers_and_bad_arguments_are_named_before_anything_starts() {
    let bench = env!("CARGO_BIN_EXE_switchyard-bench");
    let run = |args: &[&str]| {
        let out = Command::new(bench)
            .args(args)
            .output()
            .expect("run the bench");
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?} printed rows");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["gateway", "--switchyard", "/nonexistent/switchyard"]);
    assert!(
        e.contains("no switchyard binary at /nonexistent/switchyard"),
        "{e}"
    );
    // Any existing file passes the switchyard check; nginx is looked for next.
    let e = run(&[
        "gateway",
        "--switchyard",
        bench,
        "--nginx",
        "/nonexistent/nginx",
    ]);
    assert!(e.contains("--nginx /nonexistent/nginx"), "{e}");
    let e = run(&["gateway", "--connections", "0"]);
    assert!(e.contains("--connections must be 1 to 4096"), "{e}");
    let e = run(&["gateway", "--rate", "0"]);
    assert!(e.contains("--rate must be"), "{e}");
    let e = run(&[
        "gateway",
        "--switchyard",
        bench,
        "--nginx",
        bench,
        "--workers",
        "0",
    ]);
    assert!(e.contains("--workers must be at least 1"), "{e}");
}
