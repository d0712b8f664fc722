//! Progress on stderr: an indicatif bar on a terminal, otherwise a plain line when a phase
//! starts, every few seconds while it runs, and when it ends (logs stay readable).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often plain mode prints a line while a phase runs.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Progress {
    terminal: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    bar: Option<ProgressBar>,
    phase: String,
    done: u64,
    total: u64,
    started: Option<Instant>,
    last_line: Option<Instant>,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A phase of `total` events begins (nothing is shown for an empty one).
    pub fn start(&self, phase: &str, total: u64) {
        let mut s = self.state();
        *s = State {
            phase: phase.to_string(),
            total,
            started: Some(Instant::now()),
            ..State::default()
        };
        if total == 0 {
            return;
        }
        if self.terminal {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {human_pos}/{human_len} events ({elapsed}, {eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(phase.to_string());
            s.bar = Some(bar);
        } else {
            eprintln!("{phase}: {total} events");
            s.last_line = Some(Instant::now());
        }
    }

    pub fn inc(&self, n: u64) {
        let mut s = self.state();
        s.done += n;
        if let Some(bar) = &s.bar {
            bar.inc(n);
        } else if s.total > 0 && s.last_line.is_some_and(|t| t.elapsed() >= PLAIN_EVERY) {
            eprintln!("{}: {}/{} events", s.phase, s.done, s.total);
            s.last_line = Some(Instant::now());
        }
    }

    /// The current phase has ended.
    pub fn finish(&self) {
        let mut s = self.state();
        if let Some(bar) = s.bar.take() {
            bar.finish_and_clear();
        } else if s.total > 0 {
            let secs = s.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            eprintln!("{}: {} events in {secs:.2}s", s.phase, s.done);
        }
        s.total = 0;
    }

    /// A phase without a count (waiting for subscriptions): a spinner with `message` on a
    /// terminal, a line every few seconds otherwise.
    pub fn status(&self, message: &str) {
        let mut s = self.state();
        if self.terminal {
            let bar = s.bar.get_or_insert_with(|| {
                let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                b.enable_steady_tick(Duration::from_millis(100));
                b
            });
            bar.set_message(message.to_string());
        } else if s.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            eprintln!("{message}");
            s.last_line = Some(Instant::now());
        }
    }

    /// Ends a [`Progress::status`] phase.
    pub fn clear(&self) {
        let mut s = self.state();
        if let Some(bar) = s.bar.take() {
            bar.finish_and_clear();
        }
        s.last_line = None;
    }
}
