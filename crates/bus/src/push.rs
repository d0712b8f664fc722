//! One push attempt: a stored CloudEvent sent to a subscriber in the CloudEvents HTTP
//! binary mode, and what its answer means.
//!
//! - 2xx: delivered.
//! - 429 and 503: retry, no earlier than `Retry-After` (seconds or an HTTP date) if given.
//! - any other 4xx: the subscriber will never accept it: park at once.
//! - 5xx, a timeout, a connection error: retry with backoff.

use base64::Engine as _;
use serde_json::{Map, Value};
use std::time::Duration;

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again; not before `not_before` if the subscriber said so.
    Retry {
        error: String,
        not_before: Option<Duration>,
    },
    /// Give up on this event now.
    Reject {
        error: String,
    },
}

/// The longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Attributes sent as the body or as Content-Type rather than as `ce-` headers.
const NOT_HEADERS: [&str; 3] = ["data", "data_base64", "datacontenttype"];

/// Percent-encodes what an HTTP header value may not carry as is (CloudEvents HTTP binding:
/// space, `"`, `%` and anything outside printable ASCII).
fn header_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request for `event` (a stored structured-mode CloudEvent), or why it cannot be sent.
pub fn request(
    client: &reqwest::Client,
    endpoint: &str,
    event: &Map<String, Value>,
    subscription: &str,
    attempt: u32,
    timeout: Duration,
) -> Result<reqwest::RequestBuilder, String> {
    let mut r = client
        .post(endpoint)
        .timeout(timeout)
        .header("switchyard-subscription", subscription)
        .header("switchyard-attempt", attempt.to_string());
    for (name, value) in event {
        if NOT_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        r = r.header(format!("ce-{name}"), header_value(&text));
    }
    let content_type = event.get("datacontenttype").and_then(Value::as_str);
    let (body, default_type): (Vec<u8>, &str) = match (event.get("data_base64"), event.get("data"))
    {
        (Some(Value::String(b64)), _) => (
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("the stored event's data_base64 is not base64: {e}"))?,
            "application/octet-stream",
        ),
        (_, Some(Value::String(s)))
            if content_type.is_some_and(|ct| !switchyard_types::is_json_media_type(ct)) =>
        {
            (s.clone().into_bytes(), "text/plain")
        }
        (_, Some(data)) => (data.to_string().into_bytes(), "application/json"),
        (_, None) => (Vec::new(), "application/json"),
    };
    r = r.header("content-type", content_type.unwrap_or(default_type));
    Ok(r.body(body))
}

/// The request for several stored events in the CloudEvents batch mode: one JSON array of
/// structured-mode events; the answer counts for all of them.
pub fn batch_request(
    client: &reqwest::Client,
    endpoint: &str,
    events: &[Map<String, Value>],
    subscription: &str,
    attempt: u32,
    timeout: Duration,
) -> Result<reqwest::RequestBuilder, String> {
    let body = serde_json::to_vec(events).map_err(|e| format!("encoding the batch: {e}"))?;
    Ok(client
        .post(endpoint)
        .timeout(timeout)
        .header("switchyard-subscription", subscription)
        .header("switchyard-attempt", attempt.to_string())
        .header("content-type", "application/cloudevents-batch+json")
        .body(body))
}

/// A fault to act out on a push instead of (or before) sending it: the hook of
/// `switchyard chaos`, a development tool. The bus only asks [`PushFaults`]; what is faulty
/// is decided elsewhere (the gateway's fault table, connected by the CLI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// Waited before anything else (a delay of the push timeout or more is a timeout).
    pub delay: Duration,
    /// `None`: then pushed as usual. `Some(None)`: the subscriber does not answer.
    /// `Some(Some(status))`: it answers `status`.
    pub fail: Option<Option<u16>>,
    /// What to say in the delivery's last error.
    pub what: String,
}

/// Consulted before every push (see [`crate::Bus::set_push_faults`]).
pub trait PushFaults: Send + Sync + 'static {
    /// The fault a push to `endpoint` meets now, if any.
    fn before_push(&self, endpoint: &str) -> Option<InjectedFault>;
}

/// Acts out `fault`, then sends `request` if the fault lets it go.
pub async fn attempt_with_fault(
    fault: InjectedFault,
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Outcome {
    if fault.delay >= timeout {
        tokio::time::sleep(timeout).await;
        return Outcome::Retry {
            error: format!("the subscriber did not answer in time ({})", fault.what),
            not_before: None,
        };
    }
    tokio::time::sleep(fault.delay).await;
    match fault.fail {
        None => attempt(request).await,
        Some(None) => Outcome::Retry {
            error: format!("could not reach the subscriber ({})", fault.what),
            not_before: None,
        },
        Some(Some(status)) => classify(status, None, format!("HTTP {status} ({})", fault.what)),
    }
}

/// Sends `request` and classifies the answer.
pub async fn attempt(request: reqwest::RequestBuilder) -> Outcome {
    let resp = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Outcome::Retry {
                error: "the subscriber did not answer in time".into(),
                not_before: None,
            };
        }
        Err(e) => {
            return Outcome::Retry {
                error: format!("could not reach the subscriber: {e}"),
                not_before: None,
            };
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let snippet = body_snippet(resp).await;
    let error = format!("HTTP {}: {}", status.as_u16(), snippet.trim());
    classify(status.as_u16(), retry_after, error)
}

/// What a non-2xx answer means (see the module docs).
fn classify(status: u16, retry_after: Option<Duration>, error: String) -> Outcome {
    match status {
        429 | 503 => Outcome::Retry {
            error,
            not_before: retry_after,
        },
        400..=499 => Outcome::Reject { error },
        _ => Outcome::Retry {
            error,
            not_before: None,
        },
    }
}

/// The start of an error answer's body, for the delivery's `last-error`. At most
/// [`SNIPPET_BYTES`] are read: a subscriber that answers with an endless or huge body costs
/// no more memory than one that answers with a line.
async fn body_snippet(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < SNIPPET_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(SNIPPET_BYTES);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// How much of an error answer's body is kept.
const SNIPPET_BYTES: usize = 300;

/// `Retry-After`: delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at =
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
        let secs = (at - time::OffsetDateTime::now_utc())
            .whole_seconds()
            .max(0);
        Duration::from_secs(secs as u64)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_percent_encoded() {
        assert_eq!(header_value("plain-text_1.2"), "plain-text_1.2");
        assert_eq!(header_value("a b\"%é"), "a%20b%22%25%C3%A9");
    }

    #[test]
    fn retry_after_in_both_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
