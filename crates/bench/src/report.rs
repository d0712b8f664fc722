//! Results: one row per case, printed as it completes, as a table or as JSON lines.

use crate::load::Measured;
use serde::Serialize;
use std::io::Write as _;

/// One measured case (the median over its repeats).
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub suite: &'static str,
    pub case: String,
    /// `switchyard` or the peer's name (`nats-jetstream`).
    pub system: &'static str,
    pub durability: String,
    pub payload_bytes: usize,
    pub appenders: usize,
    pub in_flight_per_appender: usize,
    /// Events per operation when an operation carries a batch (the `bus` suite's HTTP
    /// publishes); absent when every operation is one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_op: Option<usize>,
    /// Acknowledged events in the measured window (of the median repeat).
    pub events: u64,
    /// Length of the measured window (of the median repeat).
    pub seconds: f64,
    pub events_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// CPU cores busy during the window (bench process, plus the peer's server process).
    pub cpu_cores: f64,
    pub repeats: usize,
    /// Each repeat's events/s, in the order run (the first starts with a cold process).
    pub repeat_events_per_s: Vec<f64>,
}

/// What a case is, before it is measured.
#[derive(Clone, Debug)]
pub struct Case {
    pub suite: &'static str,
    pub case: String,
    pub system: &'static str,
    pub durability: String,
    pub payload_bytes: usize,
    pub appenders: usize,
    pub in_flight_per_appender: usize,
    pub events_per_op: Option<usize>,
}

impl CaseResult {
    /// The case's result over its repeats: the median repeat by throughput gives events and
    /// seconds; latencies and CPU are medians over repeats. `None` without any repeat.
    pub fn from_runs(case: Case, runs: &[Measured]) -> Option<CaseResult> {
        let eps = median(runs.iter().map(Measured::events_per_s).collect());
        let mid = runs.iter().min_by(|a, b| {
            (a.events_per_s() - eps)
                .abs()
                .total_cmp(&(b.events_per_s() - eps).abs())
        })?;
        Some(CaseResult {
            suite: case.suite,
            case: case.case,
            system: case.system,
            durability: case.durability,
            payload_bytes: case.payload_bytes,
            appenders: case.appenders,
            in_flight_per_appender: case.in_flight_per_appender,
            events_per_op: case.events_per_op,
            events: mid.events,
            seconds: mid.seconds,
            events_per_s: eps,
            p50_us: median(runs.iter().map(|m| m.quantile_us(0.5)).collect()),
            p99_us: median(runs.iter().map(|m| m.quantile_us(0.99)).collect()),
            max_us: median(runs.iter().map(Measured::max_us).collect()),
            cpu_cores: median(runs.iter().map(|m| m.cpu_cores).collect()),
            repeats: runs.len(),
            repeat_events_per_s: runs.iter().map(Measured::events_per_s).collect(),
        })
    }
}

/// Prints results as they come.
#[derive(Debug)]
pub struct Reporter {
    json: bool,
    header_done: bool,
}

impl Reporter {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            header_done: false,
        }
    }

    /// A line of context: on stdout above the table in human mode, on stderr in JSON mode
    /// (stdout then holds only one JSON object per line).
    pub fn note(&self, text: &str) -> std::io::Result<()> {
        if self.json {
            writeln!(std::io::stderr(), "{text}")
        } else {
            writeln!(std::io::stdout(), "{text}")
        }
    }

    /// Prints one case. Fails (stopping the suite) when stdout is gone, e.g. `| head`.
    pub fn row(&mut self, r: &CaseResult) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
            return writeln!(stdout, "{line}");
        }
        if !self.header_done {
            self.header_done = true;
            writeln!(
                stdout,
                "{:<15} {:<11} {:>7} {:>9} {:>14} {:>11} {:>11} {:>6}  each repeat, events/s",
                "system",
                "durability",
                "payload",
                "appenders",
                "events/s",
                "p50 µs",
                "p99 µs",
                "cpu"
            )?;
        }
        let us = |v: f64| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        writeln!(
            stdout,
            "{:<15} {:<11} {:>7} {:>9} {:>14} {:>11} {:>11} {:>6.2}  {}",
            r.system,
            r.durability,
            format!("{} B", r.payload_bytes),
            r.appenders,
            thousands(r.events_per_s),
            us(r.p50_us),
            us(r.p99_us),
            r.cpu_cores,
            r.repeat_events_per_s
                .iter()
                .map(|&e| thousands(e))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// `1234567.8` -> `1,234,568`.
pub fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A line of context: stdout in human mode, stderr with `--json` (stdout is for the rows).
pub fn say(json: bool, text: &str) {
    if json {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

/// How a figure stands against its target, in the summary lines.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// The median of `xs` (the lower middle for an even count); NaN when empty.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[(xs.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.0);
        assert!(median(vec![]).is_nan());
    }
}
