//! A child process appends with `Durability::Always` from several concurrent tasks and
//! prints every acknowledgement; the test SIGKILLs it at a random moment, reopens the
//! journal and checks that every acknowledged record is present, intact, at its
//! acknowledged offset and in order, that batches are whole, and that no id appears twice
//! (the child re-sends some ids of the previous run, as a producer retrying after a crash
//! would, and dedup must recognise them). 50 cycles on one directory by default,
//! 500 with `SWITCHYARD_LONG_TESTS=1`.

mod common;

use bytes::Bytes;
use common::payload_for;
use rand::Rng;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use switchyard_journal::file::FileJournal;
use switchyard_journal::{
    Durability, Journal, Offset, Partition, PartitionChoice, ReadLimits, Record, StoredRecord,
    TopicConfig, TopicName,
};
use tokio::io::AsyncBufReadExt;

const CHILD_DIR_ENV: &str = "SWITCHYARD_CRASH_CHILD_DIR";
const CHILD_CYCLE_ENV: &str = "SWITCHYARD_CRASH_CYCLE";
const CHILD_TEST: &str = "crash_child";
const TOPIC: &str = "crash.v1";
const PARTITIONS: u32 = 3;
const TASKS: u64 = 6;
/// Ops of the previous run of task 0 that each child sends again.
const RETRIED_OPS: u64 = 4;

fn topic() -> TopicName {
    TopicName::new(TOPIC).expect("topic name")
}

fn config() -> TopicConfig {
    TopicConfig {
        partitions: PARTITIONS,
        durability: Durability::Always,
        // Long enough for the retries of the previous run (under a second old), short
        // enough that the window's two generations rotate many times during the run.
        dedup_window_ms: 3_000,
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        ..TopicConfig::default()
    }
}

/// What one op of one task of one run appends: `n` records sharing a key.
fn op_batch_len(cycle: u64, task: u64, op: u64) -> u64 {
    let h = common::fnv(format!("{cycle}/{task}/{op}").as_bytes());
    // Mostly single records, sometimes batches of 2 to 5.
    if h.is_multiple_of(3) {
        2 + (h >> 8) % 4
    } else {
        1
    }
}

fn op_key(task: u64, op: u64) -> String {
    format!("k{task}-{}", op % 3)
}

fn record_id(cycle: u64, task: u64, op: u64, i: u64, n: u64) -> String {
    format!("c{cycle}-t{task}-o{op}-r{i}of{n}")
}

/// The parts of a record id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Id {
    cycle: u64,
    task: u64,
    op: u64,
    i: u64,
    n: u64,
}

fn parse_id(id: &str) -> Option<Id> {
    let rest = id.strip_prefix('c')?;
    let (cycle, rest) = rest.split_once("-t")?;
    let (task, rest) = rest.split_once("-o")?;
    let (op, rest) = rest.split_once("-r")?;
    let (i, n) = rest.split_once("of")?;
    Some(Id {
        cycle: cycle.parse().ok()?,
        task: task.parse().ok()?,
        op: op.parse().ok()?,
        i: i.parse().ok()?,
        n: n.parse().ok()?,
    })
}

