//! `switchyard journal ...`: work with an embedded journal directory.

use crate::Exit;
use crate::args::{
    From, format_timestamp, human_bytes, human_ms, parse_duration, parse_from, parse_header,
    parse_size,
};
use crate::output::record_json;
use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use clap::{Args, Subcommand};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_journal::file::{self, FileJournal, JournalReport, VerifyReport};
use switchyard_journal::{
    Durability, Error as JournalError, Journal, Offset, Partition, PartitionChoice, ReadLimits,
    Record, Retention, TopicConfig, TopicInfo, TopicName,
};
use tokio::sync::mpsc;

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Show topics, partitions, offsets, segments and sizes.
    ///
    /// Read-only: opens no lock and changes nothing, so it is safe on a journal that a
    /// running process has open.
    Inspect(InspectArgs),

    /// Check every record's CRC; exit 1 if any corruption is found.
    ///
    /// Reports each corrupt spot with its topic, partition, offset, file and byte position.
    /// Exit code 0 when clean, 1 when corruption is found, 2 on a usage or I/O error.
    /// Read-only and safe on a live journal. A torn tail of an active segment (bytes of an
    /// append that was never acknowledged, left by a crash) is noted, not counted as
    /// corruption: the next open truncates it.
    Verify(VerifyArgs),

    /// Create a topic.
    ///
    /// Creating an existing topic with the same settings succeeds and changes nothing; with
    /// different settings it fails.
    #[command(name = "create-topic")]
    CreateTopic(CreateTopicArgs),

    /// Append records to a topic and print each one's partition and offset.
    ///
    /// With PAYLOAD, appends one record. Without it, appends one record per non-empty line
    /// of standard input (until end of input), in batches of what has arrived (at most
    /// --batch-size; each batch to one partition, atomically). Each append returns once the
    /// topic's durability is met.
    Append(AppendArgs),

    /// Print records as JSON lines; --follow to keep waiting for new ones.
    ///
    /// Each line holds topic, partition, offset, timestamp, timestamp_ms, id, key, headers
    /// and payload (bytes that are not UTF-8 as key_base64, headers_base64, payload_base64).
    /// Without --partition, reads every partition (one after another; interleaved with
    /// --follow). --follow keeps printing new records as they are appended until Ctrl-C.
    Read(ReadArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The journal directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The journal directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Print the report as one JSON object (problems, torn tails, counts).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct CreateTopicArgs {
    /// The journal directory (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The topic name: letters, digits, '.', '_', '-'; the major version by convention in
    /// the name (orders.v1).
    #[arg(value_name = "TOPIC")]
    topic: String,
    /// Number of partitions (1..=1024). Records with the same key go to the same partition.
    #[arg(long, value_name = "N", default_value_t = 1)]
    partitions: u32,
    /// When appends are acknowledged: `always` (after fdatasync), `os` (once written to the
    /// OS), or `interval(<N>ms)` (OS, plus a background sync every N ms).
    #[arg(long, value_name = "DURABILITY", default_value = "always")]
    durability: Durability,
    /// Roll to a new segment file at this size (4KiB..=1GiB), e.g. 64MiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    segment_bytes: u64,
    /// Remove sealed segments whose newest record is older than this, e.g. 7d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retention_max_age: Option<Duration>,
    /// Remove the oldest sealed segments while a partition is larger than this, e.g. 10GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    retention_max_bytes: Option<u64>,
    /// How long a record id is remembered for dedup (0 disables dedup; at most 7d).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    dedup_window: Duration,
    /// One sparse-index entry per this many bytes of log (64..=1MiB).
    #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = parse_size)]
    index_interval_bytes: u64,
    /// Print the topic's settings and extent as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// The journal directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The topic to append to.
    #[arg(value_name = "TOPIC")]
    topic: String,
    /// The record's payload. Without it, each non-empty line of standard input is a record.
    #[arg(value_name = "PAYLOAD")]
    payload: Option<String>,
    /// Partition key: picks the partition (the same key, the same partition) and is stored
    /// with the record.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Record id, for dedup: appending the same id again within the topic's dedup window
    /// writes nothing and reports the original's offset. Only with PAYLOAD.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// A header NAME=VALUE; repeat for more.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Append to this partition instead of choosing one by key or round robin.
    #[arg(long, value_name = "P")]
    partition: Option<Partition>,
    /// With standard input: most records per batch (a batch is appended atomically, to one
    /// partition, and never split across segments).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,
    /// Create the journal directory and the topic (with default settings) if missing.
    #[arg(long)]
    create: bool,
    /// Print one JSON object per record: topic, partition, offset, duplicate.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ReadArgs {
    /// The journal directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The topic to read.
    #[arg(value_name = "TOPIC")]
    topic: String,
    /// Read only this partition [default: all].
    #[arg(long, value_name = "P")]
    partition: Option<Partition>,
    /// Where to start in each partition: `beginning`, `end`, an offset, or an RFC 3339 time
    /// (2026-11-22T10:00:00Z: the first record stamped at or after it).
    #[arg(long, value_name = "WHERE", default_value = "beginning", value_parser = parse_from)]
    from: From,
    /// Stop after printing this many records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Keep waiting for new records and print them as they are appended, until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
}

pub async fn run(cmd: JournalCommand) -> Result<u8, Exit> {
    match cmd {
        JournalCommand::Inspect(a) => inspect(a).await,
        JournalCommand::Verify(a) => verify(a).await,
        JournalCommand::CreateTopic(a) => create_topic(a).await,
        JournalCommand::Append(a) => append(a).await,
        JournalCommand::Read(a) => read(a).await,
    }
}

/// A plain error naming the argument it is about; exit code 2.
fn usage(msg: impl std::fmt::Display) -> Exit {
    Exit {
        code: 2,
        error: anyhow!("{msg}"),
    }
}

fn topic_arg(name: &str) -> Result<TopicName, Exit> {
    TopicName::new(name).map_err(|e| usage(format!("TOPIC: {e}")))
}

/// The journal directory must exist and look like a journal (for commands that must not
/// create one by accident).
fn require_journal_dir(dir: &Path) -> Result<(), Exit> {
    if !dir.is_dir() {
        return Err(usage(format!(
            "DIR: journal directory {} does not exist (create a topic first: switchyard journal \
             create-topic {} TOPIC)",
            dir.display(),
            dir.display()
        )));
    }
    if !dir.join("topics").is_dir() {
        return Err(usage(format!(
            "DIR: {} is not a Switchyard journal (no topics/ directory inside)",
            dir.display()
        )));
    }
    Ok(())
}

fn open(dir: &Path) -> Result<FileJournal, Exit> {
    FileJournal::open(dir).map_err(|e| match e {
        JournalError::Locked { .. } => Exit::from(anyhow!(
            "{e} (`journal inspect` and `journal verify` work on a live journal; the other \
             commands need it to themselves)"
        )),
        // Keep the journal error as the source: a corruption exits with 1.
        e => {
            Exit::from(anyhow::Error::new(e).context(format!("opening journal {}", dir.display())))
        }
    })
}

/// Runs `f` on an open journal and closes it afterwards, whatever `f` returned.
async fn with_journal<T>(
    dir: &Path,
    f: impl AsyncFnOnce(&FileJournal) -> Result<T, Exit>,
) -> Result<T, Exit> {
    let journal = open(dir)?;
    let result = f(&journal).await;
    let closed = journal.close().await;
    let value = result?;
    closed.with_context(|| format!("closing journal {}", dir.display()))?;
    Ok(value)
}

// ---- inspect ------------------------------------------------------------------------------

/// For the read-only commands: DIR must exist.
fn require_dir(dir: &Path) -> Result<(), Exit> {
    if !dir.is_dir() {
        return Err(usage(format!(
            "DIR: journal directory {} does not exist or is not a directory",
            dir.display()
        )));
    }
    Ok(())
}

async fn inspect(a: InspectArgs) -> Result<u8, Exit> {
    offline_report(&a.dir, a.json, "inspecting", file::inspect, print_inspect).await?;
    Ok(0)
}

/// Runs a read-only report over DIR (off the async threads) and prints it as JSON or text.
async fn offline_report<R: serde::Serialize + Send + 'static>(
    dir: &Path,
    json: bool,
    doing: &str,
    run: fn(&Path) -> switchyard_journal::Result<R>,
    print: fn(&mut std::io::StdoutLock<'static>, &Path, &R) -> anyhow::Result<()>,
) -> Result<R, Exit> {
    require_dir(dir)?;
    let owned = dir.to_path_buf();
    let report = tokio::task::spawn_blocking(move || run(&owned))
        .await
        .with_context(|| format!("{doing} task"))?
        .with_context(|| format!("{doing} journal {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing JSON")?;
        writeln!(out)?;
    } else {
        print(&mut out, dir, &report)?;
    }
    out.flush()?;
    Ok(report)
}

fn describe_config(c: &TopicConfig) -> String {
    let retention = match (c.retention.max_age_ms, c.retention.max_bytes) {
        (None, None) => "keep everything".to_string(),
        (age, bytes) => {
            let mut parts = Vec::new();
            if let Some(ms) = age {
                parts.push(format!("max age {}", human_ms(ms)));
            }
            if let Some(b) = bytes {
                parts.push(format!("max {} per partition", human_bytes(b)));
            }
            parts.join(", ")
        }
    };
    let dedup = if c.dedup_window_ms == 0 {
        "off".to_string()
    } else {
        human_ms(c.dedup_window_ms)
    };
    format!(
        "{} partition{}, durability {}, dedup window {dedup}, segments of {}, retention: {retention}",
        c.partitions,
        if c.partitions == 1 { "" } else { "s" },
        c.durability,
        human_bytes(c.segment_bytes),
    )
}

fn relative<'p>(path: &'p Path, base: &Path) -> &'p Path {
    path.strip_prefix(base).unwrap_or(path)
}

