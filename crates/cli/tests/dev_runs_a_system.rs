//! `switchyard dev` with real child processes (Python, standard library): dependency order
//! and injected environment, a crash restarted, a service that never turns healthy, a port
//! already taken, `--only`; then reset and snapshot save/restore through the running runner.

mod common;

use common::BIN;
use serde_json::Value;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One service for every test, its behaviour chosen by `MODE`: `ok` serves, records pushed
/// events in its database and answers `GET /count`; `POST /exit` makes it exit 3;
/// `unhealthy` answers health checks with 500; `needs-a` first checks that `A_URL` answers;
/// `stubborn` ignores SIGTERM.
const SERVICE: &str = r#"
import http.server, json, os, signal, sqlite3, sys, threading, urllib.request
mode = os.environ.get("MODE", "ok")
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"booting {os.environ['SERVICE_NAME']} mode={mode}", flush=True)
if mode == "needs-a":
    urllib.request.urlopen(os.environ["A_URL"] + "/healthz", timeout=2).read()
    print("a answered", flush=True)
db = None
# One connection shared by the handler threads: one transaction at a time, or one thread's
# rollback could undo another's acknowledged insert.
lock = threading.Lock()
if os.environ.get("DATABASE_URL", "").startswith("sqlite://"):
    db = sqlite3.connect(os.environ["DATABASE_URL"].removeprefix("sqlite://"), check_same_thread=False)
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body=b""):
        self.send_response(code); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(500 if mode == "unhealthy" else 200, b"ok")
        if self.path == "/count":
            with lock:
                n = db.execute("SELECT count(*) FROM seen").fetchone()[0]
            return self.reply(200, json.dumps({"count": n}).encode())
        if self.path == "/env":
            return self.reply(200, json.dumps(dict(os.environ)).encode())
        self.reply(404)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/exit":
            self.reply(200); os._exit(3)
        with lock, db:
            db.execute("INSERT OR IGNORE INTO seen (id) VALUES (?)", (self.headers["ce-id"],))
        self.reply(204)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("test step")).expect("test step");
    std::fs::write(path, text).expect("test step");
}

/// A service folder: `top` goes before the tables of its service.toml, `extra` after.
fn service(root: &Path, name: &str, mode: &str, top: &str, extra: &str) {
    let dir = root.join("services").join(name);
    write(&dir.join("svc.py"), SERVICE);
    write(
        &dir.join("service.toml"),
        &format!(
            "name = \"{name}\"\nrun = \"python3 svc.py\"\n{top}[env]\nMODE = \"{mode}\"\n[health]\ntimeout = \"2s\"\n{extra}"
        ),
    );
}

fn system(root: &Path) {
    write(
        &root.join("switchyard.toml"),
        "[system]\nname = \"test\"\n[topics.\"things.v1\"]\nevent-types = { \"thing.made\" = {} }\n",
    );
}

/// A running `switchyard dev`, its API URL, and what it printed until ready.
struct Dev {
    child: Child,
    url: String,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Dev {
    // The child is waited for by `stop`, or here when it exits before it is ready.
    #[allow(clippy::zombie_processes)]
    fn start(dir: &Path, extra: &[&str]) -> Result<Dev, (i32, String, String)> {
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
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchyard dev");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("test step"));
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait().expect("test step");
                let mut err = String::new();
                std::io::Read::read_to_string(
                    &mut child.stderr.take().expect("test step"),
                    &mut err,
                )
                .expect("test step");
                return Err((status.code().unwrap_or(-1), seen, err));
            }
            seen.push_str(&line);
            if line.starts_with("switchyard dev: ") && line.contains(" ready in ") {
                let url = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .expect("test step")
                    .trim_end_matches(',')
                    .to_string();
                // Keep draining stdout so the services' log lines never block them.
                return Ok(Dev { child, url, out });
            }
        }
    }

    fn status(&self) -> Value {
        get_json(&format!("{}/v1/system/status", self.url))
    }

    fn service(&self, name: &str) -> Value {
        self.status()["services"]
            .as_array()
            .expect("test step")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .expect("test step")
    }

    /// SIGTERM, then the exit code; the services must be gone too.
    fn stop(self) -> i32 {
        self.stop_with_output().0
    }

    /// [`Self::stop`], with what the runner printed after its ready line (stdout, then
    /// stderr).
    fn stop_with_output(mut self) -> (i32, String) {
        let mut stderr = self.child.stderr.take().expect("test step");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let pids: Vec<i64> = self.status()["services"]
            .as_array()
            .expect("test step")
            .iter()
            .filter_map(|s| s["pid"].as_i64())
            .collect();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("test step");
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut rest);
        let code = self.child.wait().expect("test step").code().unwrap_or(-1);
        for pid in pids {
            let alive = Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ");
            assert!(
                !alive,
                "service pid {pid} still runs after the runner stopped"
            );
        }
        rest.push_str(&errors.join().expect("test step"));
        (code, rest)
    }
}

