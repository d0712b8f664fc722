//! The integration gateway's part of the SQLite backend (see [`crate::connect`]): lane
//! cursors and states, the message store, replies and cases. The trait methods in
//! `sqlite.rs` delegate here. Lane progress (intake, attempts, replies) commits with
//! `synchronous=NORMAL` like the dispatcher's progress: a commit lost to a power loss
//! means the events are taken again from the journal (the intake rolls back with its
//! cursor) or one more attempt; operator actions commit with `synchronous=FULL`.

use super::{SqliteStore, be, col, col_unsigned, to_i64};
use crate::connect::{
    Attempt, AttemptOutcome, CASE_SAMPLES, Case, CaseKey, CaseState, Failure, Intake, LaneState,
    Message, MessageCount, MessageFilter, MessageState, NewMessage, NewReply, OutboundRequest,
    Reply, ReplyDisposition, check_limit, clip, clip_body,
};
use crate::{Cursor, Error, Result, validate_name};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Row, Sqlite};

const MESSAGE_COLS: &str = "id, adapter, adapter_hash, topic, partition_no, record_offset, \
     event_id, event_type, partition_key, event, request, state, attempts, next_attempt_at_ms, \
     reply_deadline_ms, correlation_id, case_id, last_error, created_at_ms, updated_at_ms";
const CASE_COLS: &str = "id, adapter, stage, error_class, status, message, vendor, failures, \
     first_seen_ms, last_seen_ms, state, resolved_at_ms";

fn check_cursor(cursor: &Cursor) -> Result<()> {
    cursor.validate().map_err(|e| match e {
        Error::InvalidInput { field, reason } => {
            Error::invalid(format!("cursor-after.{field}"), reason)
        }
        other => other,
    })
}

fn json_col<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    name: &str,
    table: &'static str,
    key: &str,
) -> Result<T> {
    let text: String = col(row, name, table, key)?;
    serde_json::from_str(&text).map_err(|e| Error::Corrupt {
        table,
        key: key.to_owned(),
        reason: format!("column `{name}` does not parse: {e}"),
    })
}

fn message_from_row(row: &SqliteRow) -> Result<Message> {
    let table = "messages";
    let id: i64 = row.try_get("id").unwrap_or(-1);
    let k = id.to_string();
    let k = k.as_str();
    let state: String = col(row, "state", table, k)?;
    let request: Option<String> = col(row, "request", table, k)?;
    let request =
        match request {
            None => None,
            Some(text) => Some(serde_json::from_str::<OutboundRequest>(&text).map_err(|e| {
                Error::Corrupt {
                    table,
                    key: k.to_owned(),
                    reason: format!("column `request` does not parse: {e}"),
                }
            })?),
        };
    Ok(Message {
        id: col_unsigned(row, "id", table, k)?,
        adapter: col(row, "adapter", table, k)?,
        adapter_hash: col(row, "adapter_hash", table, k)?,
        topic: col(row, "topic", table, k)?,
        partition: col_unsigned(row, "partition_no", table, k)?,
        offset: col_unsigned(row, "record_offset", table, k)?,
        event_id: col(row, "event_id", table, k)?,
        event_type: col(row, "event_type", table, k)?,
        partition_key: col(row, "partition_key", table, k)?,
        event: json_col(row, "event", table, k)?,
        request,
        state: MessageState::parse(&state).ok_or_else(|| Error::Corrupt {
            table,
            key: k.to_owned(),
            reason: format!("column `state` is not a message state ({state:?})"),
        })?,
        attempts: col_unsigned(row, "attempts", table, k)?,
        next_attempt_at_ms: col(row, "next_attempt_at_ms", table, k)?,
        reply_deadline_ms: col(row, "reply_deadline_ms", table, k)?,
        correlation_id: col(row, "correlation_id", table, k)?,
        case_id: col(row, "case_id", table, k)?,
        last_error: col(row, "last_error", table, k)?,
        created_at_ms: col(row, "created_at_ms", table, k)?,
        updated_at_ms: col(row, "updated_at_ms", table, k)?,
    })
}

fn attempt_from_row(row: &SqliteRow) -> Result<Attempt> {
    let table = "attempts";
    let k = format!(
        "{}#{}",
        row.try_get::<i64, _>("message_id").unwrap_or(-1),
        row.try_get::<i64, _>("n").unwrap_or(-1)
    );
    let k = k.as_str();
    let status: Option<i64> = col(row, "status", table, k)?;
    let delay: Option<i64> = col(row, "delay_ms", table, k)?;
    Ok(Attempt {
        n: col_unsigned(row, "n", table, k)?,
        at_ms: col(row, "at_ms", table, k)?,
        request: json_col(row, "request", table, k)?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        response_body: col(row, "response_body", table, k)?,
        latency_us: col_unsigned(row, "latency_us", table, k)?,
        delay_ms: delay.and_then(|d| u64::try_from(d).ok()),
        error: col(row, "error", table, k)?,
        outcome: col(row, "outcome", table, k)?,
    })
}

