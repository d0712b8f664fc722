//! The admin API: changes checked whole (nothing written when anything is wrong), appended
//! to the routes topic, the table rebuilt from it on restart; the file's routes synced at
//! start; the admin token enforced.

mod common;
use common::*;
use serde_json::json;
use switchyard_gateway::GatewayOptions;

const TOKEN: &str = "admin-token-0123456789";

#[tokio::test]
async fn admin_changes_are_events_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let mut services = switchyard_gateway::Services::new();
    services.insert("a".into(), vec![a.url()]);
    let declared = vec![
        route("name = \"file-a\"\npath = \"/a/{*rest}\"\nservice = \"a\""),
        route("name = \"file-gone\"\npath = \"/gone\"\nservice = \"a\""),
    ];
    let options = GatewayOptions {
        declared,
        services: services.clone(),
        admin_token: Some(TOKEN.into()),
        ..Default::default()
    };
    let gw = Running::start(dir.path(), options.clone()).await;
    let c = client();
    let admin = format!("{}/v1/gateway/routes", gw.admin);

    // The token is needed.
    let r = c.get(&admin).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(&admin)
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Bad routes are refused, naming the field, and change nothing.
    let bad = [
        (
            json!({"path": "/b", "upstreams": [{"url": "ftp://x"}]}),
            "/upstreams/0/url",
        ),
        (json!({"path": "b", "service": "a"}), "/path"),
        (json!({"path": "/b", "service": "nowhere"}), "/service"),
        (
            json!({"name": "other", "path": "/b", "service": "a"}),
            "/name",
        ),
    ];
    for (body, pointer) in bad {
        let r = c
            .put(format!("{admin}/b"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["pointer"], pointer, "{v}");
    }
    let r = c
        .put(format!("{admin}/b"))
        .bearer_auth(TOKEN)
        .json(&json!({"path": "/b", "service": "a", "prefix": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("unknown field `prefix`"));
    let r = c
        .put(format!("{admin}/b"))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, v) = get_json(&c, &format!("{}/b", gw.url)).await;
    assert_eq!(v["code"], "no-route");

    // A good one is in the table as soon as the PUT returns.
    let body = json!({"path": "/b/{*rest}", "strip-prefix": true, "upstreams": [{"url": b.url()}]});
    let r = c
        .put(format!("{admin}/b"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (s, v) = get_json(&c, &format!("{}/b/x", gw.url)).await;
    assert_eq!(
        (s, v["upstream"].as_str(), v["uri"].as_str()),
        (200, Some("b"), Some("/x"))
    );
    // Replace, then delete a route from the file.
    let body = json!({"path": "/b/{*rest}", "upstreams": [{"url": b.url()}]});
    let r = c
        .put(format!("{admin}/b"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = get_json(&c, &format!("{}/b/x", gw.url)).await;
    assert_eq!(v["uri"], "/b/x");
    let r = c
        .delete(format!("{admin}/file-a"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(format!("{admin}/file-a"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(&admin).bearer_auth(TOKEN).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let names: Vec<&str> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "file-gone"]);
    assert_eq!(v["routes"][0]["origin"], "admin");
    assert_eq!(v["routes"][0]["upstreams"][0]["healthy"], true);
    gw.stop().await;

    // Restart: the history is replayed. The file still declares file-a (put back: the file
    // wins at start for what it declares) but no longer file-gone (deleted).
    let options = GatewayOptions {
        declared: vec![route(
            "name = \"file-a\"\npath = \"/a/{*rest}\"\nservice = \"a\"",
        )],
        ..options
    };
    let gw = Running::start(dir.path(), options.clone()).await;
    let names: Vec<String> = gw
        .gateway
        .routes()
        .into_iter()
        .map(|(_, r)| r.name)
        .collect();
    assert_eq!(names, ["b", "file-a"]);
    let (s, v) = get_json(&c, &format!("{}/b/y", gw.url)).await;
    assert_eq!((s, v["upstream"].as_str()), (200, Some("b")));
    let (_, v) = get_json(&c, &format!("{}/gone", gw.url)).await;
    assert_eq!(v["code"], "no-route");
    gw.stop().await;

    // The same start again writes nothing new.
    let journal = switchyard_journal::file::FileJournal::open(dir.path()).unwrap();
    let t = switchyard_gateway::history::topic();
    use switchyard_journal::Journal as _;
    let before = journal.describe_topic(&t).await.unwrap().partitions[0].next_offset;
    journal.close().await.unwrap();
    let gw = Running::start(dir.path(), options).await;
    let after = gw.journal.describe_topic(&t).await.unwrap().partitions[0].next_offset;
    assert_eq!(before, after);
    gw.stop().await;
}
