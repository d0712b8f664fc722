//! RFC 9457 problem details: every error the API returns is `application/problem+json` with
//! a stable `code` that clients can match on (the `title` and `detail` are for people).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_journal::Error as JournalError;

/// An API error: the HTTP status, a stable code, and a detail that names the bad part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// A JSON pointer or attribute name the problem is about, when there is one.
    pub pointer: Option<String>,
    /// Extra members (for example `actual-offset` on a conflict).
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pointer: Option<&'a str>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            pointer: None,
            extra: Vec::new(),
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    pub fn with(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.extra.push((name, value));
        self
    }

    pub fn not_found(what: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} `{name}` not found"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: format!("https://switchyard.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            pointer: self.pointer.as_deref(),
            extra: self
                .extra
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (self.status, bytes).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

impl From<JournalError> for Problem {
    fn from(e: JournalError) -> Self {
        use JournalError as E;
        let detail = e.to_string();
        match e {
            E::TopicNotFound(t) => {
                Self::not_found("topic", t.as_str()).with_code("topic-not-found")
            }
            E::TopicExists { .. } => Self::new(StatusCode::CONFLICT, "topic-exists", detail),
            E::InvalidTopicName(_) => Self::bad_request("invalid-topic-name", detail),
            E::InvalidConfig(c) => Self::bad_request("invalid-topic-config", detail).at(c.field),
            E::PartitionOutOfRange { .. } => Self::bad_request("partition-out-of-range", detail),
            E::InvalidRecord { .. } => Self::bad_request("invalid-event", detail),
            E::Conflict { actual, .. } => {
                Self::new(StatusCode::CONFLICT, "offset-conflict", detail).with(
                    "actual-offset",
                    actual.map_or(serde_json::Value::Null, |o| o.to_string().into()),
                )
            }
            E::Corrupt { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "journal-corrupt", detail)
            }
            E::Closed => Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting-down", detail),
            E::Io { .. } | E::Failed { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage-unavailable",
                detail,
            ),
            E::Locked { .. } => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail),
            E::Unavailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal-unavailable",
                detail,
            ),
        }
    }
}

impl Problem {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}