fn reply_from_row(row: &SqliteRow) -> Result<Reply> {
    let table = "replies";
    let k = row.try_get::<i64, _>("id").unwrap_or(-1).to_string();
    let k = k.as_str();
    let disposition: String = col(row, "disposition", table, k)?;
    let message_id: Option<i64> = col(row, "message_id", table, k)?;
    Ok(Reply {
        id: col_unsigned(row, "id", table, k)?,
        adapter: col(row, "adapter", table, k)?,
        correlation_id: col(row, "correlation_id", table, k)?,
        received_at_ms: col(row, "received_at_ms", table, k)?,
        headers: json_col(row, "headers", table, k)?,
        body: col(row, "body", table, k)?,
        message_id: message_id.and_then(|m| u64::try_from(m).ok()),
        disposition: ReplyDisposition::parse(&disposition).ok_or_else(|| Error::Corrupt {
            table,
            key: k.to_owned(),
            reason: format!("column `disposition` is not a disposition ({disposition:?})"),
        })?,
    })
}

async fn case_from_row(conn: &mut SqliteConnection, row: &SqliteRow) -> Result<Case> {
    const OP: &str = "case";
    let table = "cases";
    let id: String = row.try_get("id").unwrap_or_else(|_| "?".to_owned());
    let k = id.as_str();
    let state: String = col(row, "state", table, k)?;
    let status: Option<i64> = col(row, "status", table, k)?;
    let open: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE case_id = ? AND state IN ('failed', 'unmatched')",
    )
    .bind(k)
    .fetch_one(&mut *conn)
    .await
    .map_err(be(OP))?;
    let samples: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM messages WHERE case_id = ? ORDER BY id LIMIT ?")
            .bind(k)
            .bind(i64::from(CASE_SAMPLES))
            .fetch_all(&mut *conn)
            .await
            .map_err(be(OP))?;
    Ok(Case {
        key: CaseKey {
            id: id.clone(),
            adapter: col(row, "adapter", table, k)?,
            stage: col(row, "stage", table, k)?,
            error_class: col(row, "error_class", table, k)?,
            status: status.and_then(|s| u16::try_from(s).ok()),
            message: col(row, "message", table, k)?,
            vendor: col(row, "vendor", table, k)?,
        },
        state: CaseState::parse(&state).ok_or_else(|| Error::Corrupt {
            table,
            key: k.to_owned(),
            reason: format!("column `state` is not a case state ({state:?})"),
        })?,
        failures: col_unsigned(row, "failures", table, k)?,
        open_messages: u64::try_from(open).unwrap_or(0),
        first_seen_ms: col(row, "first_seen_ms", table, k)?,
        last_seen_ms: col(row, "last_seen_ms", table, k)?,
        resolved_at_ms: col(row, "resolved_at_ms", table, k)?,
        samples: samples
            .into_iter()
            .filter_map(|s| u64::try_from(s).ok())
            .collect(),
    })
}

/// Counts one more failure in its case (creating or reopening it).
async fn count_failure(
    conn: &mut SqliteConnection,
    op: &'static str,
    case: &CaseKey,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cases (id, adapter, stage, error_class, status, message, vendor, failures, \
         first_seen_ms, last_seen_ms, state, resolved_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, 'open', NULL) \
         ON CONFLICT (id) DO UPDATE SET failures = cases.failures + 1, \
         last_seen_ms = excluded.last_seen_ms, state = 'open', resolved_at_ms = NULL",
    )
    .bind(&case.id)
    .bind(&case.adapter)
    .bind(clip(&case.stage))
    .bind(clip(&case.error_class))
    .bind(case.status.map(i64::from))
    .bind(clip(&case.message))
    .bind(clip(&case.vendor))
    .bind(now_ms)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(be(op))?;
    Ok(())
}

async fn load_message(conn: &mut SqliteConnection, op: &'static str, id: u64) -> Result<Message> {
    let row = sqlx::query(&format!("SELECT {MESSAGE_COLS} FROM messages WHERE id = ?"))
        .bind(to_i64(id))
        .fetch_optional(conn)
        .await
        .map_err(be(op))?
        .ok_or_else(|| Error::not_found("message", id.to_string()))?;
    message_from_row(&row)
}

