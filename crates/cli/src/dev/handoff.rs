//! Handing `switchyard dev` over to the system's host binary.
//!
//! The embedded journal is one process's (its `LOCK` file), so services that use it
//! directly must run in the process that holds it: the runner's. The plain `switchyard`
//! binary cannot load Rust services, so when the system has `in-process` services it builds
//! the `[host]` package with cargo (the same profile as itself; a no-op when nothing
//! changed) and replaces itself with that binary, with the same arguments: the host binary
//! is `switchyard` with the services linked in, and runs the same `dev`.

use anyhow::{Context as _, anyhow, bail};
use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;
use switchyard_manifest::{Host, System};

/// Set in the host binary's environment: a host that still lacks a service must not hand
/// over again.
pub const HANDED_OVER: &str = "SWITCHYARD_DEV_HANDED_OVER";

/// Builds the host and execs it; returns only on failure.
pub fn hand_over(system: &System, in_process: &[String]) -> anyhow::Result<u8> {
    let host = system.host.as_ref().ok_or_else(|| {
        anyhow!(
            "services {} are in-process, and switchyard.toml has no [host] to build them from",
            in_process.join(", ")
        )
    })?;
    if std::env::var_os(HANDED_OVER).is_some() {
        bail!(
            "services {} are in-process, but the host binary of [host] package {:?} does not \
             link them in (its main must be switchyard::main_with with every one of them)",
            in_process.join(", "),
            host.package
        );
    }
    let started = Instant::now();
    // The first build compiles the host (a while); later ones are a no-op.
    eprintln!(
        "switchyard dev: building the host {} (cargo build {})",
        host.package,
        host.manifest.display()
    );
    let exe = build(host)?;
    eprintln!(
        "switchyard dev: {} in process: running the system from {} (cargo build: {} ms)",
        in_process.join(", "),
        exe.display(),
        started.elapsed().as_millis()
    );
    let err = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(HANDED_OVER, "1")
        .exec();
    Err(anyhow!("starting the host binary {}: {err}", exe.display()))
}

/// `cargo build` of the host package, in this binary's profile; the executable's path.
fn build(host: &Host) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(&host.manifest)
    .args(["--bin", &host.package])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "running {} to build the host {} (in-process services need cargo; or build it \
             yourself and run its `dev`)",
            PathBuf::from(&cargo).display(),
            host.package
        )
    })?;
    let mut exe = None;
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == host.package.as_str()
                && let Some(path) = msg["executable"].as_str()
            {
                exe = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!(
            "building the host {} ({}) failed: {status}",
            host.package,
            host.manifest.display()
        );
    }
    exe.ok_or_else(|| {
        anyhow!(
            "cargo built {} but named no binary {:?} (the [host] package needs a bin of its name)",
            host.manifest.display(),
            host.package
        )
    })
}
