//! The AMQP reply reader: consumes the adapter's `reply-queue` (declared durable if it
//! does not exist; used as it is if it does), turns each message into an answer (its headers, the `correlation-id`
//! property as a header of that name, its body) and acknowledges it once the lane has
//! recorded it. A broken connection is made again after a pause.

use crate::adapter::Answer;
use crate::lane::LaneShared;
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub(crate) async fn run(
    lane: Arc<LaneShared>,
    url: String,
    queue: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = consume(&lane, &url, &queue) => {
                if let Err(e) = r {
                    tracing::warn!(lane = lane.adapter.name, queue, "reply queue: {e}");
                }
            }
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

async fn consume(lane: &LaneShared, url: &str, queue: &str) -> Result<(), String> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("connecting to {}: {e}", crate::writer::amqp::redact(url)))?;
    // The queue as it is, if it exists (declaring it with other settings would fail);
    // else declared durable. A failed passive declare closes its channel: use a new one.
    let mut ch = conn
        .create_channel()
        .await
        .map_err(|e| format!("opening a channel: {e}"))?;
    let passive = ch
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    if passive.is_err() {
        ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        ch.queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declaring queue {queue}: {e}"))?;
    }
    let tag = format!("switchyard-{}", lane.adapter.name);
    let mut consumer = ch
        .basic_consume(
            ShortString::from(queue),
            ShortString::from(tag.as_str()),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("consuming {queue}: {e}"))?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(|e| format!("receiving: {e}"))?;
        let mut headers = Vec::new();
        if let Some(table) = delivery.properties.headers() {
            for (k, v) in table.inner() {
                if let Some(t) = text(v) {
                    headers.push((k.as_str().to_owned(), t));
                }
            }
        }
        if let Some(c) = delivery.properties.correlation_id() {
            headers.push(("correlation-id".to_owned(), c.as_str().to_owned()));
        }
        let answer = Answer {
            status: None,
            headers,
            body: String::from_utf8_lossy(&delivery.data).into_owned(),
        };
        match lane.receive_reply(answer).await {
            Ok(_) => {
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|e| format!("acknowledging: {e}"))?;
            }
            Err(e) => {
                tracing::warn!(lane = lane.adapter.name, "recording a reply: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
                    .map_err(|e| format!("returning a reply to the queue: {e}"))?;
            }
        }
    }
    Ok(())
}
