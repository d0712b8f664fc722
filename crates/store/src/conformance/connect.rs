//! The integration gateway's cases (see [`crate::connect`]). Each uses adapters and cases
//! named after its prefix; messages stay (the message store is an audit record), so the
//! suite can run again on the same database under new prefixes.

use crate::connect::{
    Attempt, AttemptOutcome, CaseKey, CaseState, Failure, LaneState, MessageFilter, MessageState,
    NewMessage, NewReply, OutboundRequest, ReplyDisposition,
};
use crate::{Cursor, Error, Store};

const TOPIC: &str = "inventory.v1";

fn request(body: &str) -> OutboundRequest {
    OutboundRequest {
        target: "http://127.0.0.1:9/orders".into(),
        method: Some("POST".into()),
        headers: vec![("x-id".into(), "1".into())],
        content_type: "application/json".into(),
        body: body.into(),
    }
}

fn new_message(adapter: &str, offset: u64, key: Option<&str>) -> NewMessage {
    NewMessage {
        adapter: adapter.into(),
        adapter_hash: "h1".into(),
        topic: TOPIC.into(),
        partition: 0,
        offset,
        event_id: format!("e-{offset}"),
        event_type: "stock.low".into(),
        partition_key: key.map(str::to_owned),
        event: serde_json::json!({"id": format!("e-{offset}"), "data": {"sku": offset}}),
        request: Some(request(&format!("{{\"sku\":{offset}}}"))),
        correlation_id: Some(format!("{adapter}-c{offset}")),
        state: MessageState::Pending,
        failure: None,
    }
}

fn case_key(prefix: &str, adapter: &str, suffix: &str) -> CaseKey {
    CaseKey {
        id: format!("{prefix}-{suffix}"),
        adapter: adapter.into(),
        stage: "deliver".into(),
        error_class: "http-status".into(),
        status: Some(500),
        message: "internal error #".into(),
        vendor: "bakery".into(),
    }
}

fn attempt(status: Option<u16>) -> Attempt {
    Attempt {
        n: 0,
        at_ms: 1_000,
        request: request("{}"),
        status,
        response_body: Some("body".into()),
        latency_us: 1_500,
        delay_ms: None,
        error: None,
        outcome: String::new(),
    }
}

fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

async fn ids(store: &dyn Store, adapter: &str, state: Option<MessageState>) -> Vec<u64> {
    let filter = MessageFilter {
        adapter: Some(adapter.into()),
        state,
        limit: 1000,
        ..Default::default()
    };
    ok(store.messages(&filter).await, "messages")
        .into_iter()
        .map(|m| m.id)
        .collect()
}

/// An intake inserts messages and moves the cursor in one go; repeating it inserts
/// nothing twice and never moves the cursor back.
pub async fn lane_intake_is_idempotent(store: &dyn Store, prefix: &str) {
    let adapter = format!("{prefix}-a");
    assert!(ok(store.lane_cursors(&adapter).await, "cursors").is_empty());
    let batch = vec![
        new_message(&adapter, 0, None),
        new_message(&adapter, 1, None),
    ];
    let n = ok(
        store
            .lane_intake(&adapter, batch.clone(), Some(Cursor::new(TOPIC, 0, 2)), 10)
            .await,
        "intake",
    );
    assert_eq!(n.inserted, 2, "intake inserts both messages");
    assert_eq!(
        n.ready,
        ok(store.due_messages(&adapter, 10, &[], 10).await, "due"),
        "the ready messages are the stored ones, as due_messages reads them"
    );
    let again = ok(
        store
            .lane_intake(&adapter, batch, Some(Cursor::new(TOPIC, 0, 1)), 11)
            .await,
        "intake again",
    );
    assert_eq!(again.inserted, 0, "a repeated intake inserts nothing");
    assert!(again.ready.is_empty(), "and hands out nothing");
    let cursors = ok(store.lane_cursors(&adapter).await, "cursors");
    assert_eq!(
        cursors,
        vec![Cursor::new(TOPIC, 0, 2)],
        "cursor never moves back"
    );
    ok(
        store
            .set_lane_cursor(&adapter, Cursor::new(TOPIC, 0, 1))
            .await,
        "set cursor",
    );
    assert_eq!(
        ok(store.lane_cursors(&adapter).await, "cursors"),
        vec![Cursor::new(TOPIC, 0, 1)],
        "set_lane_cursor moves it anywhere"
    );
    let (m, attempts) = ok(
        store.message(ids(store, &adapter, None).await[0]).await,
        "get",
    );
    assert_eq!(m.state, MessageState::Pending);
    assert_eq!(m.next_attempt_at_ms, Some(10));
    assert_eq!(m.request, Some(request("{\"sku\":0}")));
    assert_eq!(m.event["data"]["sku"], 0);
    assert!(attempts.is_empty());
    let found = ok(
        store
            .message_by_correlation(&adapter, &format!("{adapter}-c1"))
            .await,
        "by correlation",
    );
    assert_eq!(found.map(|m| m.offset), Some(1));
}

