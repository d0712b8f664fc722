//! `switchyard dev` with the gateway: a declared route to a service, a route created at
//! runtime through the admin API, and service-to-service calls through
//! `/v1/call/{service}/{path}`: the caller is the service whose `SWITCHYARD_CALL_TOKEN` the
//! call carries (a forged caller, a missing or unknown token, a forged queued call are
//! refused), a declared call passes, an undeclared one is refused naming both services, and
//! the caller's `on-failure` policy answers for a dependency that is down (fallback,
//! degrade, fail, queue). `switchyard chaos` takes a running service down, slow, and back:
//! calls get the caller's policy, routes a fault, pushes are retried and delivered after
//! `clear`; bad arguments are refused naming them.

mod common;

use common::BIN;
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Echoes what it got as JSON (`/env`: its environment).
const SERVICE: &str = r#"
import http.server, json, os, threading
seen, failed, lock = [], set(), threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body):
        b = json.dumps(body).encode()
        self.send_response(code); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def handle_any(self):
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n).decode() if n else ""
        if self.path == "/healthz":
            return self.reply(200, {"ok": True})
        if self.path == "/env":
            return self.reply(200, dict(os.environ))
        if self.path == "/events":
            with lock:
                seen.append(["push", self.headers.get("ce-id")])
            return self.reply(200, {"ok": True})
        if self.path == "/seen":
            with lock:
                return self.reply(200, list(seen))
        if self.path.startswith("/flaky-once/"):
            with lock:
                if self.path not in failed:
                    failed.add(self.path)
                    return self.reply(503, {"busy": True})
                seen.append([self.command, self.path, body, self.headers.get("switchyard-caller")])
        self.reply(200, {"service": os.environ["SERVICE_NAME"], "method": self.command, "path": self.path,
                         "caller": self.headers.get("switchyard-caller"), "body": body,
                         "request-id": self.headers.get("x-request-id")})
    do_GET = do_POST = do_PUT = do_DELETE = handle_any
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("test step")).expect("test step");
    std::fs::write(path, text).expect("test step");
}

fn service(root: &Path, name: &str, extra: &str) {
    let dir = root.join("services").join(name);
    write(&dir.join("svc.py"), SERVICE);
    write(
        &dir.join("service.toml"),
        &format!(
            "name = \"{name}\"\nrun = \"python3 svc.py\"\n[health]\ntimeout = \"5s\"\n{extra}"
        ),
    );
}

struct Dev {
    child: Child,
    api: String,
    gateway: String,
}

