//! Helpers for the `switchyard check` tests: a copy of the good fixture system to break one
//! thing in, and a run of the real binary in both output forms.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The good system: several services (python and shell `run`s), a schema, every policy.
pub const GOOD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check/good");

/// A copy of the good system in a temp dir.
pub struct System {
    tmp: tempfile::TempDir,
}

impl System {
    pub fn good() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        copy_dir(Path::new(GOOD), tmp.path());
        System { tmp }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    /// Replaces the one occurrence of `from` in `rel` with `to`.
    #[track_caller]
    pub fn edit(&self, rel: &str, from: &str, to: &str) -> &Self {
        let text = self.read(rel);
        assert_eq!(text.matches(from).count(), 1, "{from:?} once in {rel}");
        self.write(rel, &text.replacen(from, to, 1))
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        self
    }

    /// The 1-based line of `rel` that holds `needle` (exactly one does).
    #[track_caller]
    pub fn line_of(&self, rel: &str, needle: &str) -> u32 {
        let text = self.read(rel);
        let lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(lines.len(), 1, "{needle:?} on one line of {rel}");
        lines[0] as u32
    }

    pub fn check(&self) -> Checked {
        check_dir(self.dir())
    }
}

/// Copies a folder tree, file modes included (`run` programs must stay executable).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// One check of a directory, human and `--json`.
#[derive(Debug)]
pub struct Checked {
    pub code: i32,
    /// The human output's lines, the summary last.
    pub lines: Vec<String>,
    pub json: Value,
}

/// Runs `switchyard check DIR` and `switchyard check DIR --json`, and asserts that both
/// exit alike and say the same: one human line per JSON diagnostic, in the same order.
pub fn check_dir(dir: &Path) -> Checked {
    let dir = dir.to_str().expect("utf-8 path");
    let human = Command::new(BIN)
        .args(["check", dir])
        .output()
        .expect("run check");
    let json = Command::new(BIN)
        .args(["check", dir, "--json"])
        .output()
        .expect("run check --json");
    let stdout = String::from_utf8_lossy(&human.stdout).into_owned();
    let json_text = String::from_utf8_lossy(&json.stdout).into_owned();
    assert_eq!(
        human.status.code(),
        json.status.code(),
        "exit codes differ\nhuman:\n{stdout}\njson:\n{json_text}"
    );
    let value: Value = serde_json::from_str(&json_text)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}):\n{json_text}"));
    let lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    let diagnostics = value["diagnostics"].as_array().expect("diagnostics array");
    assert_eq!(
        lines.len(),
        diagnostics.len() + 1,
        "one line per diagnostic and a summary:\n{stdout}\n{json_text}"
    );
    for (line, d) in lines.iter().zip(diagnostics) {
        assert_eq!(*line, human_form(d), "human and JSON differ");
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d["severity"] == "error")
        .count();
    assert_eq!(value["errors"], errors);
    assert_eq!(value["warnings"], diagnostics.len() - errors);
    assert_eq!(value["ok"], errors == 0);
    Checked {
        code: human.status.code().unwrap_or(-1),
        lines,
        json: value,
    }
}

/// A JSON diagnostic as the human output prints it.
fn human_form(d: &Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    let mut out = format!("{}[{}]: {}", s("severity"), s("code"), s("file"));
    if let (Some(l), Some(c)) = (d["line"].as_u64(), d["column"].as_u64()) {
        out.push_str(&format!(":{l}:{c}"));
    }
    if !s("key").is_empty() {
        out.push_str(&format!(": {}", s("key")));
    }
    out.push_str(&format!(": {}", s("message")));
    out
}

impl Checked {
    pub fn diagnostics(&self) -> &[Value] {
        self.json["diagnostics"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    pub fn summary(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }

    /// Asserts exit 1 and that the one error is `code` in `file` at `line`, about `key`;
    /// returns its message.
    #[track_caller]
    pub fn only_error(&self, code: &str, file: &str, line: Option<u32>, key: &str) -> String {
        assert_eq!(self.code, 1, "exit code\n{}", self.lines.join("\n"));
        let errors: Vec<&Value> = self
            .diagnostics()
            .iter()
            .filter(|d| d["severity"] == "error")
            .collect();
        assert_eq!(errors.len(), 1, "one error:\n{}", self.lines.join("\n"));
        let e = errors[0];
        assert_eq!(e["code"], code, "{e}");
        assert_eq!(e["file"], file, "{e}");
        assert_eq!(e["line"].as_u64(), line.map(u64::from), "{e}");
        assert_eq!(e["key"], key, "{e}");
        // And the human line says so, as the issue shows it.
        let prefix = match line {
            Some(l) => format!("error[{code}]: {file}:{l}:"),
            None => format!("error[{code}]: {file}: "),
        };
        let human = self
            .lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{}", self.lines.join("\n")));
        if !key.is_empty() {
            assert!(human.contains(&format!(": {key}: ")), "{human}");
        }
        assert!(self.summary().starts_with("failed: "), "{}", self.summary());
        e["message"].as_str().unwrap_or_default().to_string()
    }
}