/// Bad input names its field and changes nothing.
pub async fn connect_bad_input_changes_nothing(store: &dyn Store, prefix: &str) {
    let adapter = format!("{prefix}-a");
    let mut bad = new_message(&adapter, 5, None);
    bad.request = None;
    let batch = vec![new_message(&adapter, 4, None), bad];
    match store
        .lane_intake(&adapter, batch, Some(Cursor::new(TOPIC, 0, 6)), 1)
        .await
    {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "messages[1].state"),
        other => panic!("a pending message without request: {other:?}"),
    }
    assert!(
        ids(store, &adapter, None).await.is_empty(),
        "nothing inserted"
    );
    assert!(ok(store.lane_cursors(&adapter).await, "cursors").is_empty());
    match store.lane_intake("bad name!", vec![], None, 1).await {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "lane"),
        other => panic!("bad lane name: {other:?}"),
    }
    match store.due_messages(&adapter, 1, &[], 0).await {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "limit"),
        other => panic!("limit 0: {other:?}"),
    }
    match store.message(u64::MAX / 2).await {
        Err(Error::NotFound { what, .. }) => assert_eq!(what, "message"),
        other => panic!("unknown message: {other:?}"),
    }
    match store.case(&format!("{prefix}-none")).await {
        Err(Error::NotFound { what, .. }) => assert_eq!(what, "case"),
        other => panic!("unknown case: {other:?}"),
    }
    let mut failed = new_message(&adapter, 7, None);
    failed.state = MessageState::Failed;
    match store.lane_intake(&adapter, vec![failed], None, 1).await {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "messages[0].failure"),
        other => panic!("failed without failure: {other:?}"),
    }
}

