//! The dev runner's state directory (`DIR/.switchyard` unless `--state` says otherwise):
//!
//! ```text
//! data/                  the journal and the store (store.sqlite), as `switchyard serve` keeps them
//! services/<name>/       each service's database (db.sqlite)
//! snapshots/<name>/      saved copies of data/ and services/
//! ```
//!
//! Everything here runs while the platform and the services are stopped, so the copies are
//! consistent.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use switchyard_manifest::{DatabaseKind, Service};

pub struct StateDir {
    pub root: PathBuf,
}

/// One saved snapshot, as `snapshot ls` lists it.
#[derive(Debug, Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub bytes: u64,
    /// Seconds since the Unix epoch.
    pub saved_at: u64,
}

impl StateDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn services(&self) -> PathBuf {
        self.root.join("services")
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Removes the journal, the store and every service database (snapshots stay).
    pub fn wipe(&self) -> anyhow::Result<()> {
        for dir in [self.data(), self.services()] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
        }
        Ok(())
    }

    pub fn save(&self, name: &str) -> anyhow::Result<SnapshotInfo> {
        check_snapshot_name(name)?;
        let dest = self.snapshots().join(name);
        // Written beside, then renamed: a failed save (a full disk) leaves no half snapshot.
        let tmp = self.snapshots().join(format!(".{name}.partial"));
        staged(&tmp, |tmp| {
            for (from, to) in [(self.data(), "data"), (self.services(), "services")] {
                if from.exists() {
                    copy_tree(&from, &tmp.join(to))?;
                }
            }
            if dest.exists() {
                std::fs::remove_dir_all(&dest)
                    .with_context(|| format!("replacing {}", dest.display()))?;
            }
            std::fs::rename(tmp, &dest).with_context(|| format!("saving {}", dest.display()))
        })?;
        self.info(name)
    }

    /// Removes snapshot `name` (one whose PostgreSQL part could not be saved).
    pub fn discard(&self, name: &str) -> anyhow::Result<()> {
        check_snapshot_name(name)?;
        let dir = self.snapshots().join(name);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
    }

    pub fn restore(&self, name: &str) -> anyhow::Result<SnapshotInfo> {
        check_snapshot_name(name)?;
        let src = self.snapshots().join(name);
        if !src.is_dir() {
            let known: Vec<String> = self.list()?.into_iter().map(|s| s.name).collect();
            bail!(
                "no snapshot named {name:?} in {} (there are: {})",
                self.snapshots().display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            );
        }
        // Copied beside first: a copy that fails (a full disk) leaves the state as it was.
        let tmp = self.root.join(".restore.partial");
        staged(&tmp, |tmp| {
            for part in ["data", "services"] {
                if src.join(part).exists() {
                    copy_tree(&src.join(part), &tmp.join(part))?;
                }
            }
            self.wipe()?;
            for (part, to) in [("data", self.data()), ("services", self.services())] {
                if tmp.join(part).exists() {
                    std::fs::rename(tmp.join(part), &to)
                        .with_context(|| format!("restoring {}", to.display()))?;
                }
            }
            std::fs::remove_dir_all(tmp).with_context(|| format!("removing {}", tmp.display()))
        })?;
        self.info(name)
    }

    pub fn list(&self) -> anyhow::Result<Vec<SnapshotInfo>> {
        let dir = self.snapshots();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && e.path().is_dir() {
                out.push(self.info(&name)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn info(&self, name: &str) -> anyhow::Result<SnapshotInfo> {
        let dir = self.snapshots().join(name);
        let meta = std::fs::metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
        let saved_at = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Ok(SnapshotInfo {
            name: name.to_string(),
            bytes: tree_bytes(&dir),
            saved_at,
        })
    }

    /// Creates `service`'s SQLite database when it has one, applies its migrations, and
    /// returns its `DATABASE_URL` (PostgreSQL databases: [`Postgres`]).
    pub async fn prepare_sqlite(&self, service: &Service) -> anyhow::Result<Option<String>> {
        let Some(db) = service
            .database
            .as_ref()
            .filter(|d| d.kind == DatabaseKind::Sqlite)
        else {
            return Ok(None);
        };
        let dir = self.services().join(&service.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("db.sqlite");
        let url = format!("sqlite://{}", path.display());
        // WAL before anything else: the service's own connections find it set.
        let mut conn = connect(&format!("{url}?mode=rwc")).await?;
        sqlx::raw_sql("PRAGMA journal_mode=WAL")
            .execute(&mut conn)
            .await?;
        if let Some(migrations) = &db.migrations {
            migrate(&mut conn, migrations).await.with_context(|| {
                format!(
                    "service {}: migrations in {}",
                    service.name,
                    migrations.display()
                )
            })?;
        }
        Ok(Some(url))
    }
}

/// The services' PostgreSQL databases, on the server at `admin` (a URL whose database the
/// runner may use to create and drop others): one database per service, named after the
/// system and the service; a snapshot is a copy made with `CREATE DATABASE ... TEMPLATE`.
pub struct Postgres {
    pub admin: String,
    pub system: String,
}

impl Postgres {
    fn database_of(&self, service: &str) -> String {
        pg_name(&format!("sy_{}_{service}", self.system))
    }

    /// The copy of `service`'s database for `snapshot`: the database's name (cut short)
    /// and a hash of both, so it stays within PostgreSQL's 63 bytes.
    fn snapshot_of(&self, service: &str, snapshot: &str) -> String {
        let db = self.database_of(service);
        let h = xxhash_rust::xxh3::xxh3_64(format!("{db}/{snapshot}").as_bytes());
        format!("{}_s{h:016x}", &db[..db.len().min(44)])
    }

    fn url_of(&self, database: &str) -> anyhow::Result<String> {
        let mut u = reqwest::Url::parse(&self.admin)
            .with_context(|| format!("--postgres {:?} is not a URL", self.admin))?;
        u.set_path(database);
        Ok(u.to_string())
    }

    async fn admin(&self) -> anyhow::Result<sqlx::AnyConnection> {
        connect(&self.admin)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {} (--postgres)", self.admin))
    }

    async fn exists(conn: &mut sqlx::AnyConnection, db: &str) -> anyhow::Result<bool> {
        let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(db)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(found.is_some())
    }

    /// Creates the database of `service` if missing, applies its migrations, and returns
    /// its `DATABASE_URL`.
    pub async fn prepare(&self, service: &Service) -> anyhow::Result<Option<String>> {
        let Some(db) = service
            .database
            .as_ref()
            .filter(|d| d.kind == DatabaseKind::Postgres)
        else {
            return Ok(None);
        };
        let name = self.database_of(&service.name);
        let mut admin = self.admin().await?;
        if !Self::exists(&mut admin, &name).await? {
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .await?;
        }
        let url = self.url_of(&name)?;
        if let Some(migrations) = &db.migrations {
            let mut conn = connect(&url).await?;
            migrate(&mut conn, migrations).await.with_context(|| {
                format!(
                    "service {}: migrations in {}",
                    service.name,
                    migrations.display()
                )
            })?;
        }
        Ok(Some(url))
    }

    /// Drops the databases of `services` (reset; they are created again at start).
    pub async fn drop_all(&self, services: &[&Service]) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        for s in services {
            drop_database(&mut admin, &self.database_of(&s.name)).await?;
        }
        Ok(())
    }

    /// Copies each database of `services` as snapshot `snapshot` (replacing an older one).
    pub async fn save(&self, services: &[&Service], snapshot: &str) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        for s in services {
            let (db, copy) = (
                self.database_of(&s.name),
                self.snapshot_of(&s.name, snapshot),
            );
            copy_over(&mut admin, &db, &copy)
                .await
                .with_context(|| format!("saving database {db} of service {}", s.name))?;
        }
        Ok(())
    }

    /// Puts each database of `services` back to snapshot `snapshot` (one the snapshot
    /// lacks is dropped: it did not exist then).
    pub async fn restore(&self, services: &[&Service], snapshot: &str) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        for s in services {
            let (db, copy) = (
                self.database_of(&s.name),
                self.snapshot_of(&s.name, snapshot),
            );
            copy_over(&mut admin, &copy, &db)
                .await
                .with_context(|| format!("restoring database {db} of service {}", s.name))?;
        }
        Ok(())
    }
}

