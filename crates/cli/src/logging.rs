//! What the platform's crates report through `tracing` (a subscription that cannot read its
//! cursors, a gateway whose route table failed to load, an adapter's lane that cannot reach
//! the store): one line each on stderr. `SWITCHYARD_LOG` chooses what is shown: a level, and
//! levels by target, as `RUST_LOG` gives them (`info`, `warn,switchyard_gateway=info`,
//! `off`); without it, warnings and errors. A release build carries events up to `info`
//! (`tracing`'s `release_max_level_info`, set in the workspace: see ARCHITECTURE.md, Logs).
//!
//! The subscriber is written here rather than taken from `tracing-subscriber`: the platform
//! only emits events (no spans it relies on), and that crate's registry and formatter cost
//! the dev runner's idle memory, which is mostly its code.

use std::fmt::Write as _;
use std::io::Write as _;
use switchyard_types::Timestamp;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

pub const VAR: &str = "SWITCHYARD_LOG";
const DEFAULT: &str = "warn";

/// Which events are shown: the level of the longest target prefix that matches, else the
/// default level.
#[derive(Debug, PartialEq)]
pub struct Filter {
    default: LevelFilter,
    /// (target prefix, level), longest prefix first.
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(prefix, _)| {
                target
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |(_, level)| *level)
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.level_for(meta.target()) >= *meta.level()
    }

    fn max_level(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, std::cmp::max)
    }
}

fn level(text: &str) -> Option<LevelFilter> {
    text.parse().ok()
}

/// The filter `value` of [`VAR`] gives (`None`: unset), or what is wrong with it.
pub fn filter(value: Option<&str>) -> Result<Filter, String> {
    let value = value.unwrap_or(DEFAULT);
    let bad = |why: String| {
        format!("{VAR}={value:?}: {why} (for example: info, or warn,switchyard_gateway=info)")
    };
    let mut filter = Filter {
        default: LevelFilter::ERROR,
        targets: Vec::new(),
    };
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.split_once('=') {
            None => match level(directive) {
                Some(l) => filter.default = l,
                // A bare target: everything it logs.
                None if is_target(directive) => filter
                    .targets
                    .push((directive.to_string(), LevelFilter::TRACE)),
                None => {
                    return Err(bad(format!(
                        "{directive:?} is neither a level nor a target"
                    )));
                }
            },
            Some((target, l)) => {
                if !is_target(target) {
                    return Err(bad(format!(
                        "{target:?} is not a target (a Rust module path)"
                    )));
                }
                let Some(l) = level(l) else {
                    return Err(bad(format!(
                        "{l:?} is not a level (off, error, warn, info, debug, trace)"
                    )));
                };
                filter.targets.push((target.to_string(), l));
            }
        }
    }
    filter
        .targets
        .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    Ok(filter)
}

fn is_target(text: &str) -> bool {
    !text.is_empty()
        && text.split("::").all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
}

/// Sends `tracing`'s events to stderr, filtered by [`VAR`]. An unreadable value is an error:
/// a filter that silently showed nothing would hide what it was set to show.
pub fn init() -> Result<(), String> {
    let value = match std::env::var(VAR) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return Err(format!("{VAR} is not UTF-8")),
    };
    let filter = filter(value.as_deref())?;
    tracing::subscriber::set_global_default(Lines {
        filter,
        write: to_stderr,
    })
    .map_err(|e| format!("setting up the log: {e}"))
}

/// A closed stderr must not stop the platform.
fn to_stderr(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The subscriber: events as lines, spans only counted (nothing here reads them).
struct Lines {
    filter: Filter,
    /// Where a line goes (stderr; a test keeps them).
    write: fn(&str),
}

impl Subscriber for Lines {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.filter.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.filter.enabled(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.filter.max_level())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        (self.write)(&format_line(Timestamp::now(), event));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// `2026-12-07T22:44:15.447Z  WARN switchyard_gateway::auth: message key=value`: one line,
/// whatever the message carries. Messages quote what peers and clients sent (a vendor's
/// error, a URL), and a line break in one must not start a line that looks like the
/// platform's own.
fn format_line(at: Timestamp, event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut line = format!(
        "{} {:>5} {}: ",
        crate::args::format_timestamp(at),
        meta.level(),
        meta.target(),
    );
    for c in fields.message.chars() {
        if c.is_control() {
            line.extend(c.escape_debug());
        } else {
            line.push(c);
        }
    }
    line.push_str(&fields.rest);
    line.push('\n');
    line
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LevelFilter, Lines, filter};

    thread_local! {
        static WRITTEN: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[test]
    fn an_event_is_one_line_whatever_its_message_carries() {
        let lines = Lines {
            filter: filter(None).expect("the default"),
            write: |l| WRITTEN.with(|w| w.borrow_mut().push(l.to_string())),
        };
        let reply = "bad gateway\n2026-12-07T00:00:00.000Z ERROR forged: line\r\u{1b}[31m";
        tracing::subscriber::with_default(lines, || {
            tracing::warn!(status = 502, "the vendor answered: {reply}");
            tracing::info!("below the default level");
        });
        let written = WRITTEN.with(|w| w.borrow().clone());
        assert_eq!(written.len(), 1, "{written:?}");
        let line = &written[0];
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with(" status=502\n"), "{line:?}");
        assert!(
            line.contains(
                "WARN switchyard::logging::tests: the vendor answered: bad gateway\\n2026-12-07T00:00:00.000Z ERROR forged: line\\r\\u{1b}[31m"
            ),
            "{line:?}"
        );
    }

    #[test]
    fn a_filter_is_read_or_refused_with_the_variable_named() {
        let f = filter(None).expect("the default");
        assert_eq!(f.level_for("switchyard_bus::dispatch"), LevelFilter::WARN);
        let f = filter(Some(
            "info, switchyard_bus=debug,switchyard_bus::lease=off,sqlx",
        ))
        .expect("levels by target");
        assert_eq!(f.level_for("switchyard_gateway"), LevelFilter::INFO);
        assert_eq!(f.level_for("switchyard_bus::dispatch"), LevelFilter::DEBUG);
        assert_eq!(f.level_for("switchyard_bus::lease"), LevelFilter::OFF);
        // A prefix counts only up to a module boundary.
        assert_eq!(f.level_for("switchyard_bus_extra"), LevelFilter::INFO);
        assert_eq!(f.level_for("sqlx::query"), LevelFilter::TRACE);
        assert_eq!(f.max_level(), LevelFilter::TRACE);
        assert_eq!(filter(Some("off")).unwrap().max_level(), LevelFilter::OFF);
        for (bad, says) in [
            ("switchyard_bus=loud", "\"loud\" is not a level"),
            ("warn,=debug", "\"\" is not a target"),
            ("info,a=b=c", "\"b=c\" is not a level"),
            ("warn,switchyard bus", "neither a level nor a target"),
        ] {
            let e = filter(Some(bad)).expect_err(bad);
            assert!(e.starts_with(&format!("SWITCHYARD_LOG={bad:?}: ")), "{e}");
            assert!(e.contains(says), "{e}");
        }
    }
}