/// A key's messages go one at a time, in order; keyless ones are not held back; in-flight
/// ids are skipped.
pub async fn due_messages_keep_key_order(store: &dyn Store, prefix: &str) {
    let adapter = format!("{prefix}-a");
    let batch = vec![
        new_message(&adapter, 0, Some("k1")),
        new_message(&adapter, 1, Some("k1")),
        new_message(&adapter, 2, Some("k2")),
        new_message(&adapter, 3, None),
    ];
    let intake = ok(
        store.lane_intake(&adapter, batch, None, 100).await,
        "intake",
    );
    let all = ids(store, &adapter, None).await;
    let due = ok(store.due_messages(&adapter, 100, &[], 10).await, "due");
    let offsets: Vec<u64> = due.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, vec![0, 2, 3], "k1's second waits for its first");
    assert_eq!(
        intake.ready, due,
        "the intake's ready messages are the due ones"
    );
    assert!(
        ok(store.due_messages(&adapter, 99, &[], 10).await, "due").is_empty(),
        "nothing is due before its time"
    );
    let skipped = ok(
        store.due_messages(&adapter, 100, &[all[0]], 10).await,
        "due",
    );
    let offsets: Vec<u64> = skipped.iter().map(|m| m.offset).collect();
    assert_eq!(
        offsets,
        vec![2, 3],
        "in flight is skipped, and so is its key"
    );
    // The first of k1 is retried later: the second still waits.
    ok(
        store
            .finish_attempt(
                all[0],
                attempt(Some(503)),
                AttemptOutcome::Retry { next_at_ms: 500 },
                100,
            )
            .await,
        "retry",
    );
    let due = ok(store.due_messages(&adapter, 200, &[], 10).await, "due");
    let offsets: Vec<u64> = due.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, vec![2, 3], "a retrying key holds back only itself");
    assert_eq!(ok(store.next_due_at(&adapter).await, "next"), Some(100));
    ok(
        store
            .finish_attempt(all[0], attempt(Some(200)), AttemptOutcome::Delivered, 500)
            .await,
        "deliver",
    );
    let due = ok(store.due_messages(&adapter, 600, &[], 10).await, "due");
    assert_eq!(due.first().map(|m| m.offset), Some(1), "then k1's second");
    let (m, attempts) = ok(store.message(all[0]).await, "get");
    assert_eq!(m.state, MessageState::Delivered);
    assert_eq!(m.attempts, 2);
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["retry", "delivered"]);
    assert_eq!(attempts[0].n, 1);
    assert_eq!(attempts[0].status, Some(503));
    assert_eq!(attempts[1].latency_us, 1_500);
    match store
        .finish_attempt(all[0], attempt(Some(200)), AttemptOutcome::Delivered, 600)
        .await
    {
        Err(Error::Conflict { .. }) => {}
        other => panic!("an attempt of a delivered message: {other:?}"),
    }
}

/// The messages an intake hands out as ready are those `due_messages` returns right
/// after it: a key with an older pending message (in an earlier intake, or earlier in the
/// same batch) is held back, failed messages are never ready, and a batch larger than
/// one statement's rows keeps its order.
pub async fn intake_hands_out_what_is_due(store: &dyn Store, prefix: &str) {
    let adapter = format!("{prefix}-a");
    let first = ok(
        store
            .lane_intake(
                &adapter,
                vec![new_message(&adapter, 0, Some("k1"))],
                None,
                5,
            )
            .await,
        "intake",
    );
    let offsets: Vec<u64> = first.ready.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, vec![0]);
    // k1 still has a pending message (in flight, say): its next one is not ready.
    let mut failed = new_message(&adapter, 3, Some("k3"));
    failed.request = None;
    failed.state = MessageState::Failed;
    failed.failure = Some(Failure {
        case: case_key(prefix, &adapter, "map"),
        error: "mapping: no sku".into(),
    });
    let mixed = vec![
        new_message(&adapter, 1, Some("k1")),
        new_message(&adapter, 2, Some("k2")),
        failed,
        new_message(&adapter, 4, Some("k3")),
        new_message(&adapter, 5, Some("k2")),
    ];
    let second = ok(
        store
            .lane_intake(&adapter, mixed, Some(Cursor::new(TOPIC, 0, 6)), 6)
            .await,
        "intake with a failure",
    );
    assert_eq!(second.inserted, 5);
    let offsets: Vec<u64> = second.ready.iter().map(|m| m.offset).collect();
    assert_eq!(
        offsets,
        vec![2, 4],
        "k1 waits, k2's second waits, failed is not sent"
    );
    let in_flight = [first.ready[0].id];
    assert_eq!(
        second.ready,
        ok(store.due_messages(&adapter, 6, &in_flight, 10).await, "due"),
    );
    assert_eq!(
        ok(store.lane_cursors(&adapter).await, "cursors"),
        vec![Cursor::new(TOPIC, 0, 6)]
    );
    // More rows than one INSERT holds: every one stored once, in order, keyless ones ready.
    let other = format!("{prefix}-b");
    let big: Vec<NewMessage> = (0..150).map(|o| new_message(&other, o, None)).collect();
    let third = ok(
        store
            .lane_intake(&other, big.clone(), Some(Cursor::new(TOPIC, 0, 150)), 7)
            .await,
        "big intake",
    );
    assert_eq!(third.inserted, 150);
    let offsets: Vec<u64> = third.ready.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (0..150).collect::<Vec<_>>());
    assert_eq!(
        third.ready,
        ok(store.due_messages(&other, 7, &[], 1000).await, "due")
    );
    assert_eq!(
        ok(store.lane_cursors(&other).await, "cursors"),
        vec![Cursor::new(TOPIC, 0, 150)],
        "the cursor follows the last INSERT"
    );
    let ids: Vec<u64> = third.ready.iter().map(|m| m.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow the batch");
    let again = ok(store.lane_intake(&other, big, None, 8).await, "again");
    assert_eq!((again.inserted, again.ready.len()), (0, 0));
}