/// Moves a message to the state an outcome names, if it is in state `from` (counting an
/// attempt when it was pending: the outcome of one); returns it as it is now, or `None`
/// when it was not in `from` (or does not exist).
async fn settle(
    conn: &mut SqliteConnection,
    op: &'static str,
    id: u64,
    from: MessageState,
    outcome: &AttemptOutcome,
    error: Option<&str>,
    now_ms: i64,
) -> Result<Option<Message>> {
    let (state, next, deadline, case, last_error): (_, _, _, Option<&str>, Option<String>) =
        match outcome {
            AttemptOutcome::Delivered => ("delivered", None, None, None, error.map(clip)),
            AttemptOutcome::AwaitReply { deadline_ms } => {
                ("awaiting-reply", None, Some(*deadline_ms), None, None)
            }
            AttemptOutcome::Retry { next_at_ms } => {
                ("pending", Some(*next_at_ms), None, None, error.map(clip))
            }
            AttemptOutcome::Rejected { reason } => {
                ("rejected", None, None, None, Some(clip(reason)))
            }
            AttemptOutcome::Failed(f) => {
                count_failure(&mut *conn, op, &f.case, now_ms).await?;
                (
                    "failed",
                    None,
                    None,
                    Some(f.case.id.as_str()),
                    Some(clip(&f.error)),
                )
            }
        };
    // One statement: the state check, the change and the row as it is now.
    let row = sqlx::query::<Sqlite>(&format!(
        "UPDATE messages SET state = ?, next_attempt_at_ms = ?, reply_deadline_ms = ?, \
         case_id = COALESCE(?, case_id), last_error = ?, updated_at_ms = ?, \
         attempts = attempts + ? WHERE id = ? AND state = ? RETURNING {MESSAGE_COLS}"
    ))
    .bind(state)
    .bind(next)
    .bind(deadline)
    .bind(case)
    .bind(last_error)
    .bind(now_ms)
    .bind(i64::from(from == MessageState::Pending))
    .bind(to_i64(id))
    .bind(from.as_str())
    .fetch_optional(conn)
    .await
    .map_err(be(op))?;
    row.as_ref().map(message_from_row).transpose()
}

pub(super) async fn lane_cursors(s: &SqliteStore, lane: &str) -> Result<Vec<Cursor>> {
    const OP: &str = "lane_cursors";
    validate_name("lane", lane)?;
    let mut tx = s.read(OP).await?;
    let rows = sqlx::query(
        "SELECT topic, partition_no, next_offset FROM lane_cursors WHERE lane = ? \
         ORDER BY topic, partition_no",
    )
    .bind(lane)
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    rows.iter()
        .map(|row| {
            let k = format!(
                "{lane} {}",
                row.try_get::<String, _>("topic").unwrap_or_default()
            );
            Ok(Cursor {
                topic: col(row, "topic", "lane_cursors", &k)?,
                partition: col_unsigned(row, "partition_no", "lane_cursors", &k)?,
                offset: col_unsigned(row, "next_offset", "lane_cursors", &k)?,
            })
        })
        .collect()
}

/// A lane's cursor moved forward, never back (4 binds: lane, topic, partition, offset).
const PUT_CURSOR_FORWARD: &str = "INSERT INTO lane_cursors (lane, topic, partition_no, \
     next_offset) VALUES (?, ?, ?, ?) ON CONFLICT (lane, topic, partition_no) DO UPDATE SET \
     next_offset = excluded.next_offset WHERE excluded.next_offset > lane_cursors.next_offset";

async fn put_cursor(
    conn: &mut SqliteConnection,
    op: &'static str,
    lane: &str,
    cursor: &Cursor,
    forward_only: bool,
) -> Result<()> {
    let sql = if forward_only {
        PUT_CURSOR_FORWARD
    } else {
        "INSERT INTO lane_cursors (lane, topic, partition_no, next_offset) VALUES (?, ?, ?, ?) \
         ON CONFLICT (lane, topic, partition_no) DO UPDATE SET next_offset = excluded.next_offset"
    };
    sqlx::query(sql)
        .bind(lane)
        .bind(&cursor.topic)
        .bind(i64::from(cursor.partition))
        .bind(to_i64(cursor.offset))
        .execute(conn)
        .await
        .map_err(be(op))?;
    Ok(())
}

pub(super) async fn set_lane_cursor(s: &SqliteStore, lane: &str, cursor: Cursor) -> Result<()> {
    const OP: &str = "set_lane_cursor";
    validate_name("lane", lane)?;
    check_cursor(&cursor)?;
    let mut tx = s.write(OP).await?;
    put_cursor(&mut tx, OP, lane, &cursor, false).await?;
    tx.commit().await.map_err(be(OP))
}

/// Rows per `INSERT` of a lane's intake (17 binds each, well under SQLite's limit).
const INTAKE_ROWS: usize = 64;

