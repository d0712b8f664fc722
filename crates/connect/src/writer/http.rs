//! The HTTP writer: one request per attempt (method, URL, headers and body as mapped),
//! through a pooled client with the adapter's timeout. Any response is an answer; its
//! body is read up to [`MAX_BODY_LEN`](super::MAX_BODY_LEN) bytes.

use super::{Sent, Writer, class};
use crate::adapter::Answer;
use std::time::Duration;
use switchyard_store::connect::{MAX_BODY_LEN, OutboundRequest};

#[derive(Debug)]
pub struct HttpWriter {
    client: reqwest::Client,
    authorization: Option<String>,
}

impl HttpWriter {
    pub fn new(timeout: Duration, authorization: Option<String>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            client,
            authorization,
        })
    }
}

fn failure(e: &reqwest::Error) -> Sent {
    let class = if e.is_timeout() {
        class::TIMEOUT
    } else if e.is_connect() {
        class::CONNECT
    } else if e.is_body() || e.is_request() {
        class::RESET
    } else {
        class::PROTOCOL
    };
    // The whole chain: reqwest's own message alone is "error sending request".
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Sent::Failed { class, message }
}

#[async_trait::async_trait]
impl Writer for HttpWriter {
    async fn send(&self, request: &OutboundRequest) -> Sent {
        let method = request
            .method
            .as_deref()
            .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(reqwest::Method::POST);
        let mut builder = self
            .client
            .request(method, &request.target)
            .header(reqwest::header::CONTENT_TYPE, &request.content_type)
            .body(request.body.clone());
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        if let Some(a) = &self.authorization {
            builder = builder.header(reqwest::header::AUTHORIZATION, a);
        }
        let mut resp = match builder.send().await {
            Ok(r) => r,
            Err(e) => return failure(&e),
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY_LEN.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= MAX_BODY_LEN {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return failure(&e),
            }
        }
        Sent::Answer(Answer {
            status: Some(status),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