fn get_json(url: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sf", url])
        .output()
        .expect("test step");
    assert!(out.status.success(), "GET {url} failed");
    serde_json::from_slice(&out.stdout).expect("test step")
}

fn post(url: &str) -> bool {
    Command::new("curl")
        .args(["-sf", "-X", "POST", url])
        .output()
        .expect("test step")
        .status
        .success()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn services_start_in_dependency_order_with_their_environment_and_crashes_restart() {
    let tmp = tempfile::tempdir().expect("test step");
    let root = tmp.path();
    system(root);
    service(root, "a", "ok", "", "");
    // b calls A_URL as it boots: it only starts once a is healthy.
    service(
        root,
        "b",
        "needs-a",
        "",
        "[dependencies.a]\nkind = \"sync\"\non-failure = \"fail\"\n",
    );
    let dev = Dev::start(root, &[]).unwrap_or_else(|e| panic!("dev did not start: {e:?}"));
    let (a, b) = (dev.service("a"), dev.service("b"));
    assert_eq!(
        (a["state"].as_str(), b["state"].as_str()),
        (Some("healthy"), Some("healthy"))
    );
    let env = get_json(&format!("{}/env", b["url"].as_str().expect("test step")));
    assert_eq!(env["SERVICE_NAME"], "b");
    assert_eq!(env["PORT"], b["port"].to_string());
    assert_eq!(env["SWITCHYARD_URL"], dev.url);
    assert_eq!(env["A_URL"], a["url"]);
    assert!(
        env["TRACEPARENT"]
            .as_str()
            .expect("test step")
            .starts_with("00-")
    );

    // a crashes: the runner restarts it and counts it.
    let old_pid = a["pid"].as_i64().expect("test step");
    assert!(post(&format!(
        "{}/exit",
        a["url"].as_str().expect("test step")
    )));
    wait_until("a to be restarted", || {
        let a = dev.service("a");
        a["state"] == "healthy" && a["restarts"] == 1 && a["pid"].as_i64() != Some(old_pid)
    });
    assert!(
        dev.service("a")["last-exit"]
            .as_str()
            .expect("test step")
            .contains("status 3")
    );
    assert_eq!(dev.stop(), 0);
}

#[test]
fn a_service_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let tmp = tempfile::tempdir().expect("test step");
    let root = tmp.path();
    system(root);
    service(root, "stubborn", "stubborn", "", "");
    let dev = Dev::start(root, &[]).unwrap_or_else(|e| panic!("dev did not start: {e:?}"));
    assert_eq!(dev.service("stubborn")["state"], "healthy");
    // `stop` checks that its pid is gone once the runner has exited.
    let (code, out) = dev.stop_with_output();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("still running 2s after SIGTERM: SIGKILL"),
        "the runner says it killed it: {out}"
    );
}

#[test]
fn a_service_that_never_turns_healthy_fails_the_start_with_its_last_lines() {
    let tmp = tempfile::tempdir().expect("test step");
    system(tmp.path());
    service(tmp.path(), "sick", "unhealthy", "", "");
    let (code, _, stderr) = Dev::start(tmp.path(), &[])
        .err()
        .expect("dev must not start");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("service sick did not start"), "{stderr}");
    assert!(stderr.contains("not healthy within 2s"), "{stderr}");
    assert!(stderr.contains("answered 500"), "{stderr}");
    assert!(stderr.contains("booting sick mode=unhealthy"), "{stderr}");
}