async fn drop_database(admin: &mut sqlx::AnyConnection, db: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(admin)
        .await?;
    Ok(())
}

/// Makes database `to` a copy of `from` (or absent, when `from` is).
async fn copy_over(admin: &mut sqlx::AnyConnection, from: &str, to: &str) -> anyhow::Result<()> {
    drop_database(admin, to).await?;
    if Postgres::exists(admin, from).await? {
        sqlx::raw_sql(&format!("CREATE DATABASE \"{to}\" TEMPLATE \"{from}\""))
            .execute(admin)
            .await?;
    }
    Ok(())
}

/// A PostgreSQL identifier from `s`: lowercase letters, digits and `_`, at most 63 bytes.
fn pg_name(s: &str) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    n.truncate(63);
    n
}

async fn connect(url: &str) -> anyhow::Result<sqlx::AnyConnection> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Applies every `*.sql` file of `dir` not applied yet, in name order, each in its own
/// transaction, recorded in `switchyard_migrations` (SQLite and PostgreSQL alike).
async fn migrate(conn: &mut sqlx::AnyConnection, dir: &Path) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS switchyard_migrations \
         (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .execute(&mut *conn)
    .await?;
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done: Option<(String,)> =
            sqlx::query_as("SELECT name FROM switchyard_migrations WHERE name = $1")
                .bind(&name)
                .fetch_optional(&mut *conn)
                .await?;
        if done.is_some() {
            continue;
        }
        let sql = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(&sql)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("applying {name}"))?;
        sqlx::query("INSERT INTO switchyard_migrations (name) VALUES ($1)")
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