/// Not a test on its own: the child process the crash test starts and kills. Without its
/// environment variable it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let cycle: u64 = std::env::var(CHILD_CYCLE_ENV)
        .expect("cycle env")
        .parse()
        .expect("cycle number");
    let j = FileJournal::open(&dir).expect("child: open");
    j.create_topic(&topic(), config())
        .await
        .expect("child: create_topic");
    say("ready\n");
    if cycle > 0 {
        for op in 0..RETRIED_OPS {
            send(&j, cycle - 1, 0, op).await;
        }
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let j = j.clone();
        tasks.spawn(async move {
            let mut op = 0;
            // Bounded, in case the parent is gone: it normally kills us long before.
            while started.elapsed() < Duration::from_secs(20) {
                send(&j, cycle, task, op).await;
                op += 1;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("child task");
    }
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).expect("stdout");
    out.flush().expect("flush stdout");
}

async fn send(j: &FileJournal, cycle: u64, task: u64, op: u64) {
    let n = op_batch_len(cycle, task, op);
    let key = op_key(task, op);
    let ids: Vec<String> = (0..n).map(|i| record_id(cycle, task, op, i, n)).collect();
    let records = ids
        .iter()
        .map(|id| {
            Record::new(payload_for(id))
                .with_id(id)
                .with_key(key.clone())
        })
        .collect();
    let t = topic();
    let p = j
        .choose_partition(&t, &PartitionChoice::Key(Bytes::from(key.clone())))
        .await
        .expect("child: choose_partition");
    let out = j.append(&t, p, records, None).await.expect("child: append");
    let mut lines = String::new();
    for (id, a) in ids.iter().zip(out) {
        let kind = if a.duplicate { "dup" } else { "ack" };
        lines.push_str(&format!("{kind} {} {} {id}\n", a.partition, a.offset));
    }
    say(&lines);
}

async fn record_at(
    j: &FileJournal,
    t: &TopicName,
    (p, offset): (Partition, Offset),
) -> StoredRecord {
    let limits = ReadLimits {
        max_records: 1,
        max_bytes: 1 << 20,
    };
    let b = j
        .read(t, p, offset, limits)
        .await
        .expect("read an acknowledged record");
    let r = b
        .records
        .into_iter()
        .next()
        .expect("an acknowledged record");
    assert_eq!(r.offset, offset);
    r
}

/// One acknowledgement the child printed.
#[derive(Clone, Debug)]
struct Ack {
    duplicate: bool,
    partition: Partition,
    offset: Offset,
    id: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut it = line.split(' ');
    let duplicate = match it.next()? {
        "ack" => false,
        "dup" => true,
        _ => return None,
    };
    let partition = it.next()?.parse().ok()?;
    let offset = it.next()?.parse().ok()?;
    let id = it.next()?.to_owned();
    Some(Ack {
        duplicate,
        partition,
        offset,
        id,
    })
}

/// What the parent knows, across all cycles.
#[derive(Default)]
struct Model {
    /// Every id the child reported as stored, and where.
    acked: HashMap<String, (Partition, Offset)>,
    /// Ids stored again by a retry from beyond the dedup window, and where (the latest).
    retried: HashMap<String, (Partition, Offset)>,
    /// Per partition: how far the log has been checked, and what was seen there.
    checked: Vec<Checked>,
}

#[derive(Clone, Default)]
struct Checked {
    next: Offset,
    last_ts: i64,
    /// Each id seen, with its record's timestamp.
    ids: HashMap<String, i64>,
    /// (cycle, task) -> last op seen, for order.
    last_op: HashMap<(u64, u64), u64>,
    /// A batch being read: (id of its first record, records still expected).
    open_batch: Option<(Id, u64)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill() {
    let long = std::env::var("SWITCHYARD_LONG_TESTS").is_ok_and(|v| v == "1");
    let cycles: u64 = if long { 500 } else { 50 };
    let full_every: u64 = if long { 50 } else { 10 };
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let mut rng = rand::rng();
    let mut model = Model {
        checked: vec![Checked::default(); PARTITIONS as usize],
        ..Model::default()
    };
    let mut total_acks = 0usize;
    let mut cycles_with_acks = 0;
    let started = Instant::now();

    for cycle in 0..cycles {
        let mut child = tokio::process::Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_CYCLE_ENV, cycle.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let out_reader = tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(stdout);
            let mut lines = Vec::new();
            let mut ready = Some(ready_tx);
            loop {
                let mut line = String::new();
                let n = r.read_line(&mut line).await.expect("read child stdout");
                // A line cut by the kill has no newline: it was never fully reported.
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                // libtest may print "test crash_child ... " on the same line.
                if line.trim_end().ends_with("ready") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                } else {
                    lines.push(line.trim_end().to_owned());
                }
            }
            lines
        });
        let err_reader = tokio::spawn(async move {
            let mut s = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(
                &mut tokio::io::BufReader::new(stderr),
                &mut s,
            )
            .await;
            s
        });

        // A quarter of the kills land during start-up and recovery, the rest while appending.
        if rng.random_bool(0.25) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..40))).await;
        } else {
            let ready = tokio::time::timeout(Duration::from_secs(30), ready_rx).await;
            if !matches!(ready, Ok(Ok(()))) {
                let _ = child.start_kill();
                let status = child.wait().await.expect("wait child");
                let err = err_reader.await.unwrap_or_default();
                panic!("cycle {cycle}: the child never got ready ({status}):\n{err}");
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..150))).await;
        }
        child.start_kill().expect("SIGKILL the child");
        let status = child.wait().await.expect("wait child");
        let lines = out_reader.await.expect("stdout reader");
        let err = err_reader.await.unwrap_or_default();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "cycle {cycle}: the child must die by our SIGKILL, not on its own ({status}):\n{err}"
        );
        // Other lines are libtest's ("running 1 test").
        let acks: Vec<Ack> = lines
            .iter()
            .filter(|l| l.starts_with("ack ") || l.starts_with("dup "))
            .map(|l| parse_ack(l).unwrap_or_else(|| panic!("cycle {cycle}: bad child line {l:?}")))
            .collect();
        total_acks += acks.len();
        cycles_with_acks += usize::from(!acks.is_empty());

        let full = cycle % full_every == full_every - 1 || cycle + 1 == cycles;
        check(dir.path(), cycle, &acks, &mut model, full).await;
    }
    println!(
        "{cycles} SIGKILL cycles in {:?}: {total_acks} acknowledged records ({} distinct), \
         {cycles_with_acks} cycles killed while appending",
        started.elapsed(),
        model.acked.len()
    );
    assert!(
        cycles_with_acks as u64 >= cycles / 2,
        "too few cycles were killed while appending ({cycles_with_acks} of {cycles}) for the test to mean much"
    );
}

