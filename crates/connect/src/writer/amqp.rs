//! The AMQP 0-9-1 writer (RabbitMQ, through lapin): each request is published to
//! `exchange` with its routing key (the request's target is `exchange/routing-key`), with
//! publisher confirms: an attempt succeeds only once the broker acknowledged the message.
//! Every message is published `mandatory`: one that no queue is bound to take is returned
//! by the broker (then acknowledged), and that return is an answer whose status is the
//! AMQP reply code (312, no route) and whose body the broker's reply text, so the
//! adapter's `classify` decides what it means (by default: unknown, a case; list 312 in
//! `classify.retry` to wait for a binding). It is never confirmed as delivered.
//! The connection is made at the first send and again after it breaks.

use super::{Sent, Writer, class};
use crate::adapter::Answer;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use switchyard_store::connect::OutboundRequest;
use tokio::sync::Mutex;

#[derive(Debug)]
pub struct AmqpWriter {
    url: String,
    persistent: bool,
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpWriter {
    pub fn new(url: String, persistent: bool) -> Self {
        Self {
            url,
            persistent,
            channel: Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<Channel, String> {
        let mut guard = self.channel.lock().await;
        if let Some((conn, ch)) = guard.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connecting to {}: {e}", redact(&self.url)))?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("enabling publisher confirms: {e}"))?;
        *guard = Some((conn, ch.clone()));
        Ok(ch)
    }

    async fn forget(&self) {
        *self.channel.lock().await = None;
    }
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[async_trait::async_trait]
impl Writer for AmqpWriter {
    async fn send(&self, request: &OutboundRequest) -> Sent {
        let (exchange, routing_key) = request
            .target
            .split_once('/')
            .unwrap_or(("", request.target.as_str()));
        let ch = match self.channel().await {
            Ok(ch) => ch,
            Err(message) => {
                return Sent::Failed {
                    class: class::CONNECT,
                    message,
                };
            }
        };
        let mut headers = FieldTable::default();
        for (k, v) in &request.headers {
            headers.insert(
                ShortString::from(k.as_str()),
                AMQPValue::LongString(LongString::from(v.as_str())),
            );
        }
        let mut props = BasicProperties::default()
            .with_content_type(ShortString::from(request.content_type.as_str()))
            .with_headers(headers);
        if self.persistent {
            props = props.with_delivery_mode(2);
        }
        let published = ch
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                request.body.as_bytes(),
                props,
            )
            .await;
        let confirm = match published {
            Ok(c) => c.await,
            Err(e) => Err(e),
        };
        match confirm {
            // Mandatory and routed nowhere: the broker returned it (the ack only says it
            // handled the return).
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                Sent::Answer(Answer {
                    status: Some(returned.reply_code),
                    headers: vec![(
                        "amqp-reply-code".to_owned(),
                        returned.reply_code.to_string(),
                    )],
                    body: format!(
                        "{} (exchange {exchange:?}, routing key {routing_key:?})",
                        returned.reply_text.as_str()
                    ),
                })
            }
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Sent::Answer(Answer {
                status: None,
                headers: Vec::new(),
                body: String::new(),
            }),
            Ok(Confirmation::Nack(None)) => Sent::Failed {
                class: class::NACK,
                message: format!("the broker refused the message for {exchange}/{routing_key}"),
            },
            Err(e) => {
                self.forget().await;
                Sent::Failed {
                    class: class::RESET,
                    message: format!("publishing: {e}"),
                }
            }
        }
    }
}