fn print_inspect(
    out: &mut impl std::io::Write,
    dir: &Path,
    r: &JournalReport,
) -> anyhow::Result<()> {
    let total: u64 = r
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.bytes)
        .sum();
    writeln!(
        out,
        "journal {}: {} topic{}, {}",
        dir.display(),
        r.topics.len(),
        if r.topics.len() == 1 { "" } else { "s" },
        human_bytes(total)
    )?;
    for t in &r.topics {
        writeln!(out)?;
        writeln!(out, "topic {}: {}", t.name, describe_config(&t.config))?;
        let rows: Vec<Vec<String>> = t
            .partitions
            .iter()
            .map(|p| {
                let last = p.segments.iter().rev().find_map(|s| s.last_timestamp);
                vec![
                    p.partition.to_string(),
                    p.first_offset.to_string(),
                    p.next_offset.to_string(),
                    (p.next_offset - p.first_offset.min(p.next_offset)).to_string(),
                    human_bytes(p.bytes),
                    p.segments.len().to_string(),
                    last.map_or("-".into(), format_timestamp),
                ]
            })
            .collect();
        table(
            out,
            "  ",
            &[
                "partition",
                "first offset",
                "next offset",
                "records",
                "size",
                "segments",
                "last record",
            ],
            &rows,
        )?;
        let seg_rows: Vec<Vec<String>> = t
            .partitions
            .iter()
            .flat_map(|p| p.segments.iter().map(move |s| (p.partition, s)))
            .map(|(p, s)| {
                vec![
                    p.to_string(),
                    relative(&s.file, dir).display().to_string(),
                    s.base_offset.to_string(),
                    s.next_offset.to_string(),
                    s.records.to_string(),
                    human_bytes(s.bytes),
                    s.first_timestamp.map_or("-".into(), format_timestamp),
                    s.last_timestamp.map_or("-".into(), format_timestamp),
                    if s.sealed { "sealed" } else { "active" }.to_string(),
                ]
            })
            .collect();
        if !seg_rows.is_empty() {
            writeln!(out, "  segments:")?;
            table(
                out,
                "    ",
                &[
                    "partition",
                    "file",
                    "base",
                    "next",
                    "records",
                    "size",
                    "first record",
                    "last record",
                    "state",
                ],
                &seg_rows,
            )?;
        }
    }
    Ok(())
}

