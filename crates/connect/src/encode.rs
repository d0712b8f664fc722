//! Output encodings: what a mapping's JSON value becomes on the wire. Each is text; a
//! value the encoding cannot represent is an error that names the key, never a silent
//! truncation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a mapped value is encoded (`encoding = "json"`, or a table with `format`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "format", deny_unknown_fields)]
pub enum Encoding {
    /// The value as compact JSON.
    Json,
    /// Elements under `root` (default `message`): an object's keys become child elements,
    /// an array repeats its element, scalars become text.
    Xml {
        #[serde(default = "default_root")]
        root: String,
    },
    /// `application/x-www-form-urlencoded`: a flat object of scalars.
    Form,
    /// One row per object (the value is an object, or an array of objects), in `columns`'
    /// order, with a header row unless `header = false`.
    Csv {
        columns: Vec<String>,
        #[serde(default = "yes")]
        header: bool,
    },
    /// One line per object, each field at its fixed width (COBOL-style records).
    FixedWidth { fields: Vec<FixedField> },
}

fn default_root() -> String {
    "message".to_owned()
}

fn yes() -> bool {
    true
}

/// One field of a fixed-width record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FixedField {
    /// The key of the mapped object.
    pub name: String,
    /// Its width in characters, 1 to 4096.
    pub width: usize,
    /// `left` (text, the default) or `right` (numbers).
    #[serde(default)]
    pub align: Align,
    /// The padding character (default a space; `"0"` for zero-padded numbers).
    #[serde(default = "space")]
    pub pad: char,
}

fn space() -> char {
    ' '
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Align {
    #[default]
    Left,
    Right,
}

impl Encoding {
    /// The content type of the encoded body.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Xml { .. } => "application/xml",
            Self::Form => "application/x-www-form-urlencoded",
            Self::Csv { .. } => "text/csv",
            Self::FixedWidth { .. } => "text/plain",
        }
    }

    /// Checks the settings; the error names the bad key (relative to `encoding`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        match self {
            Self::Xml { root } if !xml_name(root) => Err((
                "root".into(),
                format!("{root:?} is not an XML element name"),
            )),
            Self::Csv { columns, .. } if columns.is_empty() => {
                Err(("columns".into(), "needs at least one column".into()))
            }
            Self::FixedWidth { fields } if fields.is_empty() => {
                Err(("fields".into(), "needs at least one field".into()))
            }
            Self::FixedWidth { fields } => {
                for (i, f) in fields.iter().enumerate() {
                    if f.width == 0 || f.width > 4096 {
                        return Err((
                            format!("fields[{i}].width"),
                            format!("must be 1 to 4096 (got {})", f.width),
                        ));
                    }
                    if f.pad.is_control() {
                        return Err((format!("fields[{i}].pad"), "must be printable".into()));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Encodes `value`.
    pub fn encode(&self, value: &Value) -> Result<String, String> {
        match self {
            Self::Json => Ok(value.to_string()),
            Self::Xml { root } => xml(root, value),
            Self::Form => form(value),
            Self::Csv { columns, header } => csv(columns, *header, value),
            Self::FixedWidth { fields } => fixed_width(fields, value),
        }
    }
}

/// A scalar as text: strings as they are, numbers and booleans as JSON writes them.
fn scalar(v: &Value, key: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        _ => Err(format!(
            "`{key}` is not a scalar (an object or array cannot go here)"
        )),
    }
}

fn rows(value: &Value) -> Result<Vec<&serde_json::Map<String, Value>>, String> {
    match value {
        Value::Object(o) => Ok(vec![o]),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_object()
                    .ok_or_else(|| format!("row [{i}] is not an object"))
            })
            .collect(),
        _ => Err("the mapping must produce an object or an array of objects".into()),
    }
}

fn xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.to_ascii_lowercase().starts_with("xml")
}

fn xml(root: &str, value: &Value) -> Result<String, String> {
    use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
    fn element(
        w: &mut quick_xml::Writer<Vec<u8>>,
        name: &str,
        v: &Value,
        path: &str,
    ) -> Result<(), String> {
        if !xml_name(name) {
            return Err(format!("`{path}`: {name:?} is not an XML element name"));
        }
        let io = |e: std::io::Error| format!("writing XML: {e}");
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    element(w, name, item, &format!("{path}[{i}]"))?;
                }
            }
            Value::Object(map) => {
                w.write_event(Event::Start(BytesStart::new(name)))
                    .map_err(io)?;
                for (k, child) in map {
                    element(w, k, child, &format!("{path}.{k}"))?;
                }
                w.write_event(Event::End(BytesEnd::new(name))).map_err(io)?;
            }
            Value::Null => {
                w.write_event(Event::Empty(BytesStart::new(name)))
                    .map_err(io)?;
            }
            other => {
                let text = scalar(other, path)?;
                w.write_event(Event::Start(BytesStart::new(name)))
                    .map_err(io)?;
                w.write_event(Event::Text(BytesText::new(&text)))
                    .map_err(io)?;
                w.write_event(Event::End(BytesEnd::new(name))).map_err(io)?;
            }
        }
        Ok(())
    }
    if value.is_array() {
        return Err("an XML document has one root: the mapping must not produce an array".into());
    }
    let mut w = quick_xml::Writer::new(Vec::new());
    element(&mut w, root, value, root)?;
    String::from_utf8(w.into_inner()).map_err(|e| format!("XML is not UTF-8: {e}"))
}

