//! One line per thing a service did, behind its name (`payments │ ...`), as the dev runner
//! shows the lines of services that run as processes of their own.

use std::io::Write as _;
use std::sync::Arc;

/// Where a service's lines go: stdout, whole lines, behind a prefix. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Log {
    prefix: Arc<str>,
}

impl Log {
    /// Lines behind `prefix` (for example `"payments │ "`).
    pub fn new(prefix: impl Into<Arc<str>>) -> Self {
        Log {
            prefix: prefix.into(),
        }
    }

    /// Lines behind `name │ `.
    pub fn named(name: &str) -> Self {
        Log::new(format!("{name} │ "))
    }

    pub fn line(&self, text: impl std::fmt::Display) {
        // A closed stdout must not stop a service.
        let _ = writeln!(std::io::stdout().lock(), "{}{text}", self.prefix);
    }
}