/// Left-aligned columns separated by two spaces.
fn table(
    out: &mut impl std::io::Write,
    indent: &str,
    headers: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(indent);
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

// ---- verify -------------------------------------------------------------------------------

async fn verify(a: VerifyArgs) -> Result<u8, Exit> {
    let report = offline_report(&a.dir, a.json, "verifying", file::verify, print_verify).await?;
    Ok(if report.problems.is_empty() { 0 } else { 1 })
}

fn print_verify(out: &mut impl std::io::Write, dir: &Path, r: &VerifyReport) -> anyhow::Result<()> {
    writeln!(
        out,
        "checked {} segment{}, {} batch{}, {} record{}, {} in {}",
        r.segments_checked,
        if r.segments_checked == 1 { "" } else { "s" },
        r.batches_checked,
        if r.batches_checked == 1 { "" } else { "es" },
        r.records_checked,
        if r.records_checked == 1 { "" } else { "s" },
        human_bytes(r.bytes_checked),
        dir.display()
    )?;
    for p in &r.problems {
        writeln!(
            out,
            "CORRUPT: topic `{}` partition {} offset {}: {} (file {}, byte {})",
            p.topic,
            p.partition,
            p.offset,
            p.reason,
            relative(&p.file, dir).display(),
            p.position
        )?;
    }
    for p in &r.torn_tails {
        writeln!(
            out,
            "note: topic `{}` partition {}: torn tail from offset {} (file {}, byte {}): {}; \
             these bytes were never acknowledged and the next open truncates them",
            p.topic,
            p.partition,
            p.offset,
            relative(&p.file, dir).display(),
            p.position,
            p.reason
        )?;
    }
    if r.problems.is_empty() {
        writeln!(out, "OK: no corruption found")?;
    } else {
        writeln!(
            out,
            "FAILED: {} corrupt spot{} found; corrupt records are never returned by reads",
            r.problems.len(),
            if r.problems.len() == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

// ---- create-topic -------------------------------------------------------------------------

/// The command-line flag a topic setting comes from.
fn flag_of(field: &str) -> &'static str {
    match field {
        "partitions" => "--partitions",
        "durability" => "--durability",
        "dedup-window-ms" => "--dedup-window",
        "segment-bytes" => "--segment-bytes",
        "retention.max-age-ms" => "--retention-max-age",
        "retention.max-bytes" => "--retention-max-bytes",
        "index-interval-bytes" => "--index-interval-bytes",
        _ => "a topic setting",
    }
}

fn config_of(a: &CreateTopicArgs) -> Result<TopicConfig, Exit> {
    let ms = |d: Duration, flag: &str| {
        u64::try_from(d.as_millis()).map_err(|_| usage(format!("{flag}: {d:?} is too long")))
    };
    let index_interval_bytes = u32::try_from(a.index_interval_bytes).map_err(|_| {
        usage(format!(
            "--index-interval-bytes: {} is outside 64..=1048576",
            a.index_interval_bytes
        ))
    })?;
    let retention_max_age_ms = a
        .retention_max_age
        .map(|d| ms(d, "--retention-max-age"))
        .transpose()?;
    let config = TopicConfig {
        partitions: a.partitions,
        durability: a.durability,
        dedup_window_ms: ms(a.dedup_window, "--dedup-window")?,
        segment_bytes: a.segment_bytes,
        retention: Retention {
            max_age_ms: retention_max_age_ms,
            max_bytes: a.retention_max_bytes,
        },
        index_interval_bytes,
    };
    config
        .validate()
        .map_err(|e| usage(format!("{}: {}", flag_of(e.field), e.reason)))?;
    Ok(config)
}

async fn create_topic(a: CreateTopicArgs) -> Result<u8, Exit> {
    let topic = topic_arg(&a.topic)?;
    let config = config_of(&a)?;
    if a.dir.exists() && !a.dir.is_dir() {
        return Err(usage(format!(
            "DIR: {} is not a directory",
            a.dir.display()
        )));
    }
    let (existed, info) = with_journal(&a.dir, async |j| {
        let existed = j.describe_topic(&topic).await.is_ok();
        let info = j.create_topic(&topic, config).await.map_err(|e| match e {
            JournalError::TopicExists { .. } => usage(format!(
                "TOPIC: topic `{topic}` already exists in {} with different settings (see \
                 `switchyard journal inspect {}`)",
                a.dir.display(),
                a.dir.display()
            )),
            other => Exit::from(anyhow!(other).context(format!("creating topic `{topic}`"))),
        })?;
        Ok((existed, info))
    })
    .await?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).context("writing JSON")?
        );
    } else {
        println!(
            "{} topic {} in {}: {}",
            if existed { "unchanged:" } else { "created" },
            info.name,
            a.dir.display(),
            describe_config(&info.config)
        );
    }
    Ok(0)
}

