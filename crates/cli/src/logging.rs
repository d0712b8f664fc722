//! What the platform's crates report through `tracing` (a subscription that cannot read its
//! cursors, a gateway whose route table failed to load, an adapter's lane that cannot reach
//! the store): one line each on stderr. `SWITCHYARD_LOG` chooses what is shown, in the
//! filter syntax `RUST_LOG` uses for `tracing` (`info`, `warn,switchyard_bus=debug`, `off`);
//! without it, warnings and errors.

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

pub const VAR: &str = "SWITCHYARD_LOG";
const DEFAULT: &str = "warn";

/// The filter `value` of [`VAR`] gives (`None`: unset), or what is wrong with it.
pub fn filter(value: Option<&str>) -> Result<EnvFilter, String> {
    let Some(value) = value else {
        return Ok(EnvFilter::new(DEFAULT));
    };
    EnvFilter::builder().parse(value).map_err(|e| {
        format!("{VAR}={value:?}: {e} (for example: info, or warn,switchyard_bus=debug)")
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| format!("setting up the log: {e}"))
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn a_filter_is_read_or_refused_with_the_variable_named() {
        for good in [
            None,
            Some("info"),
            Some("warn,switchyard_bus=debug"),
            Some("off"),
        ] {
            assert!(filter(good).is_ok(), "{good:?}");
        }
        for bad in [
            "switchyard_bus=loud",
            "=warn",
            "warn,switchyard_bus=verbose",
        ] {
            let e = filter(Some(bad)).expect_err(bad);
            assert!(e.starts_with("SWITCHYARD_LOG="), "{e}");
        }
    }
}
