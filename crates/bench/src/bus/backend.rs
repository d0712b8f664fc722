//! The journal the Switchyard side of `bus` runs on: the file journal in a fresh directory,
//! a private NATS JetStream server started per repeat (`--journal nats`), or a given NATS
//! cluster (`--journal nats://...`). Each repeat gets a topic of its own and leaves nothing
//! behind.

use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use switchyard_journal::file::FileJournal;
use switchyard_journal::nats::{NatsJournal, NatsOptions};
use switchyard_journal::nats_server::{self, NatsBinary, NatsServer, Sync};
use switchyard_journal::{Durability, Journal, TopicName};

/// `--journal`: `file`, `nats` (a private server per repeat) or `nats://host:port[,...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalArg {
    File,
    PrivateNats,
    Nats(NatsOptions),
}

impl FromStr for JournalArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "file" => Ok(Self::File),
            "nats" => Ok(Self::PrivateNats),
            url if url.starts_with("nats://") => NatsOptions::from_url(url)
                .map(Self::Nats)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "{other:?}: expected file, nats (a private server) or nats://host:port[,...]"
            )),
        }
    }
}

impl JournalArg {
    /// How the report names the Switchyard system on this journal.
    pub fn system(&self) -> &'static str {
        match self {
            Self::File => "switchyard",
            Self::PrivateNats | Self::Nats(_) => "switchyard-on-nats",
        }
    }

    /// For the notes: what the journal is.
    pub fn describe(&self) -> String {
        match self {
            Self::File => "file journal".into(),
            Self::PrivateNats => "NATS JetStream journal on a private nats-server per repeat \
                 (sync_interval: always for durability always, the default sync for os; 1 \
                 replica)"
                .into(),
            Self::Nats(o) => format!(
                "NATS JetStream journal on {} (server sync {}, {} replica(s))",
                o.servers.join(","),
                o.server_sync,
                o.replicas
            ),
        }
    }
}

/// One repeat's journal and topic.
pub struct Opened {
    pub journal: Arc<dyn Journal>,
    pub topic: TopicName,
    /// The private server's process, for the CPU column.
    pub server_pid: Option<u32>,
    held: Held,
}

enum Held {
    File(FileJournal, tempfile::TempDir),
    Nats(NatsJournal, Option<(NatsServer, tempfile::TempDir)>),
}

/// Opens the journal for one repeat of a case with `durability`. `bin` is needed for
/// `PrivateNats`.
pub async fn open(
    arg: &JournalArg,
    base: &Path,
    bin: Option<&NatsBinary>,
    durability: Durability,
    topic: &str,
) -> Result<Opened> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-bus-")
        .tempdir_in(base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    match arg {
        JournalArg::File => {
            let journal = FileJournal::open(dir.path())
                .with_context(|| format!("opening a file journal in {}", dir.path().display()))?;
            Ok(Opened {
                journal: Arc::new(journal.clone()),
                topic: TopicName::new(topic)?,
                server_pid: None,
                held: Held::File(journal, dir),
            })
        }
        JournalArg::PrivateNats => {
            let Some(bin) = bin else {
                bail!(
                    "--journal nats needs a nats-server: {}",
                    nats_server::find(None)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                );
            };
            let (sync, query) = match durability {
                Durability::Always => (Sync::Always, "?sync=always"),
                _ => (Sync::Default, ""),
            };
            let server = NatsServer::start(bin, dir.path(), sync).await?;
            let options = NatsOptions::from_url(&format!("{}{query}", server.url))?;
            let journal = NatsJournal::connect(options).await?;
            Ok(Opened {
                journal: Arc::new(journal.clone()),
                topic: TopicName::new(topic)?,
                server_pid: server.pid(),
                held: Held::Nats(journal, Some((server, dir))),
            })
        }
        JournalArg::Nats(options) => {
            let journal = NatsJournal::connect(options.clone())
                .await
                .context("--journal: connecting to NATS")?;
            // A shared cluster: a topic of this run's own.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            Ok(Opened {
                journal: Arc::new(journal.clone()),
                topic: TopicName::new(format!("{topic}-{nanos:x}"))?,
                server_pid: None,
                held: Held::Nats(journal, None),
            })
        }
    }
}

impl Opened {
    /// Closes the journal, removes the topic from a shared cluster, stops a private server
    /// and removes the data.
    pub async fn close(self) -> Result<()> {
        match self.held {
            Held::File(j, dir) => {
                j.close().await.context("closing the journal")?;
                drop(j);
                dir.close().context("removing the benchmark directory")?;
            }
            Held::Nats(j, private) => {
                if private.is_none() {
                    j.delete_topic(&self.topic)
                        .await
                        .with_context(|| format!("deleting the bench topic {}", self.topic))?;
                }
                j.close().await.context("closing the NATS journal")?;
                if let Some((server, dir)) = private {
                    drop(server);
                    dir.close().context("removing the benchmark directory")?;
                }
            }
        }
        Ok(())
    }
}
