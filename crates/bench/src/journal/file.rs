//! The embedded file journal, in process.

use crate::ids::ulid_like;
use crate::load::{self, Load, Measured, OpSource, static_payload};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use switchyard_journal::file::FileJournal;
use switchyard_journal::{Durability, Journal, Record, Timestamp, TopicConfig, TopicName};

pub const SYSTEM: &str = "switchyard";

struct Appends {
    journal: FileJournal,
    topic: TopicName,
    payload: Bytes,
    millis: u64,
}

impl OpSource for Appends {
    type Op = BoxFuture<'static, Result<()>>;

    fn op(self: &Arc<Self>, appender: usize, seq: u64) -> Self::Op {
        let this = self.clone();
        Box::pin(async move {
            let record = Record::new(this.payload.clone()).with_id(ulid_like(
                this.millis,
                appender as u64,
                seq,
            ));
            let acks = this
                .journal
                .append(&this.topic, 0, vec![record], None)
                .await?;
            if acks.first().is_none_or(|a| a.duplicate) {
                bail!("append of a fresh id was not acknowledged as new: {acks:?}");
            }
            Ok(())
        })
    }
}

/// One repeat: a fresh journal in a fresh directory under `base`.
pub async fn run_once(
    base: &Path,
    durability: Durability,
    payload: usize,
    load: Load,
) -> Result<Measured> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-journal-")
        .tempdir_in(base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    let journal = FileJournal::open(dir.path())
        .with_context(|| format!("opening a file journal in {}", dir.path().display()))?;
    let topic = TopicName::new("bench.events.v1")?;
    let config = TopicConfig {
        partitions: 1,
        durability,
        ..TopicConfig::default()
    };
    journal.create_topic(&topic, config).await?;
    let source = Arc::new(Appends {
        journal: journal.clone(),
        topic,
        payload: static_payload(payload),
        millis: Timestamp::now().millis().max(0) as u64,
    });
    let measured = load::run(
        Load {
            drain: true,
            ..load
        },
        source,
        None,
    )
    .await;
    journal.close().await.context("closing the journal")?;
    drop(journal);
    dir.close().context("removing the benchmark directory")?;
    measured
}