/// An `INSERT` of `rows` messages that skips positions already stored and returns, for
/// each row it inserted, its id, its position and whether it is ready: pending and first
/// of its partition key (the test of `due_messages`; rows inserted before it by the same
/// statement have smaller ids, so it sees them).
fn insert_messages_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO messages (adapter, adapter_hash, topic, partition_no, record_offset, \
         event_id, event_type, partition_key, event, request, state, attempts, \
         next_attempt_at_ms, correlation_id, case_id, last_error, created_at_ms, \
         updated_at_ms) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(
        " ON CONFLICT (adapter, topic, partition_no, record_offset) DO NOTHING \
         RETURNING id, adapter, topic, partition_no, record_offset, state = 'pending' AND \
         (partition_key IS NULL OR NOT EXISTS (SELECT 1 FROM messages e \
          WHERE e.adapter = messages.adapter AND e.state = 'pending' \
          AND e.partition_key = messages.partition_key AND e.id < messages.id)) AS ready",
    );
    sql
}

/// One message's binds for [`insert_messages_sql`].
fn bind_message<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    m: &'q NewMessage,
    event: String,
    request: Option<String>,
    now_ms: i64,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let (case, error) = match &m.failure {
        Some(Failure { case, error }) => (Some(case.id.as_str()), Some(clip(error))),
        None => (None, None),
    };
    q.bind(&m.adapter)
        .bind(&m.adapter_hash)
        .bind(&m.topic)
        .bind(i64::from(m.partition))
        .bind(to_i64(m.offset))
        .bind(clip(&m.event_id))
        .bind(clip(&m.event_type))
        .bind(m.partition_key.as_deref())
        .bind(event)
        .bind(request)
        .bind(m.state.as_str())
        .bind((m.state == MessageState::Pending).then_some(now_ms))
        .bind(m.correlation_id.as_deref())
        .bind(case)
        .bind(error)
        .bind(now_ms)
        .bind(now_ms)
}

/// A message's position: adapter, topic, partition, offset.
type Position = (String, String, u32, u64);

/// What [`insert_messages_sql`] returned for one row: the message's id and whether it is
/// ready, with its position to find it by.
fn inserted_row(row: &SqliteRow) -> Result<(Position, u64, bool)> {
    let k = "lane_intake";
    let adapter: String = col(row, "adapter", "messages", k)?;
    let topic: String = col(row, "topic", "messages", k)?;
    let partition: u32 = col_unsigned(row, "partition_no", "messages", k)?;
    let offset: u64 = col_unsigned(row, "record_offset", "messages", k)?;
    let id: u64 = col_unsigned(row, "id", "messages", k)?;
    let ready: bool = col(row, "ready", "messages", k)?;
    Ok(((adapter, topic, partition, offset), id, ready))
}

pub(super) async fn lane_intake(
    s: &SqliteStore,
    lane: &str,
    messages: Vec<NewMessage>,
    cursor_after: Option<Cursor>,
    now_ms: i64,
) -> Result<Intake> {
    const OP: &str = "lane_intake";
    validate_name("lane", lane)?;
    for (i, m) in messages.iter().enumerate() {
        m.validate(&format!("messages[{i}]"))?;
    }
    if let Some(c) = &cursor_after {
        check_cursor(c)?;
    }
    let mut texts = Vec::with_capacity(messages.len());
    for m in &messages {
        let request = match &m.request {
            Some(r) => Some(
                serde_json::to_string(r).map_err(|e| Error::invalid("request", e.to_string()))?,
            ),
            None => None,
        };
        texts.push((m.event.to_string(), request));
    }
    // (id, ready) of each inserted message, by its position in `messages`.
    let mut stored: Vec<Option<(u64, bool)>> = vec![None; messages.len()];
    if messages.iter().all(|m| m.failure.is_none()) {
        // Nothing to count in a case: one round trip to the connection's thread, of
        // statements that each commit on their own: the messages (an INSERT is all or
        // nothing), then the cursor. A failure in between leaves the cursor behind the
        // stored messages, never ahead: the events are read again and not inserted twice.
        let mut sql = String::new();
        for chunk in messages.chunks(INTAKE_ROWS) {
            sql.push_str(&insert_messages_sql(chunk.len()));
            sql.push_str(";\n");
        }
        if cursor_after.is_some() {
            sql.push_str(PUT_CURSOR_FORWARD);
        }
        if sql.is_empty() {
            return Ok(Intake::default());
        }
        let mut q = sqlx::query::<Sqlite>(&sql);
        for (m, (event, request)) in messages.iter().zip(texts) {
            q = bind_message(q, m, event, request, now_ms);
        }
        if let Some(c) = &cursor_after {
            q = q
                .bind(lane)
                .bind(&c.topic)
                .bind(i64::from(c.partition))
                .bind(to_i64(c.offset));
        }
        // Batches of one (a lane keeping up) reuse one prepared statement; other sizes
        // are prepared for the call.
        s.note_write();
        let rows = q
            .persistent(messages.len() <= 1)
            .fetch_all(&s.progress)
            .await
            .map_err(be(OP))?;
        let inserted = rows.iter().map(inserted_row).collect::<Result<Vec<_>>>()?;
        let by_position: std::collections::HashMap<_, _> = inserted
            .iter()
            .map(|((adapter, topic, p, o), id, ready)| {
                ((adapter.as_str(), topic.as_str(), *p, *o), (*id, *ready))
            })
            .collect();
        for (slot, m) in stored.iter_mut().zip(&messages) {
            *slot = by_position
                .get(&(m.adapter.as_str(), m.topic.as_str(), m.partition, m.offset))
                .copied();
        }
    } else {
        // A failure is counted in its case in the transaction that inserts its message.
        let sql = insert_messages_sql(1);
        let mut tx = s.write_progress(OP).await?;
        for ((m, (event, request)), slot) in messages.iter().zip(texts).zip(stored.iter_mut()) {
            let row = bind_message(sqlx::query::<Sqlite>(&sql), m, event, request, now_ms)
                .fetch_optional(&mut *tx)
                .await
                .map_err(be(OP))?;
            if let Some(row) = row {
                let (_, id, ready) = inserted_row(&row)?;
                *slot = Some((id, ready));
                if let Some(f) = &m.failure {
                    count_failure(&mut tx, OP, &f.case, now_ms).await?;
                }
            }
        }
        if let Some(c) = &cursor_after {
            put_cursor(&mut tx, OP, lane, c, true).await?;
        }
        tx.commit().await.map_err(be(OP))?;
    }
    Ok(Intake::of(messages, stored, now_ms, |t| t))
}

