//! The `unrouted` lane: an event of a type some adapter of its topic takes, which no
//! adapter's route took, is recorded (state `unmatched`, in a case of stage `route`)
//! instead of vanishing. It has its own cursor per topic and partition, like any lane,
//! and starts at the end of a topic it has never read.

use crate::adapter::{Adapter, case_key, stage};
use crate::config::CasePart;
use crate::lane::{LazyCursor, lazy_due, now_ms};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_journal::{Journal, ReadLimits};
use switchyard_store::connect::{Failure, MessageState, NewMessage, UNROUTED_LANE};
use switchyard_store::{Cursor, Store};
use switchyard_types::{StoredRecord, TopicName};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Runs until `stop`: one reader per partition of every topic some adapter reads.
pub(crate) async fn run(
    adapters: Vec<Arc<Adapter>>,
    journal: Arc<dyn Journal>,
    store: Arc<dyn Store>,
    stop: watch::Receiver<bool>,
) {
    let mut by_topic: BTreeMap<TopicName, Vec<Arc<Adapter>>> = BTreeMap::new();
    for a in adapters {
        by_topic.entry(a.topic.clone()).or_default().push(a);
    }
    let mut set = JoinSet::new();
    for (topic, adapters) in by_topic {
        set.spawn(topic_task(
            topic,
            Arc::new(adapters),
            journal.clone(),
            store.clone(),
            stop.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
}

async fn topic_task(
    topic: TopicName,
    adapters: Arc<Vec<Arc<Adapter>>>,
    journal: Arc<dyn Journal>,
    store: Arc<dyn Store>,
    mut stop: watch::Receiver<bool>,
) {
    // A topic created after the lane started is read from its beginning.
    let mut appeared_later = false;
    let info = loop {
        if let Ok(info) = journal.describe_topic(&topic).await {
            break info;
        }
        appeared_later = true;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    };
    let mut set = JoinSet::new();
    for p in &info.partitions {
        set.spawn(partition_task(
            topic.clone(),
            p.partition,
            if appeared_later { 0 } else { p.next_offset },
            adapters.clone(),
            journal.clone(),
            store.clone(),
            stop.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
}

/// The unmatched message for `record`, when it is an event of a type some adapter of
/// the topic takes and no adapter's route takes it. A route that fails is the adapter's
/// own failure (its lane records it), so it counts as taken here.
fn unmatched(
    adapters: &[Arc<Adapter>],
    topic: &str,
    partition: u32,
    record: &StoredRecord,
) -> Option<NewMessage> {
    let event: Value = match serde_json::from_slice(&record.payload) {
        Ok(v @ Value::Object(_)) => v,
        _ => return None,
    };
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    let wanting: Vec<_> = adapters
        .iter()
        .filter(|a| a.wants_type(event_type))
        .collect();
    if wanting.is_empty() || wanting.iter().any(|a| a.takes(&event) != Ok(false)) {
        return None;
    }
    let names: Vec<&str> = wanting.iter().map(|a| a.name.as_str()).collect();
    let error = format!(
        "no route took this {event_type} event (adapters of {topic}: {})",
        names.join(", ")
    );
    let case = case_key(
        UNROUTED_LANE,
        "-",
        &[CasePart::Stage, CasePart::ErrorClass, CasePart::Message],
        stage::ROUTE,
        "unmatched",
        None,
        &format!("no route took a {event_type} event of {topic}"),
    );
    Some(NewMessage {
        adapter: UNROUTED_LANE.to_owned(),
        adapter_hash: "-".to_owned(),
        topic: topic.to_owned(),
        partition,
        offset: record.offset,
        event_id: event
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{partition}-{}", record.offset), str::to_owned),
        event_type: event_type.to_owned(),
        partition_key: None,
        event,
        request: None,
        correlation_id: None,
        state: MessageState::Unmatched,
        failure: Some(Failure { case, error }),
    })
}

/// Events read per intake.
const BATCH: usize = 256;

async fn partition_task(
    topic: TopicName,
    partition: u32,
    end: u64,
    adapters: Arc<Vec<Arc<Adapter>>>,
    journal: Arc<dyn Journal>,
    store: Arc<dyn Store>,
    stop: watch::Receiver<bool>,
) {
    let mut lazy = LazyCursor::new();
    let t = (topic, partition, end);
    read_partition(t, adapters, journal, &store, stop, &mut lazy).await;
    lazy.flush(&*store, UNROUTED_LANE).await;
}

async fn read_partition(
    (topic, partition, end): (TopicName, u32, u64),
    adapters: Arc<Vec<Arc<Adapter>>>,
    journal: Arc<dyn Journal>,
    store: &Arc<dyn Store>,
    mut stop: watch::Receiver<bool>,
    lazy: &mut LazyCursor,
) {
    let mut next = loop {
        match store.lane_cursors(UNROUTED_LANE).await {
            Ok(cs) => match cs
                .into_iter()
                .find(|c| c.topic == topic.as_str() && c.partition == partition)
            {
                Some(c) => break c.offset,
                None => {
                    if store
                        .set_lane_cursor(UNROUTED_LANE, Cursor::new(topic.as_str(), partition, end))
                        .await
                        .is_ok()
                    {
                        break end;
                    }
                }
            },
            Err(e) => tracing::warn!("unrouted lane: reading cursors: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let limits = ReadLimits {
            max_records: BATCH,
            ..ReadLimits::default()
        };
        let batch = tokio::select! {
            b = journal.read(&topic, partition, next, limits) => b,
            _ = stop.changed() => return,
        };
        let Ok(batch) = batch else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                _ = stop.changed() => return,
            }
        };
        if batch.records.is_empty() {
            if !wait_for_more(
                &journal,
                store,
                &topic,
                partition,
                batch.next_offset,
                &mut stop,
                lazy,
            )
            .await
            {
                return;
            }
            continue;
        }
        // At the partition's end: wait for more rather than read again for nothing.
        let at_end = batch.records.len() < BATCH;
        let messages: Vec<NewMessage> = batch
            .records
            .iter()
            .filter_map(|r| unmatched(&adapters, topic.as_str(), partition, r))
            .collect();
        let cursor = Cursor::new(topic.as_str(), partition, batch.next_offset);
        // Most events are routed: their cursor is written lazily.
        if messages.is_empty() && lazy.defer(&cursor) {
            next = batch.next_offset;
        } else {
            match store
                .lane_intake(UNROUTED_LANE, messages, Some(cursor), now_ms())
                .await
            {
                Ok(_) => {
                    lazy.written();
                    next = batch.next_offset;
                }
                Err(e) => {
                    tracing::warn!("unrouted lane: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            }
        }
        if at_end && !wait_for_more(&journal, store, &topic, partition, next, &mut stop, lazy).await
        {
            return;
        }
    }
}

/// Waits until the partition holds records from `next`, or a deferred cursor is due (then
/// writes it). `false` when the lane stops.
async fn wait_for_more(
    journal: &Arc<dyn Journal>,
    store: &Arc<dyn Store>,
    topic: &TopicName,
    partition: u32,
    next: u64,
    stop: &mut watch::Receiver<bool>,
    lazy: &mut LazyCursor,
) -> bool {
    let due = lazy.due();
    tokio::select! {
        _ = journal.wait_for(topic, partition, next) => {}
        _ = lazy_due(due.as_ref()) => {
            if let Some((cursor, _)) = due {
                match store.lane_intake(UNROUTED_LANE, Vec::new(), Some(cursor), now_ms()).await {
                    Ok(_) => lazy.written(),
                    Err(e) => tracing::warn!("unrouted lane: {e}"),
                }
            }
        }
        _ = stop.changed() => return false,
    }
    true
}
