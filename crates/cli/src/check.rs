//! `switchyard check [DIR]`: loads a system directory's manifests and prints every
//! diagnostic. The rules themselves live in `switchyard-manifest`; the adapters of
//! switchyard.toml are checked by `switchyard-connect`, as `serve` and `dev` would load
//! them.

use crate::Exit;
use anyhow::Context as _;
use clap::Args;
use std::io::Write as _;
use std::path::PathBuf;
use switchyard_manifest::{Diagnostic, Loaded};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The system directory: switchyard.toml and services/<name>/service.toml.
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Print one JSON document instead of lines: {"ok", "errors", "warnings",
    /// "diagnostics": [{"severity", "code", "file", "line", "column", "key", "message"}]}.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` document.
#[derive(serde::Serialize)]
struct Report<'a> {
    ok: bool,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
    /// Problems in the adapters: {"file", "line", "column", "key", "message"}.
    #[serde(rename = "adapter-errors")]
    adapter_errors: Vec<serde_json::Value>,
}

/// The adapters' problems (none when switchyard.toml declares none or is missing).
fn adapter_errors(dir: &std::path::Path) -> Vec<switchyard_connect::ConfigError> {
    match switchyard_connect::load(&dir.join("switchyard.toml")) {
        Err(switchyard_connect::Error::Config(errors)) => errors.0,
        _ => Vec::new(),
    }
}

/// Exit code 0 without errors (warnings allowed), 1 with errors, 2 when DIR cannot be read.
pub fn run(args: CheckArgs) -> Result<u8, Exit> {
    let loaded = switchyard_manifest::load(&args.dir).map_err(|e| Exit {
        code: 2,
        error: e.into(),
    })?;
    // Only once the manifest itself parses: its errors come first.
    let adapters = if loaded.is_ok() {
        adapter_errors(&args.dir)
    } else {
        Vec::new()
    };
    let ok = loaded.is_ok() && adapters.is_empty();
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = Report {
            ok,
            errors: loaded.errors() + adapters.len(),
            warnings: loaded.warnings(),
            diagnostics: &loaded.diagnostics,
            adapter_errors: adapters
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "file": e.file.strip_prefix(&args.dir).unwrap_or(&e.file).display().to_string(),
                        "line": e.line, "column": e.column, "key": e.key, "message": e.message,
                    })
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&report).context("encoding JSON")?;
        writeln!(out, "{text}")?;
    } else {
        for d in &loaded.diagnostics {
            writeln!(out, "{d}")?;
        }
        for e in &adapters {
            let file = e.file.strip_prefix(&args.dir).unwrap_or(&e.file);
            writeln!(
                out,
                "error[invalid-adapter]: {}:{}:{}: {}: {}",
                file.display(),
                e.line,
                e.column,
                e.key,
                e.message
            )?;
        }
        writeln!(out, "{}", summary(&args.dir, &loaded, adapters.len()))?;
    }
    out.flush()?;
    Ok(if ok { 0 } else { 1 })
}

/// `ok: ./shop: 4 services, 5 topics, 7 subscriptions; 0 errors, 1 warning`
fn summary(dir: &std::path::Path, l: &Loaded, adapter_errors: usize) -> String {
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let s = &l.system;
    format!(
        "{}: {}: {}, {}, {}; {}, {}",
        if l.is_ok() && adapter_errors == 0 {
            "ok"
        } else {
            "failed"
        },
        dir.display(),
        plural(s.services.len(), "service"),
        plural(s.topics.len(), "topic"),
        plural(s.all_subscriptions().count(), "subscription"),
        plural(l.errors() + adapter_errors, "error"),
        plural(l.warnings(), "warning"),
    )
}