pub(super) async fn due_messages(
    s: &SqliteStore,
    adapter: &str,
    now_ms: i64,
    skip: &[u64],
    limit: u32,
) -> Result<Vec<Message>> {
    const OP: &str = "due_messages";
    validate_name("adapter", adapter)?;
    check_limit(limit)?;
    let fetch = i64::from(limit) + i64::try_from(skip.len()).unwrap_or(i64::MAX / 2);
    // One statement sees one snapshot: no transaction around it (its BEGIN and COMMIT
    // were two more round trips to the connection's thread on the lane's send path).
    let rows = sqlx::query(&format!(
        "SELECT {MESSAGE_COLS} FROM messages m WHERE m.adapter = ? AND m.state = 'pending' \
         AND m.next_attempt_at_ms <= ? AND (m.partition_key IS NULL OR NOT EXISTS ( \
           SELECT 1 FROM messages e WHERE e.adapter = m.adapter AND e.state = 'pending' \
           AND e.partition_key = m.partition_key AND e.id < m.id)) \
         ORDER BY m.id LIMIT ?"
    ))
    .bind(adapter)
    .bind(now_ms)
    .bind(fetch)
    .fetch_all(&s.reader)
    .await
    .map_err(be(OP))?;
    let mut out = Vec::new();
    for row in &rows {
        let m = message_from_row(row)?;
        if !skip.contains(&m.id) {
            out.push(m);
        }
        if out.len() >= limit as usize {
            break;
        }
    }
    Ok(out)
}

pub(super) async fn next_due_at(s: &SqliteStore, adapter: &str) -> Result<Option<i64>> {
    const OP: &str = "next_due_at";
    validate_name("adapter", adapter)?;
    let next: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(next_attempt_at_ms) FROM messages WHERE adapter = ? AND state = 'pending'",
    )
    .bind(adapter)
    .fetch_one(&s.reader)
    .await
    .map_err(be(OP))?;
    Ok(next)
}

