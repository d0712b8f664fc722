//! `POST /events`: the push endpoint a subscription delivers to, in the CloudEvents HTTP
//! binary mode (`ce-*` headers, the data as the body), the structured mode or the batch mode.
//!
//! Answers, as the platform's subscriptions read them: 200 handled (or handled before);
//! 400 an event that is not valid, of a type the service has no handler for, or rejected by
//! its handler (the subscription parks it); 503 with `Retry-After` for "not now"; 500 for a
//! failure worth retrying. A batch is handled in order and answered for the first event that
//! did not go through (the ones before it are in the inbox: their redelivery changes nothing).

use crate::consume::{Handlers, Outcome, process};
use crate::context::Handle;
use crate::db::Backend;
use crate::error::{Error, HandlerError};
use crate::event::CloudEvent;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};

pub(crate) struct PushState<DB: Backend> {
    pub handle: Handle<DB>,
    pub handlers: Handlers<DB>,
}

impl<DB: Backend> Clone for PushState<DB> {
    fn clone(&self) -> Self {
        PushState {
            handle: self.handle.clone(),
            handlers: self.handlers.clone(),
        }
    }
}

fn problem(status: StatusCode, code: &str, detail: &str, pointer: Option<&str>) -> Response {
    let mut body = json!({
        "type": format!("https://switchyard.dev/problems/{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    });
    if let Some(p) = pointer {
        body["pointer"] = p.into();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn invalid(e: Error, at: &str) -> Response {
    match e {
        Error::InvalidEvent { field, detail } => problem(
            StatusCode::BAD_REQUEST,
            "invalid-event",
            &format!("{field}: {detail}"),
            Some(&format!("{at}/{field}")),
        ),
        other => problem(
            StatusCode::BAD_REQUEST,
            "invalid-event",
            &other.to_string(),
            None,
        ),
    }
}

pub(crate) async fn handle<DB: Backend>(
    axum::extract::State(s): axum::extract::State<PushState<DB>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = switchyard_types::media_type_essence(ct);
    let events: Vec<CloudEvent> = if essence == "application/cloudevents-batch+json" {
        let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&body) else {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-batch",
                "a batch is a JSON array of structured-mode events",
                None,
            );
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.into_iter().enumerate() {
            match CloudEvent::from_json(v) {
                Ok(e) => out.push(e),
                Err(e) => return invalid(e, &format!("/{i}")),
            }
        }
        out
    } else if essence == "application/cloudevents+json" {
        match serde_json::from_slice::<Value>(&body)
            .map_err(|e| Error::invalid("/", format!("the body is not JSON: {e}")))
            .and_then(CloudEvent::from_json)
        {
            Ok(e) => vec![e],
            Err(e) => return invalid(e, ""),
        }
    } else {
        match binary(&headers, &body) {
            Ok(e) => vec![e],
            Err(e) => return invalid(e, ""),
        }
    };
    let (mut handled, mut duplicates) = (0, 0);
    for event in events {
        let label = format!("{} {}", event.ty(), event.id());
        match process(&s.handle, &s.handlers, None, event, None).await {
            Outcome::Handled => handled += 1,
            Outcome::Duplicate => duplicates += 1,
            Outcome::Unhandled => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "unhandled-type",
                    &format!(
                        "{label}: service {} has no handler for this type",
                        s.handle.name()
                    ),
                    Some("type"),
                );
            }
            Outcome::Failed(f) => {
                s.handle.log().line(format_args!("{label}: {f}"));
                return match f {
                    HandlerError::Reject(why) => {
                        problem(StatusCode::BAD_REQUEST, "rejected", &why, None)
                    }
                    HandlerError::Later { after, reason } => {
                        let mut r =
                            problem(StatusCode::SERVICE_UNAVAILABLE, "later", &reason, None);
                        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                        if let Ok(v) = secs.max(1).to_string().parse() {
                            r.headers_mut().insert(header::RETRY_AFTER, v);
                        }
                        r
                    }
                    HandlerError::Retry(why) => {
                        problem(StatusCode::INTERNAL_SERVER_ERROR, "failed", &why, None)
                    }
                };
            }
        }
    }
    (
        StatusCode::OK,
        axum::Json(json!({ "handled": handled, "duplicates": duplicates })),
    )
        .into_response()
}

/// The binary mode: attributes from `ce-*` headers (percent-decoded), data from the body as
/// its Content-Type says (JSON, text, or bytes as `data_base64`).
fn binary(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, Error> {
    let mut m = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let raw = value
            .to_str()
            .map_err(|_| Error::invalid(attr, "the header is not visible ASCII"))?;
        let text = percent_decode(raw)
            .ok_or_else(|| Error::invalid(attr, "bad percent-encoding or not UTF-8"))?;
        // Extensions the platform adds are numbers where it can: keep `partition` one.
        let v = match (attr, text.parse::<u64>()) {
            ("partition", Ok(n)) => Value::from(n),
            _ => Value::from(text),
        };
        m.insert(attr.to_string(), v);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(ct) = &ct {
        m.insert("datacontenttype".into(), ct.clone().into());
    }
    if !body.is_empty() {
        let ct = ct.as_deref().unwrap_or("application/json");
        if switchyard_types::is_json_media_type(ct) {
            let data: Value = serde_json::from_slice(body)
                .map_err(|e| Error::invalid("data", format!("declared {ct} but not JSON: {e}")))?;
            m.insert("data".into(), data);
        } else if let (true, Ok(text)) = (ct.starts_with("text/"), std::str::from_utf8(body)) {
            m.insert("data".into(), text.into());
        } else {
            m.insert(
                "data_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into(),
            );
        }
    }
    CloudEvent::from_map(m)
}

/// Decodes `%XX`; `None` on a malformed escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = (*b.get(i + 1)? as char).to_digit(16)?;
            let lo = (*b.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode_and_bad_ones_are_refused() {
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("a%2").as_deref(), None);
        assert_eq!(percent_decode("%zz").as_deref(), None);
        assert_eq!(percent_decode("%FF").as_deref(), None);
    }

    #[test]
    fn binary_mode_names_the_bad_header() {
        let mut h = HeaderMap::new();
        h.insert("ce-specversion", "1.0".parse().expect("header"));
        h.insert("ce-id", "e1".parse().expect("header"));
        h.insert("ce-source", "/x".parse().expect("header"));
        h.insert("ce-type", "t".parse().expect("header"));
        h.insert("content-type", "application/json".parse().expect("header"));
        let e = binary(&h, b"{\"a\":1}").expect("valid");
        assert_eq!(e.data(), Some(&json!({"a": 1})));
        match binary(&h, b"{nope") {
            Err(Error::InvalidEvent { field, .. }) => assert_eq!(field, "data"),
            other => panic!("{other:?}"),
        }
        h.remove("ce-type");
        match binary(&h, b"") {
            Err(Error::InvalidEvent { field, .. }) => assert_eq!(field, "type"),
            other => panic!("{other:?}"),
        }
    }
}