// ---- append -------------------------------------------------------------------------------

async fn append(a: AppendArgs) -> Result<u8, Exit> {
    let topic = topic_arg(&a.topic)?;
    if a.payload.is_none() && a.id.is_some() {
        return Err(usage(
            "--id: needs PAYLOAD (records read from standard input are appended without ids)",
        ));
    }
    if !a.create {
        require_journal_dir(&a.dir)?;
    }
    with_journal(&a.dir, async |j| {
        let info = ensure_topic(j, &a, &topic).await?;
        if let Some(p) = a.partition
            && p >= info.config.partitions
        {
            return Err(usage(format!(
                "--partition: {p} is out of range: topic `{topic}` has {} partition(s)",
                info.config.partitions
            )));
        }
        let choice = match (a.partition, &a.key) {
            (Some(p), _) => PartitionChoice::Explicit(p),
            (None, Some(k)) => PartitionChoice::Key(Bytes::from(k.clone())),
            (None, None) => PartitionChoice::RoundRobin,
        };
        let make = |payload: String| {
            let mut r = Record::new(payload);
            r.key = a.key.clone().map(Bytes::from);
            r.headers = a
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), Bytes::from(v.clone())))
                .collect();
            r
        };
        let mut out = std::io::stdout().lock();
        match &a.payload {
            Some(p) => {
                let mut r = make(p.clone());
                r.id = a.id.clone();
                append_batch(j, &topic, &choice, vec![r], a.json, &mut out).await?;
            }
            None => {
                drop(out);
                let mut lines = stdin_lines();
                while let Some(first) = lines.recv().await {
                    let mut batch = vec![first.context("reading standard input")?];
                    while batch.len() < a.batch_size as usize {
                        match lines.try_recv() {
                            Ok(line) => batch.push(line.context("reading standard input")?),
                            Err(_) => break,
                        }
                    }
                    let records: Vec<Record> = batch.into_iter().map(make).collect();
                    let mut out = std::io::stdout().lock();
                    append_batch(j, &topic, &choice, records, a.json, &mut out).await?;
                }
            }
        }
        Ok(0)
    })
    .await
}

