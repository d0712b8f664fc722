//! What the platform's crates warn about reaches `switchyard serve`'s stderr, filtered by
//! `SWITCHYARD_LOG` (default: warnings and errors): here, a gateway route whose JWKS URL
//! does not answer. `off` hides it; a filter that cannot be read is refused at start, with
//! the variable named, before anything is created.

mod common;
use base64::Engine as _;
use common::*;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WARNING: &str = "fetching the JWKS failed";

struct Serve {
    child: Child,
    gateway: String,
    stderr: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("switchyard.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:0\"\ngateway-listen = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"api\"\npath = \"/api/{*rest}\"\n\
         upstreams = [{ url = \"http://127.0.0.1:1\" }]\n\
         [routes.auth]\njwt = { algorithm = \"RS256\", jwks-url = \"http://127.0.0.1:1/jwks.json\" }\n",
    )
    .expect("write");
    cfg
}

fn start(data: &str, cfg: &std::path::Path, log: Option<&str>) -> Serve {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data", data, "--config"])
        .arg(cfg)
        .env_remove("SWITCHYARD_GATEWAY_TOKEN")
        .env_remove("SWITCHYARD_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(log) = log {
        cmd.env("SWITCHYARD_LOG", log);
    }
    let mut child = cmd.spawn().expect("start serve");
    let (gateway, stderr) = gateway_address(&mut child);
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut s = sink.lock().expect("stderr lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
    Serve {
        child,
        gateway,
        stderr: seen,
        reader,
    }
}

impl Serve {
    /// Stops the server; everything it wrote on stderr after its gateway listened.
    fn stop(mut self) -> String {
        stop_cleanly(&mut self.child);
        self.reader.join().expect("reader");
        self.stderr.lock().expect("stderr lock").clone()
    }

    fn seen(&self, text: &str) -> bool {
        self.stderr.lock().expect("stderr lock").contains(text)
    }
}

/// A request with an RS256 token: the gateway needs the JWKS to check it.
async fn request_with_token(gateway: &str) -> u16 {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
        b64(r#"{"sub":"ada"}"#),
        b64("not a signature")
    );
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{gateway}/api/orders"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_gateway_warning_is_on_stderr_unless_the_filter_hides_it() {
    let s = Scratch::new();
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path());

    let serve = start(s.data_str(), &cfg, None);
    assert_ne!(request_with_token(&serve.gateway).await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !serve.seen(WARNING) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = serve.stop();
    let line = stderr
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no warning on stderr:\n{stderr}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("127.0.0.1:1"),
        "the line says which URL: {line}"
    );

    let serve = start(s.data_str(), &cfg, Some("off"));
    assert_ne!(request_with_token(&serve.gateway).await, 200);
    // The fetch runs on its own task: give it the time it took above.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stderr = serve.stop();
    assert!(
        !stderr.contains(WARNING),
        "shown with SWITCHYARD_LOG=off:\n{stderr}"
    );
}

#[test]
fn a_filter_that_cannot_be_read_is_refused_before_anything_starts() {
    let s = Scratch::new();
    let out = Command::new(BIN)
        .args(["serve", "--data", s.data_str()])
        .env("SWITCHYARD_LOG", "warn,switchyard_bus=loud")
        .stdin(Stdio::null())
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SWITCHYARD_LOG=\"warn,switchyard_bus=loud\""),
        "{stderr}"
    );
    assert!(
        !std::path::Path::new(s.data_str()).exists(),
        "the data directory was created"
    );
}
