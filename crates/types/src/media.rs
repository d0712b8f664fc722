//! Media types (`Content-Type` values), as the HTTP API and push delivery read them.

/// The media type without its parameters, lower-cased:
/// `Application/JSON; charset=utf-8` -> `application/json`.
pub fn media_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether data of this media type is JSON: `application/json`, `text/json`, or any
/// `+json` suffix (`application/cloudevents+json`, `application/problem+json`, ...).
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = media_type_essence(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn essence_and_json() {
        assert_eq!(
            media_type_essence(" Application/JSON ; charset=utf-8"),
            "application/json"
        );
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("text/json; charset=utf-8"));
        assert!(is_json_media_type("application/vnd.acme+JSON"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/jsonx"));
        assert!(!is_json_media_type(""));
    }
}