async fn ensure_topic(
    j: &FileJournal,
    a: &AppendArgs,
    topic: &TopicName,
) -> Result<TopicInfo, Exit> {
    match j.describe_topic(topic).await {
        Ok(info) => Ok(info),
        Err(JournalError::TopicNotFound(_)) if a.create => j
            .create_topic(topic, TopicConfig::default())
            .await
            .with_context(|| format!("creating topic `{topic}`"))
            .map_err(Exit::from),
        Err(JournalError::TopicNotFound(_)) => Err(usage(format!(
            "TOPIC: topic `{topic}` does not exist in {dir}; create it with `switchyard journal \
             create-topic {dir} {topic}` (or pass --create to create it with default settings)",
            dir = a.dir.display()
        ))),
        Err(e) => Err(Exit::from(
            anyhow!(e).context(format!("reading topic `{topic}`")),
        )),
    }
}

async fn append_batch(
    j: &FileJournal,
    topic: &TopicName,
    choice: &PartitionChoice,
    records: Vec<Record>,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<(), Exit> {
    let partition = j
        .choose_partition(topic, choice)
        .await
        .context("choosing a partition")?;
    let acks = j
        .append(topic, partition, records, None)
        .await
        .with_context(|| format!("appending to topic `{topic}` partition {partition}"))?;
    for ack in acks {
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "topic": topic.as_str(),
                    "partition": ack.partition,
                    "offset": ack.offset,
                    "duplicate": ack.duplicate,
                })
            )?;
        } else if ack.duplicate {
            writeln!(
                out,
                "partition {} offset {} (duplicate id: already appended, nothing written)",
                ack.partition, ack.offset
            )?;
        } else {
            writeln!(out, "partition {} offset {}", ack.partition, ack.offset)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Non-empty lines of standard input, read on a thread (stdin blocks) and handed over in
/// order. The channel closes at end of input.
fn stdin_lines() -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(4096);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let line = match line {
                Ok(l) => Ok(l.strip_suffix('\r').map(str::to_string).unwrap_or(l)),
                Err(e) => Err(e),
            };
            if matches!(&line, Ok(l) if l.is_empty()) {
                continue;
            }
            let stop = line.is_err();
            if tx.blocking_send(line).is_err() || stop {
                break;
            }
        }
    });
    rx
}