impl Dev {
    #[allow(clippy::zombie_processes)]
    fn start(dir: &Path, extra: &[&str]) -> Dev {
        let mut child = Command::new(BIN)
            .arg("dev")
            .arg(dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--gateway-listen",
                "127.0.0.1:0",
                "--grace",
                "2s",
            ])
            .args(extra)
            .env_remove("SWITCHYARD_GATEWAY_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchyard dev");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("test step"));
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait().expect("test step");
                panic!("switchyard dev exited before it was ready: {status}");
            }
            if line.starts_with("switchyard dev: ") && line.contains(" ready in ") {
                let urls: Vec<String> = line
                    .split_whitespace()
                    .filter(|w| w.starts_with("http://"))
                    .map(|w| w.trim_end_matches([',', ';']).to_string())
                    .collect();
                let gateway = line
                    .split("gateway ")
                    .nth(1)
                    .and_then(|r| r.split(';').next())
                    .expect("the ready line names the gateway")
                    .trim()
                    .to_string();
                std::thread::spawn(move || for _ in out.lines() {});
                return Dev {
                    child,
                    api: urls[0].clone(),
                    gateway,
                };
            }
        }
    }

    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("test step");
        let code = self.child.wait().expect("test step").code();
        assert_eq!(code, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_service_calls_go_through_the_gateway() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("test step");
    let root = tmp.path();
    write(
        &root.join("switchyard.toml"),
        "[system]\nname = \"gw\"\n[topics.\"calls.v1\"]\n[topics.\"jobs.v1\"]\nexternal-producers = true\n\n[[routes]]\nname = \"api\"\npath = \"/api/a/{*rest}\"\nstrip-prefix = true\nservice = \"a\"\n",
    );
    service(
        root,
        "a",
        "[[subscribes]]\ntopic = \"jobs.v1\"\npath = \"/events\"\n\
         retry = { initial-backoff = \"100ms\", max-backoff = \"200ms\", jitter = 0.0, max-attempts = 1000 }\n",
    );
    service(
        root,
        "b",
        "[dependencies.a]\nkind = \"sync\"\non-failure = \"fail\"\n\
         [dependencies.c]\nkind = \"sync\"\non-failure = { policy = \"fallback\", body = '{\"stub\":true}' }\n\
         [dependencies.d]\nkind = \"sync\"\non-failure = { policy = \"degrade\", header = \"X-Degraded\" }\n\
         [dependencies.e]\nkind = \"sync\"\non-failure = { policy = \"retry\", attempts = 2, timeout = \"500ms\", backoff = \"10ms\" }\n\
         [dependencies.g]\nkind = \"async\"\non-failure = { policy = \"queue\", topic = \"calls.v1\" }\n",
    );
    for s in ["c", "d", "e"] {
        service(root, s, "");
    }
    service(root, "g", "");
    let dev = Dev::start(root, &["--only", "a,b,g"]);
    let c = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("test step");
    let get = |url: String, headers: Vec<(&'static str, String)>| {
        let c = c.clone();
        async move {
            let mut r = c.get(url);
            for (n, v) in headers {
                r = r.header(n, v);
            }
            let r = r.send().await.expect("test step");
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, headers, body)
        }
    };
    let none = Vec::new;
    let token = |t: &str| vec![("switchyard-call-token", t.to_string())];

    // The declared route.
    let (s, h, v) = get(format!("{}/api/a/hello?x=1", dev.gateway), none()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["service"], "a");
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(h["x-request-id"].to_str().unwrap(), v["request-id"]);

    // A route made at runtime, through the platform's API.
    let r = c
        .put(format!("{}/v1/gateway/routes/b-direct", dev.api))
        .json(&json!({"path": "/b/{*rest}", "strip-prefix": true, "service": "b"}))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 201);
    let (s, _, v) = get(format!("{}/b/env", dev.gateway), none()).await;
    assert_eq!(s, 200);
    assert_eq!(v["SWITCHYARD_GATEWAY_URL"], dev.gateway.as_str());
    assert_eq!(v["SERVICE_NAME"], "b");
    let b_token = v["SWITCHYARD_CALL_TOKEN"]
        .as_str()
        .expect("b's call token")
        .to_string();
    let (_, _, v) = get(format!("{}/api/a/env", dev.gateway), none()).await;
    let a_token = v["SWITCHYARD_CALL_TOKEN"]
        .as_str()
        .expect("a's call token")
        .to_string();
    assert!(b_token.len() >= 32 && a_token != b_token);
    let b = || token(&b_token);

    // b declares a: passed, with the caller named to a (and b's token not passed on).
    let (s, _, v) = get(format!("{}/v1/call/a/things/1", dev.gateway), b()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["path"].as_str(), v["caller"].as_str()),
        (Some("/things/1"), Some("b"))
    );
    // a declares nothing: refused, naming both.
    let (s, h, v) = get(format!("{}/v1/call/b/x", dev.gateway), token(&a_token)).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert_eq!(v["code"], "undeclared-dependency");
    assert_eq!(
        (v["caller"].as_str(), v["service"].as_str()),
        (Some("a"), Some("b"))
    );
    // Forged callers: b's name without a token (what anyone outside can write), a's token
    // claiming to be b, a token the system does not have.
    let forged = vec![("switchyard-caller", "b".to_string())];
    let (s, _, v) = get(format!("{}/v1/call/a/x", dev.gateway), forged).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("missing-call-token")));
    let mut claims_b = token(&a_token);
    claims_b.push(("switchyard-caller", "b".to_string()));
    let (s, _, v) = get(format!("{}/v1/call/a/x", dev.gateway), claims_b).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("caller-mismatch")));
    let (s, _, v) = get(format!("{}/v1/call/a/x", dev.gateway), token("mallory")).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("invalid-call-token")));

    // c, d and e are not started: their policies answer.
    let (s, h, v) = get(format!("{}/v1/call/c/x", dev.gateway), b()).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"stub": true}));
    assert_eq!(h["switchyard-fallback"], "c");
    let (s, h, v) = get(format!("{}/v1/call/d/x", dev.gateway), b()).await;
    assert_eq!((s, v["code"].as_str()), (503, Some("dependency-degraded")));
    assert_eq!(h["x-degraded"], "d");
    let (s, h, v) = get(format!("{}/v1/call/e/x", dev.gateway), b()).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("dependency-unavailable")),
        "{v}"
    );
    assert_eq!(v["tries"], 2, "{v}");
    assert_eq!(h["retry-after"], "1");

    // A queued call made up outside, pushed straight at the gateway: refused.
    let r = c
        .post(format!("{}/v1/queued-calls", dev.gateway))
        .json(&json!({"caller": "b", "dependency": "g", "method": "POST", "path": "/flaky-once/evil"}))
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 403);

    // g answers its first call 503: the call is queued (202) and delivered once g answers.
    let r = c
        .post(format!("{}/v1/call/g/flaky-once/n1", dev.gateway))
        .header("switchyard-call-token", &b_token)
        .body("note")
        .send()
        .await
        .expect("test step");
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("test step");
    assert_eq!(v["topic"], "calls.v1");
    let mut delivered = Value::Null;
    for _ in 0..100 {
        let (_, _, v) = get(format!("{}/v1/call/g/seen", dev.gateway), b()).await;
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            delivered = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(delivered, json!([["POST", "/flaky-once/n1", "note", "b"]]));

    // `switchyard chaos`: bad arguments named, nothing set.
    let chaos = |args: &[&str]| {
        let mut all = vec!["chaos"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", dev.api.as_str()]);
        common::run(&all)
    };
    let r = chaos(&["flaky", "a", "--rate", "1.5"]).expect_code(2);
    assert!(r.stderr.contains("--rate"), "{}", r.stderr);
    let r = chaos(&["down", "a", "--rate", "0.3"]).expect_code(2);
    assert!(r.stderr.contains("--rate"), "{}", r.stderr);
    let r = chaos(&["slow", "a", "--delay", "soon"]).expect_code(2);
    assert!(r.stderr.contains("--delay"), "{}", r.stderr);
    let r = chaos(&["down", "a", "--status", "200"]).expect_code(2);
    assert!(r.stderr.contains("--status"), "{}", r.stderr);
    let r = chaos(&["down", "nowhere"]).expect_code(2);
    assert!(r.stderr.contains("unknown-service"), "{}", r.stderr);
    let r = chaos(&["ls"]).expect_code(0);
    assert!(r.stdout.contains("0 fault(s)"), "{}", r.stdout);

    // a down: b's call gets its `fail` policy, the route a fault, a's pushes are retried.
    let (_, _, status) = get(format!("{}/v1/system/status", dev.api), none()).await;
    let a_url = status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "a"))
        .and_then(|s| s["url"].as_str())
        .expect("a's url")
        .to_string();
    let r = chaos(&["down", "a", "--for", "5m"]).expect_code(0);
    assert!(r.stdout.contains("a is down (no answer)"), "{}", r.stdout);
    let (s, _, v) = get(format!("{}/v1/call/a/things/1", dev.gateway), b()).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("dependency-unavailable")),
        "{v}"
    );
    let (s, h, _) = get(format!("{}/api/a/hello", dev.gateway), none()).await;
    assert_eq!(s, 502);
    assert_eq!(h["switchyard-fault"], "down");
    let r = c
        .post(format!("{}/v1/topics/jobs.v1/events", dev.api))
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"1.0","id":"job-1","source":"/test","type":"job","data":{}}"#)
        .send()
        .await
        .expect("test step");
    assert!(r.status().is_success(), "{}", r.status());
    let mut retried = Value::Null;
    for _ in 0..300 {
        let (_, _, v) = get(format!("{}/v1/subscriptions/a.jobs.v1", dev.api), none()).await;
        if v.to_string().contains("fault injected on `a`") {
            retried = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !retried.is_null(),
        "the push was not retried with the fault as its error"
    );
    let (_, _, seen) = get(format!("{a_url}/seen"), none()).await;
    assert_eq!(seen, json!([]), "a push reached a while it was down");
    let r = chaos(&["ls"]).expect_code(0);
    assert!(
        r.stdout.contains("1 fault(s)") && r.stdout.contains("down"),
        "{}",
        r.stdout
    );
    let r = chaos(&["clear", "a"]).expect_code(0);
    assert!(r.stdout.contains("cleared 1 fault(s) on a"), "{}", r.stdout);
    let mut pushed = Value::Null;
    for _ in 0..300 {
        let (_, _, v) = get(format!("{a_url}/seen"), none()).await;
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            pushed = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pushed, json!([["push", "job-1"]]));
    let (s, _, v) = get(format!("{}/v1/call/a/things/1", dev.gateway), b()).await;
    assert_eq!(s, 200, "{v}");
    // Slow: the call takes the delay more.
    chaos(&["slow", "a", "--delay", "400ms"]).expect_code(0);
    let started = std::time::Instant::now();
    let (s, _, _) = get(format!("{}/v1/call/a/things/1", dev.gateway), b()).await;
    assert_eq!(s, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    let r = chaos(&["clear"]).expect_code(0);
    assert!(r.stdout.contains("cleared 1 fault(s)"), "{}", r.stdout);
    dev.stop();
}
