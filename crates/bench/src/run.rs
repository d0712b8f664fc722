//! The options every suite shares (duration, repeats, `--quick`, `--json`) and the timing
//! they give.

use crate::load::Load;
use anyhow::Result;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Short fixed durations: one repeat of 1 s per case after a 0.25 s warm-up; the whole
    /// suite, peers included, finishes within 60 s.
    #[arg(long)]
    pub quick: bool,

    /// One JSON object per case on stdout (notes go to stderr).
    #[arg(long)]
    pub json: bool,

    /// Seconds measured per repeat [default: 1 with --quick, else 3].
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<f64>,

    /// Warm-up seconds before each measurement; the warm-up also lasts until every in-flight
    /// slot has been acknowledged once [default: 0.25 with --quick, else 1].
    #[arg(long, value_name = "SECONDS")]
    pub warmup: Option<f64>,

    /// Repeats per case; the median is reported [default: 1 with --quick, else 3].
    #[arg(long, value_name = "N")]
    pub repeats: Option<usize>,
}

/// How each case runs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub load: Load,
    pub repeats: usize,
    /// Start no case after this instant (the --quick time budget).
    pub start_by: Option<Instant>,
}

impl RunArgs {
    /// The timing of a suite whose cases run `appenders` x `in_flight`; with --quick no case
    /// starts after `quick_budget`.
    pub fn timing(
        &self,
        appenders: usize,
        in_flight: usize,
        quick_budget: Duration,
    ) -> Result<Timing> {
        let secs = |v: Option<f64>, quick: f64, full: f64, name: &str| -> Result<Duration> {
            let s = v.unwrap_or(if self.quick { quick } else { full });
            anyhow::ensure!(
                s.is_finite() && s >= 0.0,
                "{name} must be a non-negative number of seconds"
            );
            Ok(Duration::from_secs_f64(s))
        };
        let measure = secs(self.seconds, 1.0, 3.0, "--seconds")?;
        anyhow::ensure!(!measure.is_zero(), "--seconds must be more than 0");
        let warmup = secs(self.warmup, 0.25, 1.0, "--warmup")?;
        let repeats = self.repeats.unwrap_or(if self.quick { 1 } else { 3 });
        anyhow::ensure!(repeats >= 1, "--repeats must be at least 1");
        let slack = Duration::from_secs(if self.quick { 6 } else { 30 });
        Ok(Timing {
            load: Load {
                appenders,
                in_flight,
                warmup,
                measure,
                max_warmup: warmup + slack,
                max_measure: measure + slack,
                drain: true,
            },
            repeats,
            start_by: self.quick.then(|| Instant::now() + quick_budget),
        })
    }
}
