//! A bad adapter configuration is refused whole, each problem named by file, line, column
//! and key; a reload with one leaves the running lanes as they were.

mod common;

use common::Platform;
use switchyard_connect::Error;

#[test]
fn each_problem_is_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("switchyard.toml");
    std::fs::write(
        &file,
        r#"[system]
name = "shop"

[adapters.bakery]
topic = "inventory.v1"
route = ".data.sku >="
mapping = "{a: nosuch(1)}"
concurrency = 0
writer = { kind = "http", url = "ftp://x", method = "BREW" }

[adapters.Bad_Name]
topic = "inventory.v1"
mapping = "."
writer = { kind = "file", dir = "out", name = "{{ .id }}.txt" }
"#,
    )
    .expect("write");
    let err = switchyard_connect::load(&file).expect_err("refused");
    let Error::Config(errors) = err else {
        panic!("not a config error: {err}");
    };
    let text = errors.to_string();
    let find = |key: &str| {
        errors
            .0
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error at {key}:\n{text}"))
    };
    assert_eq!(find("adapters.bakery.route").line, 6);
    assert!(
        find("adapters.bakery.route").message.contains("syntax"),
        "{text}"
    );
    assert_eq!(find("adapters.bakery.mapping").line, 7);
    assert!(
        find("adapters.bakery.mapping").message.contains("nosuch"),
        "{text}"
    );
    assert_eq!(find("adapters.bakery.concurrency").line, 8);
    assert_eq!(find("adapters.bakery.writer.url").line, 9);
    assert_eq!(find("adapters.bakery.writer.method").line, 9);
    assert_eq!(find("adapters.Bad_Name").line, 11);
    assert!(text.contains("switchyard.toml:6:"), "{text}");

    // An unknown key: located by the parser.
    std::fs::write(
        &file,
        "[adapters.bakery]\ntopic = \"inventory.v1\"\nmapping = \".\"\nwriter = { kind = \"http\", url = \"http://x\" }\nretries = 3\n",
    )
    .expect("write");
    let Err(Error::Config(errors)) = switchyard_connect::load(&file) else {
        panic!("unknown key accepted");
    };
    let e = &errors.0[0];
    assert_eq!(e.line, 5, "{e}");
    assert!(
        e.message.contains("unknown field") && e.message.contains("retries"),
        "{e}"
    );
    assert!(e.key.starts_with("adapters.bakery"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_changes_nothing() {
    let p = Platform::new(&[("inventory.v1", 1)]).await;
    let connect = p
        .connect(
            "[adapters.bakery]\ntopic = \"inventory.v1\"\nmapping = \".\"\nwriter = { kind = \"http\", url = \"http://127.0.0.1:9/x\" }\n",
        )
        .await;
    let before = connect.lanes().await.expect("lanes");
    p.config("[adapters.bakery]\ntopic = \"inventory.v1\"\nmapping = \"{\"\nwriter = { kind = \"http\", url = \"http://127.0.0.1:9/x\" }\n");
    assert!(matches!(connect.reload().await, Err(Error::Config(_))));
    let after = connect.lanes().await.expect("lanes");
    assert_eq!(before[0].hash, after[0].hash);
    // A file of adapters-dir may not redeclare one.
    std::fs::create_dir_all(p.path().join("adapters")).expect("mkdir");
    std::fs::write(
        p.path().join("adapters/more.toml"),
        "[adapters.bakery]\ntopic = \"inventory.v1\"\nmapping = \".\"\nwriter = { kind = \"http\", url = \"http://127.0.0.1:9/y\" }\n",
    )
    .expect("write");
    p.config("[connect]\nadapters-dir = \"adapters\"\n[adapters.bakery]\ntopic = \"inventory.v1\"\nmapping = \".\"\nwriter = { kind = \"http\", url = \"http://127.0.0.1:9/x\" }\n");
    let Err(Error::Config(errors)) = connect.reload().await else {
        panic!("a duplicate adapter was accepted");
    };
    assert!(errors.to_string().contains("already declared"), "{errors}");
    connect.shutdown().await;
}
