//! Waiting for new records without polling: one tail watcher per topic and instance, an
//! ordered consumer over the whole topic that delivers headers only, raises each
//! partition's mark as messages are stored, and so wakes the partition's waiters. Appends
//! made by this instance raise the marks themselves as they are acknowledged.

use super::{NatsJournal, TopicState, names};
use crate::{Error, Result};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;
use switchyard_types::{Offset, Partition};

pub async fn wait_for(
    j: &NatsJournal,
    t: &Arc<TopicState>,
    partition: Partition,
    offset: Offset,
) -> Result<Offset> {
    let known = t.known(partition);
    if known >= offset && known > 0 {
        return Ok(known + 1);
    }
    let start = start_watcher(j, t).await?;
    if offset < start {
        // Stored before the watcher started: ask the stream's leader.
        let body = serde_json::json!({
            "seq": offset,
            "next_by_subj": names::partition_filter(&t.name, partition),
        });
        match j.inner.api.leader_get(&t.stream, body).await {
            Ok(Some(found)) => {
                t.mark(partition, found.seq);
                return Ok(t.known(partition) + 1);
            }
            Ok(None) => {}
            Err(e) => return Err(j.not_found_or(t, e).await),
        }
    }
    let mut mark = t.marks[partition as usize].subscribe();
    let mut gone = t.gone.subscribe();
    tokio::select! {
        seen = mark.wait_for(|&m| m >= offset && m > 0) => match seen {
            Ok(m) => Ok(*m + 1),
            Err(_) => Err(Error::TopicNotFound(t.name.clone())),
        },
        _ = gone.wait_for(|&g| g) => Err(Error::TopicNotFound(t.name.clone())),
    }
}

/// Starts the topic's watcher once; returns the first offset it will see.
async fn start_watcher(j: &NatsJournal, t: &Arc<TopicState>) -> Result<Offset> {
    t.watcher
        .get_or_try_init(|| async {
            let info = match j.inner.api.stream_info(&t.stream).await? {
                Some(info) => info,
                None => {
                    j.forget(&t.name);
                    return Err(Error::TopicNotFound(t.name.clone()));
                }
            };
            let start = info.state.last_sequence + 1;
            let weak = Arc::downgrade(t);
            tokio::spawn(watch(
                j.clone(),
                weak,
                t.stream.clone(),
                t.name.clone(),
                start,
            ));
            Ok(start)
        })
        .await
        .copied()
}

/// The watcher task: follows the topic from `next` until the topic is gone or nobody holds
/// its state any more. Recreates its consumer from where it stopped after any failure.
async fn watch(
    j: NatsJournal,
    topic: std::sync::Weak<TopicState>,
    stream: String,
    name: switchyard_types::TopicName,
    mut next: Offset,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        let Some(gone) = topic.upgrade().map(|t| t.gone.subscribe()) else {
            return;
        };
        if *gone.borrow() {
            return;
        }
        if let Follow::Stop = follow(&j, &topic, &stream, &name, &mut next, gone).await {
            return;
        }
        // Failed: end only once the topic is known to be gone; otherwise try again.
        let Some(t) = topic.upgrade() else {
            return;
        };
        if gone_from_server(&j, &t).await {
            t.gone.send_replace(true);
            return;
        }
        drop(t);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

enum Follow {
    Stop,
    Failed,
}

async fn follow(
    j: &NatsJournal,
    topic: &std::sync::Weak<TopicState>,
    stream: &str,
    name: &switchyard_types::TopicName,
    next: &mut Offset,
    mut gone: tokio::sync::watch::Receiver<bool>,
) -> Follow {
    let js = &j.inner.api.jetstream();
    // The server announces a deletion: waiters end at once, on every instance.
    let deleted = async {
        match js
            .client()
            .subscribe(format!("$JS.EVENT.ADVISORY.STREAM.DELETED.{stream}"))
            .await
        {
            Ok(mut advisories) => {
                advisories.next().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    // An advisory is sent at most once: one sent while this instance was reconnecting, or
    // before its subscription reached the server, is lost, and the ordered consumer below
    // retries its vanished stream for ever. So while anyone waits on the topic, the stream
    // is also looked up every TOPIC_TTL (the bound a deletion by another instance already
    // has on this instance's cached partition count).
    let vanished = async {
        loop {
            tokio::time::sleep(super::TOPIC_TTL).await;
            let Some(t) = topic.upgrade() else {
                return;
            };
            let waited_on = t.marks.iter().any(|m| m.receiver_count() > 0);
            if waited_on && gone_from_server(j, &t).await {
                return;
            }
        }
    };
    let run = async {
        let stream = js.get_stream_no_info(stream).await.ok()?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: names::all_subjects(name),
                headers_only: true,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: *next,
                },
                ..Default::default()
            })
            .await
            .ok()?;
        let mut messages = consumer.messages().await.ok()?;
        while let Some(m) = messages.next().await {
            let m = m.ok()?;
            let Ok(info) = m.info() else { continue };
            let seq = info.stream_sequence;
            let Some(t) = topic.upgrade() else {
                return Some(());
            };
            if let Some(p) = names::partition_of_subject(m.subject.as_str()) {
                t.mark(p, seq);
            }
            *next = seq + 1;
        }
        None
    };
    tokio::select! {
        r = run => match r {
            Some(()) => Follow::Stop,
            None => Follow::Failed,
        },
        _ = gone.wait_for(|&g| g) => Follow::Stop,
        () = deleted => {
            if let Some(t) = topic.upgrade() {
                t.gone.send_replace(true);
            }
            Follow::Stop
        }
        () = vanished => {
            if let Some(t) = topic.upgrade() {
                t.gone.send_replace(true);
            }
            Follow::Stop
        }
    }
}

/// Whether the topic `t` describes is gone from the server: its stream deleted, or deleted
/// and created again (another creation time, so another topic). `false` while the server
/// cannot say. A gone state ends every wait on it with `TopicNotFound`, and the cache looks
/// the topic up again (only the state itself is marked: the cache may already hold the new
/// topic's).
async fn gone_from_server(j: &NatsJournal, t: &TopicState) -> bool {
    match j.inner.api.stream_info(&t.stream).await {
        Ok(None) => true,
        Ok(Some(info)) => info.created != t.created,
        Err(_) => false,
    }
}
