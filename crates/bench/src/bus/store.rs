//! The store the Switchyard side of `bus` runs on (only publish-to-delivery touches it):
//! SQLite in each repeat's temporary directory (the default), or a PostgreSQL database
//! (`--store postgres://...`), where each repeat uses a subscription of its own and deletes
//! it at the end.

use anyhow::{Context as _, Result};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use switchyard_store::Store;
use switchyard_store::postgres::{PostgresOptions, PostgresStore};
use switchyard_store::sqlite::SqliteStore;

/// `--store`: `sqlite` or `postgres://...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreArg {
    Sqlite,
    Postgres(PostgresOptions),
}

impl FromStr for StoreArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                PostgresOptions::from_url(url)
                    .map(Self::Postgres)
                    .map_err(|e| e.to_string())
            }
            other => Err(format!(
                "{:?}: expected sqlite or postgres://[user[:password]@]host[:port]/database",
                switchyard_store::postgres::redact(other)
            )),
        }
    }
}

impl StoreArg {
    /// How the report names the system of the delivery case, given the journal's name.
    pub fn system(&self, journal_system: &'static str) -> &'static str {
        match (self, journal_system) {
            (Self::Sqlite, s) => s,
            (Self::Postgres(_), "switchyard-on-nats") => "switchyard-on-nats-pg-store",
            (Self::Postgres(_), _) => "switchyard-pg-store",
        }
    }

    /// For the notes: what the store is.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite => "SQLite store in the repeat's directory".into(),
            Self::Postgres(o) => {
                format!("PostgreSQL store {} ({} connections)", o.redacted(), o.pool)
            }
        }
    }
}

/// One repeat's store.
pub enum Opened {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl Opened {
    pub async fn open(arg: &StoreArg, dir: &Path) -> Result<Self> {
        Ok(match arg {
            StoreArg::Sqlite => Self::Sqlite(Arc::new(
                SqliteStore::open(dir.join("store.sqlite"))
                    .await
                    .context("opening the store")?,
            )),
            StoreArg::Postgres(o) => {
                Self::Postgres(Arc::new(PostgresStore::open(o).await.context("--store")?))
            }
        })
    }

    pub fn shared(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => s.clone(),
            Self::Postgres(s) => s.clone(),
        }
    }

    /// Deletes the repeat's subscription (a shared database keeps nothing of the run) and
    /// closes the store.
    pub async fn close(self, subscription: &str) -> Result<()> {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => {
                let deleted = s.delete_subscription(subscription).await;
                s.close().await;
                match deleted {
                    Ok(()) | Err(switchyard_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e).context("deleting the bench's subscription"),
                }
            }
        }
        Ok(())
    }
}
