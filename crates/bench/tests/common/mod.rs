//! Reading what a `switchyard-bench ... --json` run printed.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use serde_json::Value;
use std::process::Output;

/// What a successful `--json` run printed.
pub struct Rows {
    /// One per stdout line.
    pub rows: Vec<Value>,
    pub stdout: String,
    /// The notes.
    pub stderr: String,
}

/// The run's JSON rows; the run must have succeeded, else its stdout and stderr are the
/// failure.
pub fn json_rows(out: &Output) -> Rows {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let rows = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    Rows {
        rows,
        stdout,
        stderr,
    }
}

/// A row's keys, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}