/// Failures with one key are one case with a count; retry, discard and resolve act on it
/// in bulk; a new failure reopens a resolved case.
pub async fn failures_group_into_cases(store: &dyn Store, prefix: &str) {
    let adapter = format!("{prefix}-a");
    let batch: Vec<NewMessage> = (0..4).map(|o| new_message(&adapter, o, None)).collect();
    ok(store.lane_intake(&adapter, batch, None, 1).await, "intake");
    let all = ids(store, &adapter, None).await;
    let key = case_key(prefix, &adapter, "c1");
    for id in &all[..3] {
        ok(
            store
                .finish_attempt(
                    *id,
                    attempt(Some(500)),
                    AttemptOutcome::Failed(Failure {
                        case: key.clone(),
                        error: format!("HTTP 500 for {id}"),
                    }),
                    50,
                )
                .await,
            "fail",
        );
    }
    let case = ok(store.case(&key.id).await, "case");
    assert_eq!(case.failures, 3);
    assert_eq!(case.open_messages, 3);
    assert_eq!(case.samples, all[..3].to_vec());
    assert_eq!(case.state, CaseState::Open);
    assert_eq!(case.key, key);
    let listed = ok(store.cases(Some(&adapter), None, 10).await, "cases");
    assert_eq!(listed.len(), 1);
    let in_case = MessageFilter {
        case_id: Some(key.id.clone()),
        state: Some(MessageState::Failed),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(ok(store.messages(&in_case).await, "messages").len(), 3);
    assert_eq!(ok(store.retry_case(&key.id, 60).await, "retry"), 3);
    assert_eq!(
        ids(store, &adapter, Some(MessageState::Pending))
            .await
            .len(),
        4
    );
    assert_eq!(ok(store.case(&key.id).await, "case").open_messages, 0);
    // Two fail again, then are discarded.
    for id in &all[..2] {
        ok(
            store
                .finish_attempt(
                    *id,
                    attempt(Some(500)),
                    AttemptOutcome::Failed(Failure {
                        case: key.clone(),
                        error: "again".into(),
                    }),
                    70,
                )
                .await,
            "fail again",
        );
    }
    let case = ok(store.case(&key.id).await, "case");
    assert_eq!((case.failures, case.open_messages), (5, 2));
    assert_eq!(ok(store.discard_case(&key.id, 80).await, "discard"), 2);
    assert_eq!(
        ids(store, &adapter, Some(MessageState::Discarded)).await,
        all[..2].to_vec()
    );
    let resolved = ok(store.resolve_case(&key.id, 90).await, "resolve");
    assert_eq!(resolved.state, CaseState::Resolved);
    assert_eq!(resolved.resolved_at_ms, Some(90));
    assert!(
        ok(
            store.cases(Some(&adapter), Some(CaseState::Open), 10).await,
            "open"
        )
        .is_empty()
    );
    ok(
        store
            .finish_attempt(
                all[3],
                attempt(Some(500)),
                AttemptOutcome::Failed(Failure {
                    case: key.clone(),
                    error: "once more".into(),
                }),
                95,
            )
            .await,
        "fail after resolve",
    );
    let reopened = ok(store.case(&key.id).await, "case");
    assert_eq!(reopened.state, CaseState::Open, "a new failure reopens it");
    assert_eq!(reopened.last_seen_ms, 95);
    assert_eq!(reopened.first_seen_ms, 50);
    // A mapping failure at intake goes straight into its case.
    let mut unmapped = new_message(&adapter, 9, None);
    unmapped.request = None;
    unmapped.state = MessageState::Failed;
    let map_key = case_key(prefix, &adapter, "map");
    unmapped.failure = Some(Failure {
        case: map_key.clone(),
        error: "mapping failed".into(),
    });
    ok(
        store.lane_intake(&adapter, vec![unmapped], None, 99).await,
        "intake failed",
    );
    let case = ok(store.case(&map_key.id).await, "map case");
    assert_eq!((case.failures, case.open_messages), (1, 1));
    assert_eq!(
        ok(store.retry_case(&map_key.id, 100).await, "retry"),
        0,
        "a message without a request is not put back by a case retry"
    );
    let counts = ok(store.message_counts(Some(&adapter)).await, "counts");
    let total: u64 = counts.iter().map(|c| c.count).sum();
    assert_eq!(total, 5, "every message is in exactly one state");
}

/// Replies settle the message awaiting them; others are recorded as late or unmatched;
/// expired waits become failures.
pub async fn replies_are_matched_or_recorded(store: &dyn Store, prefix: &str) {
    let adapter = format!("{prefix}-a");
    let batch: Vec<NewMessage> = (0..3).map(|o| new_message(&adapter, o, None)).collect();
    ok(store.lane_intake(&adapter, batch, None, 1).await, "intake");
    let all = ids(store, &adapter, None).await;
    for id in &all {
        ok(
            store
                .finish_attempt(
                    *id,
                    attempt(Some(202)),
                    AttemptOutcome::AwaitReply { deadline_ms: 1_000 },
                    10,
                )
                .await,
            "await",
        );
    }
    let reply = |c: Option<String>| NewReply {
        adapter: adapter.clone(),
        correlation_id: c,
        received_at_ms: 20,
        headers: vec![("content-type".into(), "application/json".into())],
        body: "{\"ok\":true}".into(),
    };
    let matched = ok(
        store
            .record_reply(reply(Some(format!("{adapter}-c0"))), None, 20)
            .await,
        "reply",
    );
    assert_eq!(matched.disposition, ReplyDisposition::Matched);
    assert_eq!(matched.message_id, Some(all[0]));
    assert_eq!(
        ok(store.message(all[0]).await, "get").0.state,
        MessageState::Delivered
    );
    let late = ok(
        store
            .record_reply(reply(Some(format!("{adapter}-c0"))), None, 21)
            .await,
        "late",
    );
    assert_eq!(late.disposition, ReplyDisposition::Late);
    let unmatched = ok(
        store
            .record_reply(reply(Some("nobody".into())), None, 22)
            .await,
        "unmatched",
    );
    assert_eq!(unmatched.disposition, ReplyDisposition::Unmatched);
    let rejected = ok(
        store
            .record_reply(
                reply(Some(format!("{adapter}-c1"))),
                Some(AttemptOutcome::Rejected {
                    reason: "out of stock".into(),
                }),
                23,
            )
            .await,
        "rejecting reply",
    );
    assert_eq!(rejected.disposition, ReplyDisposition::Matched);
    assert_eq!(
        ok(store.message(all[1]).await, "get").0.state,
        MessageState::Rejected
    );
    let listed = ok(store.replies(&adapter, None, 10).await, "replies");
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0].id, rejected.id, "newest first");
    let late_only = ok(
        store
            .replies(&adapter, Some(ReplyDisposition::Late), 10)
            .await,
        "late replies",
    );
    assert_eq!(late_only.len(), 1);
    let failure = Failure {
        case: CaseKey {
            stage: "reply".into(),
            error_class: "timeout".into(),
            status: None,
            ..case_key(prefix, &adapter, "timeout")
        },
        error: "no reply in time".into(),
    };
    assert_eq!(
        ok(
            store.expire_replies(&adapter, 999, failure.clone()).await,
            "expire"
        ),
        0,
        "not yet past the deadline"
    );
    assert_eq!(
        ok(
            store.expire_replies(&adapter, 1_000, failure.clone()).await,
            "expire"
        ),
        1
    );
    let (m, _) = ok(store.message(all[2]).await, "get");
    assert_eq!(m.state, MessageState::Failed);
    assert_eq!(m.case_id.as_deref(), Some(failure.case.id.as_str()));
    let late = ok(
        store
            .record_reply(reply(Some(format!("{adapter}-c2"))), None, 1_001)
            .await,
        "reply after the deadline",
    );
    assert_eq!(late.disposition, ReplyDisposition::Late);
    match store
        .record_reply(
            reply(None),
            Some(AttemptOutcome::Retry { next_at_ms: 1 }),
            1,
        )
        .await
    {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "settle"),
        other => panic!("a reply that retries: {other:?}"),
    }
}

