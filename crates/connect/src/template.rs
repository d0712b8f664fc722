//! String templates with jq placeholders: `http://vendor/orders/{{ .data.sku }}`. Each
//! placeholder is a jq program over the event whose one output is put in (strings as they
//! are, other values as JSON). What a placeholder puts in comes from event data, so it is
//! escaped for where it goes: percent-encoded in URLs, and refused in headers when it holds
//! a line break; file names are checked by the file writer.

use crate::jq::{Globals, Program};
use serde_json::Value;

/// Where a template's output goes, which decides how placeholder values are escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// Percent-encode everything but unreserved characters (RFC 3986).
    Url,
    /// As is; a line break is an error (header injection).
    Header,
    /// As is (routing keys, file names: the writer checks the result).
    None,
}

#[derive(Debug)]
enum Part {
    Literal(String),
    Expr(Program),
}

/// A compiled template.
#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
    escape: Escape,
}

impl Template {
    /// Compiles `text`; the error names the placeholder that does not compile.
    pub fn compile(text: &str, escape: Escape) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("a `{{{{` at byte {start} is not closed by `}}}}`"))?;
            let code = after[..end].trim();
            if code.is_empty() {
                return Err("an empty placeholder `{{ }}`".to_owned());
            }
            let program = Program::compile(code)
                .map_err(|e| format!("placeholder `{{{{ {code} }}}}`: {e}"))?;
            parts.push(Part::Expr(program));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts, escape })
    }

    /// Whether the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Renders the template for `input`.
    pub fn render(&self, input: &Value, globals: Globals<'_>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Expr(p) => {
                    let v = p
                        .one(input, globals)
                        .map_err(|e| format!("placeholder `{{{{ {} }}}}`: {e}", p.code()))?;
                    let text = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    match self.escape {
                        Escape::Url => out.push_str(&percent_encode(&text)),
                        Escape::Header if text.contains(['\r', '\n']) => {
                            return Err(format!(
                                "placeholder `{{{{ {} }}}}` put a line break into a header",
                                p.code()
                            ));
                        }
                        Escape::Header | Escape::None => out.push_str(&text),
                    }
                }
            }
        }
        Ok(out)
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_filled_and_escaped() {
        let t = Template::compile(
            "http://v/orders/{{ .data.sku }}?c={{$correlation}}",
            Escape::Url,
        )
        .expect("compiles");
        let g = Globals {
            correlation: Some("c 1"),
            adapter: "a",
        };
        assert_eq!(
            t.render(&json!({"data": {"sku": "../x y"}}), g)
                .expect("renders"),
            "http://v/orders/..%2Fx%20y?c=c%201"
        );
        let h = Template::compile("{{ .data.v }}", Escape::Header).expect("compiles");
        assert!(h.render(&json!({"data": {"v": "a\r\nX: y"}}), g).is_err());
        assert_eq!(
            h.render(&json!({"data": {"v": 5}}), g).expect("renders"),
            "5"
        );
        assert!(Template::compile("{{ .a ", Escape::None).is_err());
        assert!(Template::compile("{{ }}", Escape::None).is_err());
        assert!(
            Template::compile("plain", Escape::None)
                .expect("compiles")
                .is_literal()
        );
    }
}