#[test]
fn a_port_already_taken_fails_the_start_and_names_the_service() {
    let tmp = tempfile::tempdir().expect("test step");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("test step");
    let port = taken.local_addr().expect("test step").port();
    system(tmp.path());
    service(tmp.path(), "late", "ok", &format!("port = {port}\n"), "");
    let (code, _, stderr) = Dev::start(tmp.path(), &[])
        .err()
        .expect("dev must not start");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("service late did not start"), "{stderr}");
    assert!(stderr.contains("exited during start"), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

#[test]
fn only_starts_the_chosen_services_and_the_others_events_wait() {
    let tmp = tempfile::tempdir().expect("test step");
    system(tmp.path());
    service(
        tmp.path(),
        "a",
        "ok",
        "",
        "[[publishes]]\ntopic = \"things.v1\"\ntypes = [\"thing.made\"]\n",
    );
    service(
        tmp.path(),
        "b",
        "ok",
        "",
        "[database]\nkind = \"sqlite\"\nmigrations = \"migrations\"\n\
         [[subscribes]]\ntopic = \"things.v1\"\npath = \"/events\"\n",
    );
    write(
        &tmp.path().join("services/b/migrations/0001.sql"),
        "CREATE TABLE seen (id TEXT PRIMARY KEY);",
    );
    // A full run first: b's subscription now exists in the store.
    Dev::start(tmp.path(), &[]).expect("dev starts").stop();
    let dev = Dev::start(tmp.path(), &["--only", "a"]).expect("dev starts");
    assert_eq!(dev.service("a")["state"], "healthy");
    assert_eq!(dev.service("b")["state"], "not-started");
    common::run_against(
        &dev.url,
        &[
            "publish",
            "things.v1",
            "--type",
            "thing.made",
            "--data",
            "{}",
        ],
        "",
    )
    .expect_code(0);
    std::thread::sleep(Duration::from_millis(500));
    let sub = get_json(&format!("{}/v1/subscriptions/b.things.v1", dev.url));
    assert_eq!(
        sub["in-flight"], 0,
        "nothing is pushed to b, which is down: {sub}"
    );
    assert_eq!(sub["parked"], 0, "{sub}");
    assert_eq!(
        sub["partitions"][0]["lag"], 1,
        "the event waits in the journal: {sub}"
    );
    assert_eq!(dev.stop(), 0);
    // With everything started, b gets it.
    let dev = Dev::start(tmp.path(), &[]).expect("dev starts");
    let b = dev.service("b")["url"].as_str().expect("url").to_string();
    wait_until("b to get the waiting event", || {
        get_json(&format!("{b}/count"))["count"] == 1
    });
    assert_eq!(dev.stop(), 0);
    let (code, _, stderr) = Dev::start(tmp.path(), &["--only", "zz"])
        .err()
        .expect("refused");
    assert_eq!(code, 2);
    assert!(stderr.contains("no service named \"zz\""), "{stderr}");
}

#[test]
fn reset_and_snapshots_put_journal_store_and_databases_back() {
    let tmp = tempfile::tempdir().expect("test step");
    let root = tmp.path();
    system(root);
    service(
        root,
        "keeper",
        "ok",
        "",
        "[database]\nkind = \"sqlite\"\nmigrations = \"migrations\"\n\
         [[subscribes]]\ntopic = \"things.v1\"\npath = \"/events\"\n\
         [[publishes]]\ntopic = \"things.v1\"\ntypes = [\"thing.made\"]\n",
    );
    write(
        &root.join("services/keeper/migrations/0001.sql"),
        "CREATE TABLE seen (id TEXT PRIMARY KEY);",
    );
    let dev = Dev::start(root, &[]).expect("test step");
    let keeper = dev.service("keeper")["url"]
        .as_str()
        .expect("test step")
        .to_string();
    let count = || {
        get_json(&format!("{keeper}/count"))["count"]
            .as_u64()
            .expect("test step")
    };
    let next_offset = || {
        get_json(&format!("{}/v1/topics/things.v1", dev.url))["partitions"][0]["next-offset"]
            .as_u64()
            .expect("test step")
    };
    let cli = |args: &[&str]| common::run_against(&dev.url, args, "");
    let publish = |id: &str| {
        cli(&[
            "publish",
            "things.v1",
            "--type",
            "thing.made",
            "--id",
            id,
            "--data",
            "{}",
        ])
        .expect_code(0);
    };
    publish("t-1");
    wait_until("the first event to be pushed", || count() == 1);
    let saved = cli(&["snapshot", "save", "one"]).expect_code(0);
    assert!(
        saved.stdout.contains("saved snapshot one"),
        "{}",
        saved.stdout
    );
    publish("t-2");
    wait_until("the second event to be pushed", || count() == 2);
    assert_eq!(next_offset(), 2);

    cli(&["snapshot", "restore", "one"]).expect_code(0);
    assert_eq!(next_offset(), 1, "the journal is back to one event");
    let keeper = dev.service("keeper")["url"]
        .as_str()
        .expect("test step")
        .to_string();
    assert_eq!(
        get_json(&format!("{keeper}/count"))["count"],
        1,
        "the service database is back too"
    );
    let ls = cli(&["snapshot", "ls", "--json"]).expect_code(0);
    assert_eq!(common::json(&ls.stdout)["snapshots"][0]["name"], "one");
    let missing = cli(&["snapshot", "restore", "nope"]).expect_code(2);
    assert!(
        missing.stderr.contains("no snapshot named \"nope\""),
        "{}",
        missing.stderr
    );
    cli(&["snapshot", "save", "../escape"]).expect_code(2);

    cli(&["reset"]).expect_code(0);
    assert_eq!(
        next_offset(),
        0,
        "reset empties the journal (topics are declared again)"
    );
    assert_eq!(get_json(&format!("{keeper}/count"))["count"], 0);
    // reset --seed: the known state, every subscriber caught up when it returns.
    let seed = root.join("seed.yaml");
    write(
        &seed,
        "events:\n  things.v1:\n    - {type: thing.made, data: {n: 1}}\n    - {type: thing.made, data: {n: 2}}\n    - {type: thing.made, data: {n: 3}}\n",
    );
    let seeded = cli(&["reset", "--seed", seed.to_str().expect("utf-8")]).expect_code(0);
    assert!(seeded.stdout.contains("appended 3"), "{}", seeded.stdout);
    let keeper = dev.service("keeper")["url"]
        .as_str()
        .expect("url")
        .to_string();
    assert_eq!(get_json(&format!("{keeper}/count"))["count"], 3);
    cli(&["seed", seed.to_str().expect("utf-8")]).expect_code(0);
    assert_eq!(next_offset(), 3, "seeding again appends nothing");
    let subs = get_json(&format!("{}/v1/subscriptions", dev.url));
    assert_eq!(subs["subscriptions"][0], "keeper.things.v1");
    assert_eq!(dev.stop(), 0);

    // With no runner, the same commands work on the state directory.
    let dir = root.to_str().expect("test step");
    let off = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--dir", dir, "--server", "http://127.0.0.1:9"]);
        common::run(&all)
    };
    off(&["snapshot", "restore", "one"]).expect_code(0);
    assert!(root.join(".switchyard/data/store.sqlite").exists());
    off(&["reset"]).expect_code(0);
    assert!(!root.join(".switchyard/data").exists());
    assert!(root.join(".switchyard/snapshots/one").exists());
}