/// Replay puts a settled message back, optionally with a new request; pending ones are
/// refused.
pub async fn replay_resends_or_remaps(store: &dyn Store, prefix: &str) {
    let adapter = format!("{prefix}-a");
    ok(
        store
            .lane_intake(&adapter, vec![new_message(&adapter, 0, None)], None, 1)
            .await,
        "intake",
    );
    let id = ids(store, &adapter, None).await[0];
    match store.replay_message(id, None, 2).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("replaying a pending message: {other:?}"),
    }
    ok(
        store
            .finish_attempt(id, attempt(Some(200)), AttemptOutcome::Delivered, 3)
            .await,
        "deliver",
    );
    let again = ok(store.replay_message(id, None, 4).await, "replay");
    assert_eq!(again.state, MessageState::Pending);
    assert_eq!(again.next_attempt_at_ms, Some(4));
    assert_eq!(again.request, Some(request("{\"sku\":0}")));
    ok(
        store
            .finish_attempt(id, attempt(Some(200)), AttemptOutcome::Delivered, 5)
            .await,
        "deliver",
    );
    let remapped = ok(
        store
            .replay_message(id, Some((request("{\"SKU\":\"00000\"}"), "h2".into())), 6)
            .await,
        "replay remapped",
    );
    assert_eq!(remapped.request, Some(request("{\"SKU\":\"00000\"}")));
    assert_eq!(remapped.adapter_hash, "h2");
    let (_, attempts) = ok(store.message(id).await, "get");
    assert_eq!(attempts.len(), 2, "earlier attempts stay on record");
}

/// Lane states are kept; messages are counted per state.
pub async fn lane_states_are_kept(store: &dyn Store, prefix: &str) {
    let lane = format!("{prefix}-a");
    ok(
        store.set_lane_state(&lane, LaneState::Paused, 1).await,
        "pause",
    );
    let states = ok(store.lane_states().await, "states");
    assert!(states.contains(&(lane.clone(), LaneState::Paused)));
    ok(
        store.set_lane_state(&lane, LaneState::Running, 2).await,
        "resume",
    );
    let states = ok(store.lane_states().await, "states");
    assert!(states.contains(&(lane.clone(), LaneState::Running)));
    assert!(!states.contains(&(lane.clone(), LaneState::Paused)));
    ok(
        store
            .lane_intake(&lane, vec![new_message(&lane, 0, None)], None, 1)
            .await,
        "intake",
    );
    let counts = ok(store.message_counts(Some(&lane)).await, "counts");
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].state, MessageState::Pending);
    assert_eq!(counts[0].count, 1);
}