fn form(value: &Value) -> Result<String, String> {
    let Value::Object(map) = value else {
        return Err("a form needs the mapping to produce an object".into());
    };
    let pairs: Vec<(&str, String)> = map
        .iter()
        .map(|(k, v)| scalar(v, k).map(|s| (k.as_str(), s)))
        .collect::<Result<_, _>>()?;
    serde_urlencoded::to_string(pairs).map_err(|e| format!("form encoding: {e}"))
}

fn csv(columns: &[String], header: bool, value: &Value) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| format!("CSV: {e}");
    if header {
        w.write_record(columns).map_err(err)?;
    }
    for (i, row) in rows(value)?.into_iter().enumerate() {
        let mut record = Vec::with_capacity(columns.len());
        for c in columns {
            let v = row.get(c).unwrap_or(&Value::Null);
            record.push(scalar(v, &format!("[{i}].{c}"))?);
        }
        w.write_record(&record).map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| format!("CSV: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("CSV is not UTF-8: {e}"))
}

fn fixed_width(fields: &[FixedField], value: &Value) -> Result<String, String> {
    let mut out = String::new();
    for (i, row) in rows(value)?.into_iter().enumerate() {
        for f in fields {
            let v = row.get(&f.name).unwrap_or(&Value::Null);
            let text = scalar(v, &format!("[{i}].{}", f.name))?;
            let len = text.chars().count();
            if len > f.width {
                return Err(format!(
                    "`{}` is {len} characters, wider than its field ({}): {text:?}",
                    f.name, f.width
                ));
            }
            if text.chars().any(|c| c == '\n' || c == '\r') {
                return Err(format!("`{}` holds a line break", f.name));
            }
            let fill: String = std::iter::repeat_n(f.pad, f.width - len).collect();
            match f.align {
                Align::Left => {
                    out.push_str(&text);
                    out.push_str(&fill);
                }
                Align::Right => {
                    out.push_str(&fill);
                    out.push_str(&text);
                }
            }
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_encoding_writes_what_vendors_expect() {
        let v = json!({"item": "00123", "qty": 4, "note": "a<b & c"});
        assert_eq!(
            Encoding::Json.encode(&v).expect("json"),
            r#"{"item":"00123","note":"a<b & c","qty":4}"#
        );
        let x = Encoding::Xml {
            root: "order".into(),
        }
        .encode(&json!({"item": "1", "lines": [{"q": 1}, {"q": 2}], "note": "a<b"}))
        .expect("xml");
        assert_eq!(
            x,
            "<order><item>1</item><lines><q>1</q></lines><lines><q>2</q></lines><note>a&lt;b</note></order>"
        );
        assert_eq!(
            Encoding::Form.encode(&v).expect("form"),
            "item=00123&note=a%3Cb+%26+c&qty=4"
        );
        let c = Encoding::Csv {
            columns: vec!["item".into(), "qty".into()],
            header: true,
        };
        assert_eq!(
            c.encode(&json!([{"item": "a,b", "qty": 1}, {"item": "c", "qty": 2}]))
                .expect("csv"),
            "item,qty\n\"a,b\",1\nc,2\n"
        );
        let f = Encoding::FixedWidth {
            fields: vec![
                FixedField {
                    name: "item".into(),
                    width: 6,
                    align: Align::Right,
                    pad: '0',
                },
                FixedField {
                    name: "name".into(),
                    width: 5,
                    align: Align::Left,
                    pad: ' ',
                },
            ],
        };
        assert_eq!(
            f.encode(&json!({"item": 123, "name": "cake"}))
                .expect("fixed"),
            "000123cake \n"
        );
    }

    #[test]
    fn what_an_encoding_cannot_hold_is_an_error_naming_the_key() {
        let f = Encoding::FixedWidth {
            fields: vec![FixedField {
                name: "name".into(),
                width: 3,
                align: Align::Left,
                pad: ' ',
            }],
        };
        let e = f.encode(&json!({"name": "toolong"})).unwrap_err();
        assert!(e.contains("`name`") && e.contains("wider"), "{e}");
        let e = Encoding::Form.encode(&json!({"a": {"b": 1}})).unwrap_err();
        assert!(e.contains("`a`"), "{e}");
        let e = Encoding::Xml { root: "r".into() }
            .encode(&json!({"bad key": 1}))
            .unwrap_err();
        assert!(e.contains("bad key"), "{e}");
        let e = Encoding::Csv {
            columns: vec!["a".into()],
            header: false,
        }
        .encode(&json!(3))
        .unwrap_err();
        assert!(e.contains("object"), "{e}");
        assert!(Encoding::Xml { root: "1x".into() }.validate().is_err());
        assert!(
            Encoding::Csv {
                columns: vec![],
                header: true
            }
            .validate()
            .is_err()
        );
    }
}
