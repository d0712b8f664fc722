//! JSON Schemas per event type: set with the topic (`PUT /v1/topics/{topic}` with a
//! `schemas` object), kept in the store, compiled once and cached; a published event whose
//! type has a schema must carry JSON `data` that validates, or the request gets 422
//! `schema-violation` naming the JSON pointer and the failed rule, and appends nothing.
//! Schemas never make the server fetch anything (remote and file `$ref`s are refused).

use crate::cloudevents::Event;
use crate::problem::Problem;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use switchyard_store::{EventSchemas, Store};

/// Compiled validators by event type, for one topic.
pub(crate) type Compiled = HashMap<String, jsonschema::Validator>;

#[derive(Default)]
pub(crate) struct Schemas {
    cache: RwLock<HashMap<String, Arc<Compiled>>>,
}

/// Compiles every schema; the first that does not compile is a 400 naming its type.
pub(crate) fn compile(schemas: &EventSchemas) -> Result<Compiled, Problem> {
    let mut out = Compiled::new();
    for (event_type, schema) in schemas {
        let v = jsonschema::validator_for(schema).map_err(|e| {
            Problem::bad_request(
                "invalid-schema",
                format!("the schema for `{event_type}` does not compile: {e}"),
            )
            .at(format!("/schemas/{event_type}"))
        })?;
        out.insert(event_type.clone(), v);
    }
    Ok(out)
}

impl Schemas {
    pub(crate) async fn for_topic(
        &self,
        store: &dyn Store,
        topic: &str,
    ) -> Result<Arc<Compiled>, Problem> {
        if let Some(c) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return Ok(c.clone());
        }
        let compiled = Arc::new(compile(&store.schemas(topic).await?)?);
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string(), compiled.clone());
        Ok(compiled)
    }

    pub(crate) fn forget(&self, topic: &str) {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
    }
}

/// Checks every event that has a schema; `batch` puts the event's index in the pointer.
pub(crate) fn check(compiled: &Compiled, events: &[Event], batch: bool) -> Result<(), Problem> {
    if compiled.is_empty() {
        return Ok(());
    }
    for (i, e) in events.iter().enumerate() {
        let Some(event_type) = e.0.get("type").and_then(|t| t.as_str()) else {
            continue;
        };
        let Some(validator) = compiled.get(event_type) else {
            continue;
        };
        let prefix = if batch {
            format!("/{i}")
        } else {
            String::new()
        };
        let violation = |detail: String, pointer: String| {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "schema-violation", detail).at(pointer)
        };
        let Some(data) = e.0.get("data") else {
            return Err(violation(
                format!("events of type `{event_type}` have a schema: their data must be JSON"),
                format!("{prefix}/data"),
            ));
        };
        if let Some(err) = validator.iter_errors(data).next() {
            return Err(violation(
                format!(
                    "event `{}` of type `{event_type}`: {err} (schema rule {})",
                    e.id(),
                    err.schema_path()
                ),
                format!("{prefix}/data{}", err.instance_path()),
            ));
        }
    }
    Ok(())
}
