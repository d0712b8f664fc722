//! Against a server with tokens and a small batch limit (`max-batch-events = 7`), the seed
//! authenticates with `SWITCHYARD_TOKEN`, halves its batches until the server takes them,
//! and appends every event with each partition key's events in file order, although
//! several batches are in flight at once.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};

const SECRET: &str = "seed-test-secret-0123456789";
const EVENTS: u64 = 200;
const KEYS: u64 = 4;

#[test]
fn small_batch_limits_and_tokens_are_honoured_and_key_order_kept() {
    let s = Scratch::new();
    let config = s.data.with_file_name("switchyard.toml");
    std::fs::write(
        &config,
        "[server]\nmax-batch-events = 7\n[[server.tokens]]\nname = \"seeder\"\n\
         secret-env = \"SEED_TEST_SECRET\"\nscopes = [\"publish\", \"read\", \"admin\"]\n",
    )
    .expect("write config");
    let mut server = Command::new(BIN)
        .args(["serve", "--data", s.data_str(), "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .env("SEED_TEST_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut stderr = std::io::BufReader::new(server.stderr.take().expect("stderr"));
    let line = first_said_line(&mut stderr);
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();

    let mut yaml = String::from("topics:\n  keyed.v1: {partitions: 2}\nevents:\n  keyed.v1:\n");
    for n in 0..EVENTS {
        writeln!(
            yaml,
            "    - {{type: step, key: k{}, data: {{n: {n}}}}}",
            n % KEYS
        )
        .expect("write");
    }
    let file = s.data.with_file_name("steps.yaml");
    std::fs::write(&file, yaml).expect("write seed");
    let file = file.to_str().expect("utf-8 path");

    // Without the token: refused, exit 2, nothing created.
    let r = run_against(&base, &["seed", file], "");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("401"), "{}", r.stderr);

    let out = Command::new(BIN)
        .args(["seed", file, "--json"])
        .env("SWITCHYARD_URL", &base)
        .env("SWITCHYARD_TOKEN", SECRET)
        .stdin(Stdio::null())
        .output()
        .expect("run seed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&stdout);
    assert_eq!(report["topics"][0]["appended"], EVENTS, "{report}");

    // Read everything back: each key's events in file order.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let per_key = rt.block_on(async {
        let c = reqwest::Client::new();
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for p in 0..2 {
            let v: serde_json::Value = c
                .get(format!(
                    "{base}/v1/topics/keyed.v1/events?partition={p}&from=0&limit=1000"
                ))
                .bearer_auth(SECRET)
                .send()
                .await
                .expect("GET events")
                .json()
                .await
                .expect("json");
            for e in v["events"].as_array().expect("events") {
                per_key
                    .entry(e["partitionkey"].as_str().expect("key").to_string())
                    .or_default()
                    .push(e["data"]["n"].as_u64().expect("n"));
            }
        }
        per_key
    });
    assert_eq!(per_key.len() as u64, KEYS);
    for (key, ns) in &per_key {
        assert_eq!(ns.len() as u64, EVENTS / KEYS, "{key}");
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
    }

    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert_eq!(server.wait().expect("wait").code(), Some(0));
}
