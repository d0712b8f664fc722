//! A PostgreSQL database of a test's own (feature `test-util`): created on the server that
//! `SWITCHYARD_TEST_POSTGRES` names (default [`DEFAULT_ADMIN_URL`]) as `sy_test_<random>`,
//! dropped by [`TestDatabase::drop_it`]. Tests of the store, the CLI and the bench use it.

use sqlx::{Connection as _, Executor as _, PgConnection};

/// The server tests use when `SWITCHYARD_TEST_POSTGRES` is not set: a database any user
/// may connect to, on loopback, as the trust-authenticated `postgres` user.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL tests connect to (to create and drop their databases).
pub fn admin_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A fresh database; `url` reaches it with the admin URL's user and server.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDatabase {
    /// Creates `sy_test_<random>`. `None` (the test prints why and skips) when the server
    /// cannot be reached, unless `SWITCHYARD_REQUIRE_SERVICES=1`, which makes that a panic.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let admin = admin_url();
        let mut conn = match PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                let shown = super::redact(&admin);
                assert!(
                    std::env::var("SWITCHYARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "{test}: PostgreSQL is required at {shown} (SWITCHYARD_REQUIRE_SERVICES=1): {e}"
                );
                eprintln!("{test}: skipped: no PostgreSQL at {shown} ({e})");
                return None;
            }
        };
        let name = format!("sy_test_{}_{:016x}", std::process::id(), random());
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap_or_else(|e| panic!("{test}: CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        Some(TestDatabase {
            url: with_database(&admin, &name),
            name,
            admin,
        })
    }

    /// The store's options for this database, with `pool` connections.
    pub fn options(&self, pool: u32) -> super::PostgresOptions {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        super::PostgresOptions::from_url(&format!("{}{sep}pool={pool}", self.url))
            .unwrap_or_else(|e| panic!("options of {}: {e}", self.name))
    }

    /// Drops the database (closing any connection still open to it).
    pub async fn drop_it(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name).as_str())
                .await;
            let _ = conn.close().await;
        }
    }
}

/// `url` with its database replaced by `name` (query kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let root = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// 64 random bits, from the standard library's randomly keyed hasher and the clock.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h", "x"), "postgres://h/x");
    }
}