// ---- read ---------------------------------------------------------------------------------

async fn read(a: ReadArgs) -> Result<u8, Exit> {
    let topic = topic_arg(&a.topic)?;
    require_journal_dir(&a.dir)?;
    if a.limit == Some(0) {
        return Err(usage("--limit: must be at least 1"));
    }
    with_journal(&a.dir, async |j| {
        let info = match j.describe_topic(&topic).await {
            Ok(info) => info,
            Err(JournalError::TopicNotFound(_)) => {
                return Err(usage(format!(
                    "TOPIC: topic `{topic}` does not exist in {}",
                    a.dir.display()
                )));
            }
            Err(e) => {
                return Err(Exit::from(
                    anyhow!(e).context(format!("reading topic `{topic}`")),
                ));
            }
        };
        let partitions: Vec<Partition> = match a.partition {
            Some(p) if p >= info.config.partitions => {
                return Err(usage(format!(
                    "--partition: {p} is out of range: topic `{topic}` has {} partition(s)",
                    info.config.partitions
                )));
            }
            Some(p) => vec![p],
            None => (0..info.config.partitions).collect(),
        };
        let mut starts = Vec::new();
        for &p in &partitions {
            starts.push((p, start_offset(j, &topic, &info, p, a.from).await?));
        }
        if a.follow {
            follow(j, &topic, starts, a.limit).await
        } else {
            read_to_end(j, &topic, &info, starts, a.limit).await
        }
    })
    .await
}

async fn start_offset(
    j: &FileJournal,
    topic: &TopicName,
    info: &TopicInfo,
    p: Partition,
    from: From,
) -> Result<Offset, Exit> {
    let next = info
        .partitions
        .iter()
        .find(|x| x.partition == p)
        .map_or(0, |x| x.next_offset);
    Ok(match from {
        From::Beginning => 0,
        From::End => next,
        From::Offset(o) => o,
        From::Time(ts) => j
            .offset_for_time(topic, p, ts)
            .await
            .with_context(|| format!("finding the time in topic `{topic}` partition {p}"))?,
    })
}

