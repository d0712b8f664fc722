//! A round trip through a real RabbitMQ on 127.0.0.1:5672 (guest/guest): the adapter
//! publishes a CSV request with publisher confirms and a correlation header; a vendor
//! (this test) answers on the reply queue with that id as the message's correlation id;
//! the gateway matches it, appends the reply event and settles the message. A reply that
//! matches nothing is recorded as unmatched. Without RabbitMQ the test prints why and
//! skips, unless `SWITCHYARD_REQUIRE_SERVICES=1`.

mod common;

use common::{Platform, eventually};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use std::time::Duration;
use switchyard_store::connect::{MessageState, ReplyDisposition};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn broker() -> Option<Connection> {
    match Connection::connect(URL, ConnectionProperties::default()).await {
        Ok(c) => Some(c),
        Err(e) => {
            assert!(
                std::env::var_os("SWITCHYARD_REQUIRE_SERVICES").is_none(),
                "RabbitMQ is required (SWITCHYARD_REQUIRE_SERVICES) but {URL} failed: {e}"
            );
            eprintln!("skipping: no RabbitMQ at 127.0.0.1:5672 ({e})");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_reply_over_amqp() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.expect("channel");
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let requests = format!("sy-test-requests-{suffix}");
    let replies = format!("sy-test-replies-{suffix}");
    for q in [&requests, &replies] {
        ch.queue_declare(
            ShortString::from(q.as_str()),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    }
    let p = Platform::new(&[("inventory.v1", 1), ("vendor.v1", 1)]).await;
    let config = format!(
        r#"
[adapters.pizzeria]
topic = "inventory.v1"
route = ".data.sku >= 300"
mapping = "{{item: (.data.sku | pad(6)), qty: .data.qty}}"
encoding = {{ format = "csv", columns = ["item", "qty"] }}
start = "earliest"
writer = {{ kind = "amqp", url = "{URL}", routing-key = "{requests}" }}
correlation = {{ header = "x-correlation-id", reply-header = "correlation-id", timeout = "1m" }}
reply-queue = {{ url = "{URL}", queue = "{replies}" }}
reply = {{ topic = "vendor.v1", type = "restock.confirmed", mapping = "{{order: .body.order, sku: .event.data.sku}}" }}
"#
    );
    let connect = p.connect(&config).await;
    p.publish(
        "inventory.v1",
        "e-1",
        "stock.low",
        "sku-301",
        json!({"sku": 301, "qty": 2}),
    )
    .await;

    // The vendor: take the request, answer on the reply queue.
    let mut consumer = ch
        .basic_consume(
            ShortString::from(requests.as_str()),
            ShortString::from("test-vendor"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a request within 20 s")
        .expect("stream open")
        .expect("delivery");
    assert_eq!(
        String::from_utf8_lossy(&delivery.data),
        "item,qty\n000301,2\n"
    );
    assert_eq!(
        delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some("text/csv")
    );
    let correlation = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-correlation-id").cloned())
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        })
        .expect("the correlation header");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    eventually(
        Duration::from_secs(10),
        "the message to await its reply",
        || async { p.count("pizzeria", MessageState::AwaitingReply).await == 1 },
    )
    .await;
    for (id, body) in [
        (correlation.as_str(), r#"{"order":"P-1"}"#),
        ("nobody", r#"{"order":"P-2"}"#),
    ] {
        ch.basic_publish(
            ShortString::from(""),
            ShortString::from(replies.as_str()),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_correlation_id(ShortString::from(id)),
        )
        .await
        .expect("publish reply")
        .await
        .expect("confirm");
    }
    eventually(
        Duration::from_secs(20),
        "the reply to settle the message",
        || async { p.count("pizzeria", MessageState::Delivered).await == 1 },
    )
    .await;
    let events = p.events("vendor.v1").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "restock.confirmed");
    assert_eq!(events[0]["data"], json!({"order": "P-1", "sku": 301}));
    eventually(Duration::from_secs(10), "both replies recorded", || async {
        connect
            .store()
            .replies("pizzeria", None, 10)
            .await
            .expect("replies")
            .len()
            == 2
    })
    .await;
    let recorded = connect
        .store()
        .replies("pizzeria", None, 10)
        .await
        .expect("replies");
    assert!(
        recorded
            .iter()
            .any(|r| r.disposition == ReplyDisposition::Matched)
    );
    assert!(
        recorded
            .iter()
            .any(|r| r.disposition == ReplyDisposition::Unmatched && r.body.contains("P-2"))
    );
    connect.shutdown().await;
    for q in [&requests, &replies] {
        let _ = ch
            .queue_delete(ShortString::from(q.as_str()), QueueDeleteOptions::default())
            .await;
    }
}

/// An exchange no queue is bound to: the broker returns the (mandatory) message, and the
/// adapter's classification decides what that is. By default a case, never a message
/// confirmed and lost; with 312 (no route) in `classify.retry` it waits for a binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_no_queue_takes_is_a_failure_not_a_loss() {
    use lapin::ExchangeKind;
    use lapin::options::{
        BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    };
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.expect("channel");
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let exchange = format!("sy-test-unbound-{suffix}");
    ch.exchange_declare(
        ShortString::from(exchange.as_str()),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare exchange");
    let p = Platform::new(&[("inventory.v1", 1)]).await;
    let config = format!(
        r#"
[adapters.strict]
topic = "inventory.v1"
route = ".data.sku == 1"
mapping = "{{item: .data.sku}}"
start = "earliest"
writer = {{ kind = "amqp", url = "{URL}", exchange = "{exchange}", routing-key = "strict" }}

[adapters.patient]
topic = "inventory.v1"
route = ".data.sku == 2"
mapping = "{{item: .data.sku}}"
start = "earliest"
retry = {{ initial-backoff = "50ms", max-backoff = "200ms", max-attempts = 1000 }}
writer = {{ kind = "amqp", url = "{URL}", exchange = "{exchange}", routing-key = "patient" }}
classify = {{ retry = [312] }}
"#
    );
    let connect = p.connect(&config).await;
    for sku in [1, 2] {
        p.publish(
            "inventory.v1",
            &format!("e-{sku}"),
            "stock.low",
            &format!("sku-{sku}"),
            json!({"sku": sku}),
        )
        .await;
    }
    eventually(
        Duration::from_secs(20),
        "the unroutable message in a case",
        || async { p.count("strict", MessageState::Failed).await == 1 },
    )
    .await;
    let m = &p.messages("strict").await[0];
    let (_, attempts) = connect.store().message(m.id).await.expect("message");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, Some(312), "{attempts:?}");
    let case = connect
        .store()
        .case(m.case_id.as_deref().expect("a case"))
        .await
        .expect("case");
    assert_eq!(case.key.status, Some(312));
    assert!(
        case.key.message.contains("no_route"),
        "the broker's reply text: {:?}",
        case.key.message
    );
    assert_eq!(p.count("strict", MessageState::Delivered).await, 0);

    // The patient adapter retries until a queue is bound, then it is delivered.
    eventually(Duration::from_secs(20), "retried returns", || async {
        let m = &p.messages("patient").await[0];
        m.attempts >= 2 && m.state == MessageState::Pending
    })
    .await;
    let queue = format!("sy-test-bound-{suffix}");
    ch.queue_declare(
        ShortString::from(queue.as_str()),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare queue");
    ch.queue_bind(
        ShortString::from(queue.as_str()),
        ShortString::from(exchange.as_str()),
        ShortString::from("patient"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    eventually(Duration::from_secs(20), "delivered once bound", || async {
        p.count("patient", MessageState::Delivered).await == 1
    })
    .await;
    let got = ch
        .basic_get(
            ShortString::from(queue.as_str()),
            BasicGetOptions::default(),
        )
        .await
        .expect("get")
        .expect("the message is in the queue");
    assert_eq!(String::from_utf8_lossy(&got.delivery.data), r#"{"item":2}"#);
    connect.shutdown().await;
    let _ = ch
        .queue_delete(
            ShortString::from(queue.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = ch
        .exchange_delete(
            ShortString::from(exchange.as_str()),
            ExchangeDeleteOptions::default(),
        )
        .await;
}
