//! Helpers for tests that run the real `switchyard` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics, showing both streams, unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `switchyard ARGS` with no standard input.
pub fn run(args: &[&str]) -> Run {
    run_with_stdin(args, "")
}

/// Runs `switchyard ARGS` with `stdin` as standard input.
pub fn run_with_stdin(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    Run::from(child.wait_with_output().expect("wait for switchyard"))
}

/// A fresh directory; the journal goes in `data` inside it (not yet created).
pub struct Scratch {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        Scratch { _tmp: tmp, data }
    }

    pub fn data_str(&self) -> &str {
        self.data.to_str().expect("utf-8 temp path")
    }
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Each line of `text` as JSON.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

/// `n` lines of about 100 bytes each.
pub fn lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("event-{i:05}-{}\n", "x".repeat(88)))
        .collect()
}

pub fn path_of(v: &serde_json::Value, base: &Path) -> PathBuf {
    let p = PathBuf::from(v.as_str().expect("path string"));
    if p.is_absolute() { p } else { base.join(p) }
}

/// A running `switchyard serve` on `listen` (port 0: a free one), its base URL, and its
/// stderr (kept open while the server runs: a closed pipe would fail its last lines).
pub fn start_server(
    data: &str,
    listen: &str,
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStderr>,
) {
    start_server_with(data, listen, &[])
}

/// [`start_server`] with more `serve` arguments.
pub fn start_server_with(
    data: &str,
    listen: &str,
    extra: &[&str],
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStderr>,
) {
    let mut child = Command::new(BIN)
        .args(["serve", "--data", data, "--listen", listen])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let line = first_said_line(&mut stderr);
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, base, stderr)
}

/// Runs `switchyard ARGS` against the server at `base` (SWITCHYARD_URL).
pub fn run_against(base: &str, args: &[&str], stdin: &str) -> Run {
    let mut c = Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_URL", base)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    Run::from(c.wait_with_output().expect("wait for switchyard"))
}

/// `PUT {base}/v1/topics/{topic}` with `settings` (JSON), expecting 201 Created.
pub async fn create_topic(base: &str, topic: &str, settings: &str) {
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/topics/{topic}"))
        .header("content-type", "application/json")
        .body(settings.to_string())
        .send()
        .await
        .expect("PUT topic");
    assert_eq!(r.status(), 201, "creating {topic}");
}

/// Reads a `switchyard serve` child's stderr until it says where its gateway listens: that
/// address, and the rest of stderr (read it, or the child may block on a full pipe).
pub fn gateway_address(child: &mut Child) -> (String, BufReader<ChildStderr>) {
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("read stderr") == 0 {
            panic!(
                "serve exited before its gateway listened: {:?}",
                child.wait()
            );
        }
        if line.contains("gateway on http://") {
            let address = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .expect("an address")
                .to_string();
            return (address, stderr);
        }
    }
}

/// The first line of a command's stderr that the command itself said, past the log lines
/// that may come before it (they start with their time: `2026-12-07T23:32:16.207Z  WARN ...`).
pub fn first_said_line(stderr: &mut impl BufRead) -> String {
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).expect("read stderr");
        if n == 0 || !line.starts_with(|c: char| c.is_ascii_digit()) {
            return line;
        }
    }
}

/// Stops a `switchyard` child with SIGTERM; it must exit with code 0.
pub fn stop_cleanly(child: &mut Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}