fn write_batch(
    out: &mut impl std::io::Write,
    topic: &TopicName,
    p: Partition,
    records: &[switchyard_journal::StoredRecord],
) -> std::io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, &record_json(topic, p, r))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn limits_for(remaining: Option<u64>) -> ReadLimits {
    let d = ReadLimits::default();
    ReadLimits {
        max_records: remaining.map_or(d.max_records, |r| (r.min(d.max_records as u64)) as usize),
        ..d
    }
}

/// Reads each partition from its start to the end it had when the command began.
async fn read_to_end(
    j: &FileJournal,
    topic: &TopicName,
    info: &TopicInfo,
    starts: Vec<(Partition, Offset)>,
    limit: Option<u64>,
) -> Result<u8, Exit> {
    let mut remaining = limit;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (p, mut pos) in starts {
        let end = info
            .partitions
            .iter()
            .find(|x| x.partition == p)
            .map_or(0, |x| x.next_offset);
        while pos < end && remaining != Some(0) {
            let batch = j
                .read(topic, p, pos, limits_for(remaining))
                .await
                .with_context(|| {
                    format!("reading topic `{topic}` partition {p} at offset {pos}")
                })?;
            if batch.records.is_empty() {
                break;
            }
            write_batch(&mut out, topic, p, &batch.records)?;
            if let Some(r) = remaining.as_mut() {
                *r = r.saturating_sub(batch.records.len() as u64);
            }
            pos = batch.next_offset;
        }
    }
    out.flush()?;
    Ok(0)
}

/// Tails every partition until `limit` records are printed or Ctrl-C (or SIGTERM).
async fn follow(
    j: &FileJournal,
    topic: &TopicName,
    starts: Vec<(Partition, Offset)>,
    limit: Option<u64>,
) -> Result<u8, Exit> {
    // Before the first record is printed: whoever reads them may answer with Ctrl-C.
    let stop = crate::serve::shutdown_signal();
    type Batch = anyhow::Result<(Partition, Vec<switchyard_journal::StoredRecord>)>;
    let (tx, mut rx) = mpsc::channel::<Batch>(16);
    let mut tails = tokio::task::JoinSet::new();
    for (p, start) in starts {
        let (j, topic, tx) = (j.clone(), topic.clone(), tx.clone());
        tails.spawn(async move {
            let mut pos = start;
            loop {
                let batch = match j.read(&topic, p, pos, limits_for(limit)).await {
                    Ok(b) => b,
                    Err(e) => {
                        let e = anyhow!(e).context(format!(
                            "reading topic `{topic}` partition {p} at offset {pos}"
                        ));
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                pos = batch.next_offset;
                if !batch.records.is_empty() {
                    if tx.send(Ok((p, batch.records))).await.is_err() {
                        return;
                    }
                    continue;
                }
                if let Err(e) = j.wait_for(&topic, p, pos).await {
                    let e = anyhow!(e).context(format!("waiting on topic `{topic}` partition {p}"));
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut remaining = limit;
    let mut out = std::io::stdout().lock();
    tokio::pin!(stop);
    let result = loop {
        tokio::select! {
            _ = &mut stop => break Ok(0),
            next = rx.recv() => match next {
                None => break Ok(0),
                Some(Err(e)) => break Err(Exit::from(e)),
                Some(Ok((p, mut records))) => {
                    if let Some(r) = remaining {
                        records.truncate(usize::try_from(r).unwrap_or(usize::MAX));
                    }
                    if let Err(e) = write_batch(&mut out, topic, p, &records) {
                        break Err(Exit::from(e));
                    }
                    if let Some(r) = remaining.as_mut() {
                        *r -= records.len() as u64;
                        if *r == 0 {
                            break Ok(0);
                        }
                    }
                }
            }
        }
    };
    tails.abort_all();
    while tails.join_next().await.is_some() {}
    result
}
