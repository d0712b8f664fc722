//! Starting the shop under `shop-host dev` for a test.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The shop's folder (examples/shop).
pub fn system() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running `shop-host dev examples/shop` on a fresh state in `state`, with its API and
/// gateway on ports of their own; the services on their declared ports.
pub struct Shop {
    pub child: Child,
    /// The platform's API, `http://...`.
    pub api: String,
    /// The API gateway, `http://...`.
    pub gateway: String,
}

impl Shop {
    /// Starts it and waits for the ready line.
    pub fn start(state: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shop-host"))
            .arg("dev")
            .arg(system())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--gateway-listen",
                "127.0.0.1:0",
                "--fresh",
                "--state",
            ])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shop-host dev");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let ready = loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).expect("read") > 0,
                "dev exited before ready"
            );
            if line.contains(" ready in ") {
                break line;
            }
        };
        // "...; API http://A, status http://A/v1/system/status, gateway http://G; Ctrl-C stops"
        let urls: Vec<String> = ready
            .split_whitespace()
            .filter(|w| w.starts_with("http://"))
            .map(|w| w.trim_end_matches([',', ';']).to_string())
            .collect();
        let api = urls.first().expect("API address").clone();
        let gateway = urls.last().expect("gateway address").clone();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Self {
            child,
            api,
            gateway,
        }
    }

    /// SIGTERM, and a clean exit.
    pub fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status}");
    }
}

impl Drop for Shop {
    /// A test that fails before `stop` must not leave the runner (and its services on the
    /// shop's fixed ports) behind for the next test: SIGTERM lets it stop its children.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while let Ok(None) = self.child.try_wait() {
                if std::time::Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}