/// Reopens the journal and checks this cycle's acknowledgements and the log's new part
/// (or, when `full`, the whole log and every acknowledgement so far).
async fn check(dir: &Path, cycle: u64, acks: &[Ack], model: &mut Model, full: bool) {
    let j = FileJournal::open(dir)
        .unwrap_or_else(|e| panic!("cycle {cycle}: reopen after SIGKILL failed: {e}"));
    let t = topic();
    let exists = j.list_topics().await.expect("list").contains(&t);
    if !exists {
        assert!(
            acks.is_empty() && model.acked.is_empty(),
            "cycle {cycle}: the topic vanished"
        );
        j.close().await.expect("close");
        return;
    }

    // Nothing that was there before the child ran is lost, so its new records come after.
    let info = j.describe_topic(&t).await.expect("describe");
    for (c, pi) in model.checked.iter().zip(&info.partitions) {
        assert!(
            pi.next_offset >= c.next,
            "cycle {cycle}: partition {} shrank to {} below {} records seen before",
            pi.partition,
            pi.next_offset,
            c.next
        );
    }
    for a in acks
        .iter()
        .filter(|a| !a.duplicate && !model.acked.contains_key(&a.id))
    {
        let before = model.checked[a.partition as usize].next;
        assert!(
            a.offset >= before,
            "cycle {cycle}: {} was acknowledged at {}/{}, inside what existed before ({before})",
            a.id,
            a.partition,
            a.offset
        );
    }

    // This cycle's acknowledgements against what the model knew.
    for a in acks {
        let place = (a.partition, a.offset);
        match model.acked.get(&a.id) {
            Some(known) if a.duplicate => assert!(
                *known == place || model.retried.get(&a.id) == Some(&place),
                "cycle {cycle}: {} reported as a duplicate of {place:?}, stored at {known:?}",
                a.id
            ),
            Some(known) => {
                // Dedup is promised within the window only: a retry of a record older than
                // that is a new record. Anything younger stored twice is a bug.
                let first = record_at(&j, &t, *known).await.timestamp;
                let again = record_at(&j, &t, place).await.timestamp;
                let age = again.millis() - first.millis();
                assert!(
                    age > config().dedup_window_ms as i64,
                    "cycle {cycle}: {} acknowledged again at {place:?} ({again:?}), first at \
                     {known:?} ({first:?}), {age} ms apart: stored twice within the window",
                    a.id
                );
                eprintln!(
                    "cycle {cycle}: {} retried {age} ms later, past the window",
                    a.id
                );
                model.retried.insert(a.id.clone(), place);
            }
            None => {
                model.acked.insert(a.id.clone(), place);
            }
        }
    }

    if full {
        model.checked = vec![Checked::default(); PARTITIONS as usize];
    }
    let mut seen_here: HashMap<String, (Partition, Offset)> = HashMap::new();
    for p in 0..PARTITIONS {
        let c = &mut model.checked[p as usize];
        let mut from = c.next;
        loop {
            let batch = j
                .read(
                    &t,
                    p,
                    from,
                    ReadLimits {
                        max_records: 5000,
                        max_bytes: 8 << 20,
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: read {p} from {from}: {e}"));
            if batch.records.is_empty() {
                break;
            }
            for r in &batch.records {
                let ctx = format!("cycle {cycle}: partition {p} offset {}", r.offset);
                assert_eq!(r.offset, c.next, "{ctx}: offsets are contiguous");
                c.next += 1;
                assert!(r.timestamp.0 >= c.last_ts, "{ctx}: timestamp went back");
                c.last_ts = r.timestamp.0;
                let id_text =
                    r.id.clone()
                        .unwrap_or_else(|| panic!("{ctx}: record without id"));
                let id = parse_id(&id_text).unwrap_or_else(|| panic!("{ctx}: bad id {id_text}"));
                assert_eq!(
                    r.payload,
                    Bytes::from(payload_for(&id_text)),
                    "{ctx}: payload of {id_text}"
                );
                assert_eq!(
                    r.key.as_deref(),
                    Some(op_key(id.task, id.op).as_bytes()),
                    "{ctx}: key"
                );
                // Twice only as a retry from beyond the dedup window.
                let retried = c.ids.insert(id_text.clone(), r.timestamp.0);
                if let Some(first) = retried {
                    assert!(
                        r.timestamp.0 - first > config().dedup_window_ms as i64,
                        "{ctx}: {id_text} appears twice within the dedup window"
                    );
                }
                seen_here.insert(id_text.clone(), (p, r.offset));
                // Batches are whole and contiguous.
                match c.open_batch {
                    Some((first, left)) => {
                        assert_eq!(
                            (id.cycle, id.task, id.op, id.i),
                            (first.cycle, first.task, first.op, first.n - left),
                            "{ctx}: {id_text} breaks into an unfinished batch"
                        );
                        c.open_batch = (left > 1).then_some((first, left - 1));
                    }
                    None => {
                        assert_eq!(id.i, 0, "{ctx}: {id_text} is not the start of its batch");
                        c.open_batch = (id.n > 1).then_some((id, id.n - 1));
                    }
                }
                // Each task's ops reach a partition in the order it sent them (a retry from
                // beyond the window is a new send, out of that order).
                if id.i == 0 && retried.is_none() {
                    let last = c.last_op.insert((id.cycle, id.task), id.op);
                    if let Some(last) = last {
                        assert!(
                            last < id.op,
                            "{ctx}: op {} of c{}-t{} after op {last}",
                            id.op,
                            id.cycle,
                            id.task
                        );
                    }
                }
                // Where it was acknowledged, if it was.
                if let Some(place) = model.acked.get(&id_text) {
                    let here = (p, r.offset);
                    assert!(
                        *place == here || model.retried.get(&id_text) == Some(&here),
                        "{ctx}: {id_text} was acknowledged elsewhere: {place:?}"
                    );
                }
            }
            from = batch.next_offset;
        }
        assert!(
            c.open_batch.is_none(),
            "cycle {cycle}: partition {p} ends inside a batch"
        );
    }
    // An id is in one partition only.
    for (p, c) in model.checked.iter().enumerate() {
        for (q, d) in model.checked.iter().enumerate().skip(p + 1) {
            if let Some(dup) = c.ids.keys().find(|id| d.ids.contains_key(*id)) {
                panic!("cycle {cycle}: {dup} is in partitions {p} and {q}");
            }
        }
    }
    // Every acknowledged record is there: this cycle's ones, or all of them on a full check.
    let must: Vec<(&String, &(Partition, Offset))> = if full {
        model.acked.iter().collect()
    } else {
        acks.iter()
            .filter_map(|a| model.acked.get_key_value(&a.id))
            .collect()
    };
    for (id, (p, o)) in must {
        if let Some(place) = seen_here.get(id) {
            assert!(
                place == &(*p, *o) || model.retried.get(id) == Some(place),
                "cycle {cycle}: {id} acknowledged at {:?}, found at {place:?}",
                (*p, *o)
            );
            continue;
        }
        let b = j
            .read(
                &t,
                *p,
                *o,
                ReadLimits {
                    max_records: 1,
                    max_bytes: 1 << 20,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: read {p}/{o}: {e}"));
        let r = b.records.first().unwrap_or_else(|| {
            panic!("cycle {cycle}: acknowledged {id} at {p}/{o} is gone after SIGKILL")
        });
        assert_eq!(
            r.offset, *o,
            "cycle {cycle}: acknowledged {id} at {p}/{o} is gone"
        );
        assert_eq!(
            r.id.as_deref(),
            Some(id.as_str()),
            "cycle {cycle}: {p}/{o} holds another record"
        );
        assert_eq!(
            r.payload,
            Bytes::from(payload_for(id)),
            "cycle {cycle}: {id} is damaged"
        );
    }
    j.close().await.expect("close");
}