pub fn check_snapshot_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "snapshot name {name:?}: use 1 to 100 characters from [A-Za-z0-9._-], not starting \
             with a dot"
        ))
    }
}

/// Runs `work` on a fresh directory `tmp`, and removes what is left of it if `work` fails.
fn staged(tmp: &Path, work: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = work(tmp);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    result
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e.with_context(|| format!("reading {}", from.display()))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e
            .file_type()
            .with_context(|| format!("reading {}", src.display()))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
        // Lock files and other specials are not state: left out.
    }
    Ok(())
}

fn tree_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => tree_bytes(&e.path()),
                Ok(_) => e.metadata().map_or(0, |m| m.len()),
                Err(_) => 0,
            })
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_checked() {
        for good in ["before-bug", "v1.2", "a_b"] {
            assert!(check_snapshot_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "x y", &"n".repeat(101)] {
            assert!(check_snapshot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn save_restore_round_trip_and_wipe() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path().to_path_buf());
        std::fs::create_dir_all(s.data().join("orders.v1")).unwrap();
        std::fs::write(s.data().join("orders.v1/seg.log"), b"one").unwrap();
        std::fs::create_dir_all(s.services().join("inventory")).unwrap();
        std::fs::write(s.services().join("inventory/db.sqlite"), b"db").unwrap();
        let saved = s.save("known").unwrap();
        assert_eq!(saved.bytes, 5);
        std::fs::write(s.data().join("orders.v1/seg.log"), b"changed").unwrap();
        std::fs::write(s.data().join("extra"), b"x").unwrap();
        s.restore("known").unwrap();
        assert_eq!(
            std::fs::read(s.data().join("orders.v1/seg.log")).unwrap(),
            b"one"
        );
        assert!(
            !s.data().join("extra").exists(),
            "restore replaces, not merges"
        );
        assert_eq!(s.list().unwrap().len(), 1);
        let e = s.restore("missing").unwrap_err().to_string();
        assert!(e.contains("known"), "{e}");
        // A snapshot that cannot be copied back leaves the state as it was, and no leftovers.
        std::fs::write(s.data().join("orders.v1/seg.log"), b"current").unwrap();
        std::fs::create_dir_all(s.snapshots().join("broken")).unwrap();
        std::fs::write(s.snapshots().join("broken/data"), b"a file, not a folder").unwrap();
        assert!(s.restore("broken").is_err());
        assert_eq!(
            std::fs::read(s.data().join("orders.v1/seg.log")).unwrap(),
            b"current"
        );
        assert!(!s.root.join(".restore.partial").exists());
        std::fs::remove_dir_all(s.snapshots().join("broken")).unwrap();
        s.wipe().unwrap();
        assert!(!s.data().exists() && !s.services().exists());
        assert_eq!(
            s.list().unwrap()[0].name,
            "known",
            "snapshots survive a wipe"
        );
    }
}