/// `psql URL -tAc SQL`, trimmed; `None` when psql cannot reach the server.
fn psql(url: &str, sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .args([url, "-tAc", sql])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn postgres_databases_are_created_migrated_snapshotted_and_reset() {
    let admin = "postgres://postgres@127.0.0.1:5432/postgres";
    if psql(admin, "SELECT 1").is_none() {
        assert!(
            std::env::var_os("SWITCHYARD_REQUIRE_SERVICES").is_none(),
            "PostgreSQL is required on 127.0.0.1:5432"
        );
        eprintln!("skipped: no PostgreSQL on 127.0.0.1:5432");
        return;
    }
    let tmp = tempfile::tempdir().expect("test step");
    let root = tmp.path();
    // A system name of its own, so parallel runs do not share databases.
    let system_name = format!("pgtest{}", std::process::id());
    write(
        &root.join("switchyard.toml"),
        &format!("[system]\nname = \"{system_name}\"\n"),
    );
    service(
        root,
        "ledger",
        "ok",
        "",
        "[database]\nkind = \"postgres\"\nmigrations = \"migrations\"\n",
    );
    write(
        &root.join("services/ledger/migrations/0001.sql"),
        "CREATE TABLE entries (id INT PRIMARY KEY);",
    );
    let dev = Dev::start(root, &["--postgres", admin]).expect("dev starts");
    let env = get_json(&format!(
        "{}/env",
        dev.service("ledger")["url"].as_str().expect("url")
    ));
    let url = env["DATABASE_URL"]
        .as_str()
        .expect("DATABASE_URL")
        .to_string();
    assert!(url.ends_with(&format!("/sy_{system_name}_ledger")), "{url}");
    let count = || psql(&url, "SELECT count(*) FROM entries").expect("query");
    psql(&url, "INSERT INTO entries VALUES (1)").expect("insert");
    let cli = |args: &[&str]| common::run_against(&dev.url, args, "");
    cli(&["snapshot", "save", "one"]).expect_code(0);
    psql(&url, "INSERT INTO entries VALUES (2)").expect("insert");
    assert_eq!(count(), "2");
    cli(&["snapshot", "restore", "one"]).expect_code(0);
    assert_eq!(count(), "1", "the database is back to the snapshot");
    cli(&["reset"]).expect_code(0);
    assert_eq!(
        count(),
        "0",
        "reset drops the database; start migrates it again"
    );
    assert_eq!(dev.stop(), 0);
    // Offline, the runner's PostgreSQL databases are out of reach: a clear refusal.
    let off = common::run(&[
        "reset",
        "--dir",
        root.to_str().expect("utf-8"),
        "--server",
        "http://127.0.0.1:9",
    ])
    .expect_code(2);
    assert!(
        off.stderr.contains("keep their data in PostgreSQL"),
        "{}",
        off.stderr
    );
    // The database and its snapshot copy.
    let ours = psql(
        admin,
        &format!("SELECT datname FROM pg_database WHERE datname LIKE 'sy_{system_name}_%'"),
    )
    .unwrap_or_default();
    assert_eq!(ours.lines().count(), 2, "{ours}");
    for db in ours.lines() {
        let _ = psql(
            admin,
            &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
        );
    }
}
