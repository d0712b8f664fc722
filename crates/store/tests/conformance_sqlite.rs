//! The conformance suite on the SQLite backend: file-backed (in a temporary directory) and
//! in memory.

use std::sync::Arc;
use switchyard_store::Store;
use switchyard_store::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_database_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("store.db"))
        .await
        .expect("open");
    let store: Arc<dyn Store> = Arc::new(store);
    switchyard_store::conformance::run_all(store.clone()).await;
    // Every case cleans up after itself.
    assert!(store.list_subscriptions().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("open"));
    switchyard_store::conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_twice_on_one_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    for _ in 0..2 {
        let store = SqliteStore::open(&path).await.expect("open");
        switchyard_store::conformance::run_all(Arc::new(store.clone())).await;
        store.close().await;
    }
}