pub(super) async fn finish_attempt(
    s: &SqliteStore,
    message_id: u64,
    attempt: Attempt,
    outcome: AttemptOutcome,
    now_ms: i64,
) -> Result<Message> {
    const OP: &str = "finish_attempt";
    outcome.validate()?;
    let request = serde_json::to_string(&attempt.request)
        .map_err(|e| Error::invalid("attempt.request", e.to_string()))?;
    let mut tx = s.write_progress(OP).await?;
    // Settled first (one round trip: the check, the change, the row), then its attempt
    // recorded with the number it got; a message not pending changes nothing.
    let Some(updated) = settle(
        &mut tx,
        OP,
        message_id,
        MessageState::Pending,
        &outcome,
        attempt.error.as_deref(),
        now_ms,
    )
    .await?
    else {
        let message = load_message(&mut tx, OP, message_id).await?;
        return Err(Error::Conflict {
            what: "message",
            name: message_id.to_string(),
            reason: format!("it is {}, not pending", message.state),
        });
    };
    sqlx::query(
        "INSERT INTO attempts (message_id, n, at_ms, request, status, response_body, \
         latency_us, delay_ms, error, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(to_i64(message_id))
    .bind(i64::from(updated.attempts))
    .bind(attempt.at_ms)
    .bind(request)
    .bind(attempt.status.map(i64::from))
    .bind(attempt.response_body.as_deref().map(clip_body))
    .bind(to_i64(attempt.latency_us))
    .bind(attempt.delay_ms.map(to_i64))
    .bind(attempt.error.as_deref().map(clip))
    .bind(outcome.label())
    .execute(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    Ok(updated)
}

pub(super) async fn message(s: &SqliteStore, id: u64) -> Result<(Message, Vec<Attempt>)> {
    const OP: &str = "message";
    let mut tx = s.read(OP).await?;
    let message = load_message(&mut tx, OP, id).await?;
    let rows = sqlx::query(
        "SELECT message_id, n, at_ms, request, status, response_body, latency_us, delay_ms, \
         error, outcome FROM attempts WHERE message_id = ? ORDER BY n",
    )
    .bind(to_i64(id))
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    let attempts = rows.iter().map(attempt_from_row).collect::<Result<_>>()?;
    Ok((message, attempts))
}

pub(super) async fn messages(s: &SqliteStore, filter: &MessageFilter) -> Result<Vec<Message>> {
    const OP: &str = "messages";
    check_limit(filter.limit)?;
    if let Some(a) = &filter.adapter {
        validate_name("adapter", a)?;
    }
    let mut sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE id > ?");
    if filter.adapter.is_some() {
        sql.push_str(" AND adapter = ?");
    }
    if filter.state.is_some() {
        sql.push_str(" AND state = ?");
    }
    if filter.case_id.is_some() {
        sql.push_str(" AND case_id = ?");
    }
    if filter.since_ms.is_some() {
        sql.push_str(" AND created_at_ms >= ?");
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    let mut q = sqlx::query::<Sqlite>(&sql).bind(filter.after_id.map_or(0, to_i64));
    if let Some(a) = &filter.adapter {
        q = q.bind(a.as_str());
    }
    if let Some(st) = filter.state {
        q = q.bind(st.as_str());
    }
    if let Some(c) = &filter.case_id {
        q = q.bind(c.as_str());
    }
    if let Some(since) = filter.since_ms {
        q = q.bind(since);
    }
    q = q.bind(i64::from(filter.limit));
    let mut tx = s.read(OP).await?;
    let rows = q.fetch_all(&mut *tx).await.map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    rows.iter().map(message_from_row).collect()
}

pub(super) async fn replay_message(
    s: &SqliteStore,
    id: u64,
    remapped: Option<(OutboundRequest, String)>,
    now_ms: i64,
) -> Result<Message> {
    const OP: &str = "replay_message";
    let remapped = match remapped {
        Some((r, hash)) => Some((
            serde_json::to_string(&r).map_err(|e| Error::invalid("request", e.to_string()))?,
            hash,
        )),
        None => None,
    };
    let mut tx = s.write(OP).await?;
    let message = load_message(&mut tx, OP, id).await?;
    if !message.state.replayable() {
        return Err(Error::Conflict {
            what: "message",
            name: id.to_string(),
            reason: format!(
                "it is {}: only delivered, rejected, failed or discarded messages are replayed",
                message.state
            ),
        });
    }
    if message.request.is_none() && remapped.is_none() {
        return Err(Error::Conflict {
            what: "message",
            name: id.to_string(),
            reason: "it has no request (its mapping failed): replay it mapped again".to_owned(),
        });
    }
    if let Some((request, hash)) = &remapped {
        sqlx::query("UPDATE messages SET request = ?, adapter_hash = ? WHERE id = ?")
            .bind(request)
            .bind(hash)
            .bind(to_i64(id))
            .execute(&mut *tx)
            .await
            .map_err(be(OP))?;
    }
    sqlx::query(
        "UPDATE messages SET state = 'pending', next_attempt_at_ms = ?, reply_deadline_ms = NULL, \
         updated_at_ms = ? WHERE id = ?",
    )
    .bind(now_ms)
    .bind(now_ms)
    .bind(to_i64(id))
    .execute(&mut *tx)
    .await
    .map_err(be(OP))?;
    let updated = load_message(&mut tx, OP, id).await?;
    tx.commit().await.map_err(be(OP))?;
    Ok(updated)
}

pub(super) async fn record_reply(
    s: &SqliteStore,
    reply: NewReply,
    settle_with: Option<AttemptOutcome>,
    now_ms: i64,
) -> Result<Reply> {
    const OP: &str = "record_reply";
    validate_name("adapter", &reply.adapter)?;
    let outcome = settle_with.unwrap_or(AttemptOutcome::Delivered);
    if matches!(
        outcome,
        AttemptOutcome::AwaitReply { .. } | AttemptOutcome::Retry { .. }
    ) {
        return Err(Error::invalid(
            "settle",
            "a reply settles its message as delivered, rejected or failed",
        ));
    }
    outcome.validate()?;
    let headers = serde_json::to_string(&reply.headers)
        .map_err(|e| Error::invalid("headers", e.to_string()))?;
    let mut tx = s.write_progress(OP).await?;
    let found = match &reply.correlation_id {
        Some(c) => sqlx::query(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE adapter = ? AND correlation_id = ?"
        ))
        .bind(&reply.adapter)
        .bind(c)
        .fetch_optional(&mut *tx)
        .await
        .map_err(be(OP))?
        .map(|row| message_from_row(&row))
        .transpose()?,
        None => None,
    };
    let disposition = match &found {
        None => ReplyDisposition::Unmatched,
        Some(m) if m.state == MessageState::AwaitingReply => {
            settle(
                &mut tx,
                OP,
                m.id,
                MessageState::AwaitingReply,
                &outcome,
                None,
                now_ms,
            )
            .await?;
            ReplyDisposition::Matched
        }
        Some(_) => ReplyDisposition::Late,
    };
    let message_id = found.as_ref().map(|m| to_i64(m.id));
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO replies (adapter, correlation_id, received_at_ms, headers, body, \
         message_id, disposition) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&reply.adapter)
    .bind(reply.correlation_id.as_deref().map(clip))
    .bind(reply.received_at_ms)
    .bind(headers)
    .bind(clip_body(&reply.body))
    .bind(message_id)
    .bind(disposition.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    Ok(Reply {
        id: u64::try_from(id).unwrap_or(0),
        adapter: reply.adapter,
        correlation_id: reply.correlation_id,
        received_at_ms: reply.received_at_ms,
        headers: reply.headers,
        body: clip_body(&reply.body).to_owned(),
        message_id: found.map(|m| m.id),
        disposition,
    })
}

pub(super) async fn message_by_correlation(
    s: &SqliteStore,
    adapter: &str,
    correlation_id: &str,
) -> Result<Option<Message>> {
    const OP: &str = "message_by_correlation";
    validate_name("adapter", adapter)?;
    let mut tx = s.read(OP).await?;
    let row = sqlx::query(&format!(
        "SELECT {MESSAGE_COLS} FROM messages WHERE adapter = ? AND correlation_id = ?"
    ))
    .bind(adapter)
    .bind(correlation_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    row.map(|r| message_from_row(&r)).transpose()
}

pub(super) async fn replies(
    s: &SqliteStore,
    adapter: &str,
    disposition: Option<ReplyDisposition>,
    limit: u32,
) -> Result<Vec<Reply>> {
    const OP: &str = "replies";
    validate_name("adapter", adapter)?;
    check_limit(limit)?;
    let mut tx = s.read(OP).await?;
    let rows = sqlx::query(
        "SELECT id, adapter, correlation_id, received_at_ms, headers, body, message_id, \
         disposition FROM replies WHERE adapter = ? AND (? IS NULL OR disposition = ?) \
         ORDER BY id DESC LIMIT ?",
    )
    .bind(adapter)
    .bind(disposition.map(ReplyDisposition::as_str))
    .bind(disposition.map(ReplyDisposition::as_str))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    rows.iter().map(reply_from_row).collect()
}

pub(super) async fn expire_replies(
    s: &SqliteStore,
    adapter: &str,
    now_ms: i64,
    failure: Failure,
) -> Result<u64> {
    const OP: &str = "expire_replies";
    validate_name("adapter", adapter)?;
    failure.case.validate("failure.case")?;
    let mut tx = s.write_progress(OP).await?;
    let expired = sqlx::query(
        "UPDATE messages SET state = 'failed', case_id = ?, last_error = ?, updated_at_ms = ? \
         WHERE adapter = ? AND state = 'awaiting-reply' AND reply_deadline_ms <= ?",
    )
    .bind(&failure.case.id)
    .bind(clip(&failure.error))
    .bind(now_ms)
    .bind(adapter)
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(be(OP))?
    .rows_affected();
    for _ in 0..expired {
        count_failure(&mut tx, OP, &failure.case, now_ms).await?;
    }
    tx.commit().await.map_err(be(OP))?;
    Ok(expired)
}

pub(super) async fn cases(
    s: &SqliteStore,
    adapter: Option<&str>,
    state: Option<CaseState>,
    limit: u32,
) -> Result<Vec<Case>> {
    const OP: &str = "cases";
    check_limit(limit)?;
    if let Some(a) = adapter {
        validate_name("adapter", a)?;
    }
    let mut tx = s.read(OP).await?;
    let rows = sqlx::query(&format!(
        "SELECT {CASE_COLS} FROM cases WHERE (? IS NULL OR adapter = ?) \
         AND (? IS NULL OR state = ?) ORDER BY last_seen_ms DESC, id LIMIT ?"
    ))
    .bind(adapter)
    .bind(adapter)
    .bind(state.map(CaseState::as_str))
    .bind(state.map(CaseState::as_str))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(case_from_row(&mut tx, row).await?);
    }
    tx.commit().await.map_err(be(OP))?;
    Ok(out)
}

async fn load_case(conn: &mut SqliteConnection, op: &'static str, id: &str) -> Result<Case> {
    let row = sqlx::query(&format!("SELECT {CASE_COLS} FROM cases WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(be(op))?
        .ok_or_else(|| Error::not_found("case", id))?;
    case_from_row(conn, &row).await
}

pub(super) async fn case(s: &SqliteStore, id: &str) -> Result<Case> {
    const OP: &str = "case";
    let mut tx = s.read(OP).await?;
    let case = load_case(&mut tx, OP, id).await?;
    tx.commit().await.map_err(be(OP))?;
    Ok(case)
}

async fn bulk(
    s: &SqliteStore,
    op: &'static str,
    id: &str,
    sql: &'static str,
    now_ms: i64,
) -> Result<u64> {
    let mut tx = s.write(op).await?;
    load_case(&mut tx, op, id).await?;
    let n = sqlx::query(sql)
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(be(op))?
        .rows_affected();
    tx.commit().await.map_err(be(op))?;
    Ok(n)
}

pub(super) async fn retry_case(s: &SqliteStore, id: &str, now_ms: i64) -> Result<u64> {
    bulk(
        s,
        "retry_case",
        id,
        "UPDATE messages SET state = 'pending', next_attempt_at_ms = ?1, updated_at_ms = ?1 \
         WHERE case_id = ?2 AND state = 'failed' AND request IS NOT NULL",
        now_ms,
    )
    .await
}

pub(super) async fn discard_case(s: &SqliteStore, id: &str, now_ms: i64) -> Result<u64> {
    bulk(
        s,
        "discard_case",
        id,
        "UPDATE messages SET state = 'discarded', next_attempt_at_ms = NULL, updated_at_ms = ?1 \
         WHERE case_id = ?2 AND state IN ('failed', 'unmatched')",
        now_ms,
    )
    .await
}

pub(super) async fn resolve_case(s: &SqliteStore, id: &str, now_ms: i64) -> Result<Case> {
    const OP: &str = "resolve_case";
    let mut tx = s.write(OP).await?;
    load_case(&mut tx, OP, id).await?;
    sqlx::query("UPDATE cases SET state = 'resolved', resolved_at_ms = ? WHERE id = ?")
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(be(OP))?;
    let case = load_case(&mut tx, OP, id).await?;
    tx.commit().await.map_err(be(OP))?;
    Ok(case)
}

pub(super) async fn set_lane_state(
    s: &SqliteStore,
    lane: &str,
    state: LaneState,
    now_ms: i64,
) -> Result<()> {
    const OP: &str = "set_lane_state";
    validate_name("lane", lane)?;
    let mut tx = s.write(OP).await?;
    sqlx::query(
        "INSERT INTO lanes (lane, state, updated_at_ms) VALUES (?, ?, ?) \
         ON CONFLICT (lane) DO UPDATE SET state = excluded.state, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(lane)
    .bind(state.as_str())
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))
}

pub(super) async fn lane_states(s: &SqliteStore) -> Result<Vec<(String, LaneState)>> {
    const OP: &str = "lane_states";
    let mut tx = s.read(OP).await?;
    let rows = sqlx::query("SELECT lane, state FROM lanes ORDER BY lane")
        .fetch_all(&mut *tx)
        .await
        .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    rows.iter()
        .map(|row| {
            let lane: String = col(row, "lane", "lanes", "?")?;
            let state: String = col(row, "state", "lanes", &lane)?;
            let parsed = LaneState::parse(&state).ok_or_else(|| Error::Corrupt {
                table: "lanes",
                key: lane.clone(),
                reason: format!("column `state` is not a lane state ({state:?})"),
            })?;
            Ok((lane, parsed))
        })
        .collect()
}

pub(super) async fn message_counts(
    s: &SqliteStore,
    adapter: Option<&str>,
) -> Result<Vec<MessageCount>> {
    const OP: &str = "message_counts";
    if let Some(a) = adapter {
        validate_name("adapter", a)?;
    }
    let mut tx = s.read(OP).await?;
    let rows = sqlx::query(
        "SELECT adapter, state, COUNT(*) AS n FROM messages WHERE (? IS NULL OR adapter = ?) \
         GROUP BY adapter, state ORDER BY adapter, state",
    )
    .bind(adapter)
    .bind(adapter)
    .fetch_all(&mut *tx)
    .await
    .map_err(be(OP))?;
    tx.commit().await.map_err(be(OP))?;
    rows.iter()
        .map(|row| {
            let a: String = col(row, "adapter", "messages", "?")?;
            let state: String = col(row, "state", "messages", &a)?;
            Ok(MessageCount {
                state: MessageState::parse(&state).ok_or_else(|| Error::Corrupt {
                    table: "messages",
                    key: a.clone(),
                    reason: format!("column `state` is not a message state ({state:?})"),
                })?,
                count: col_unsigned(row, "n", "messages", &a)?,
                adapter: a,
            })
        })
        .collect()
}
