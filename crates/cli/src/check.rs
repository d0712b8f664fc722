//! `switchyard check [DIR]`: loads a system directory's manifests and prints every
//! diagnostic. The rules themselves live in `switchyard-manifest`.

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
}

/// Exit code 0 without errors (warnings allowed), 1 with errors, 2 when DIR cannot be read.
pub fn run(args: CheckArgs) -> Result<u8, Exit> {
    let loaded = switchyard_manifest::load(&args.dir).map_err(|e| Exit {
        code: 2,
        error: e.into(),
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = Report {
            ok: loaded.is_ok(),
            errors: loaded.errors(),
            warnings: loaded.warnings(),
            diagnostics: &loaded.diagnostics,
        };
        let text = serde_json::to_string_pretty(&report).context("encoding JSON")?;
        writeln!(out, "{text}")?;
    } else {
        for d in &loaded.diagnostics {
            writeln!(out, "{d}")?;
        }
        writeln!(out, "{}", summary(&args.dir, &loaded))?;
    }
    out.flush()?;
    Ok(if loaded.is_ok() { 0 } else { 1 })
}

/// `ok: ./shop: 4 services, 5 topics, 7 subscriptions; 0 errors, 1 warning`
fn summary(dir: &std::path::Path, l: &Loaded) -> String {
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let s = &l.system;
    format!(
        "{}: {}: {}, {}, {}; {}, {}",
        if l.is_ok() { "ok" } else { "failed" },
        dir.display(),
        plural(s.services.len(), "service"),
        plural(s.topics.len(), "topic"),
        plural(s.all_subscriptions().count(), "subscription"),
        plural(l.errors(), "error"),
        plural(l.warnings(), "warning"),
    )
}
