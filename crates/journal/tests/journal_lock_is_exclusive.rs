//! The journal directory is exclusive: a second open fails with `Error::Locked`, from the
//! same process or from another one, until the holder closes it or goes away.
//!
//! A file of its own because it starts a child process: a process started while another
//! test of the same binary holds a journal open would inherit that journal's lock for the
//! moment between fork and exec, and make that test's reopen fail spuriously.

use std::path::Path;
use switchyard_journal::Error;
use switchyard_journal::file::FileJournal;

fn open(dir: &Path) -> FileJournal {
    FileJournal::open(dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// A second open of a locked directory fails with [`Error::Locked`], in this process and
/// from another one; after close (or once the holder is gone) it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_directory_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = open(dir.path());
    match FileJournal::open(dir.path()) {
        Err(Error::Locked { path }) => {
            assert!(
                path.starts_with(dir.path()),
                "Locked names the directory: {}",
                path.display()
            );
        }
        other => panic!("second open in the same process: expected Locked, got {other:?}"),
    }
    j.close().await.expect("close");
    drop(j);
    let j2 = open(dir.path());
    drop(j2);

    // Another process holds it.
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOCK_CHILD_ENV, dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lock holder");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).expect("read child");
        assert!(n > 0, "the lock holder exited before taking the lock");
        if line.trim_end().ends_with("locked") {
            break;
        }
    }
    match FileJournal::open(dir.path()) {
        Err(Error::Locked { .. }) => {}
        other => panic!("open while another process holds the journal: got {other:?}"),
    }
    drop(child.stdin.take()); // The holder exits when its stdin closes.
    let status = child.wait().expect("wait");
    assert!(status.success(), "lock holder: {status}");
    let j = open(dir.path());
    j.close().await.expect("close");
}

const LOCK_CHILD_ENV: &str = "SWITCHYARD_LOCK_CHILD_DIR";

/// Not a test on its own: the process `a_locked_directory_cannot_be_opened_twice` starts.
/// Opens the journal, says so, and holds it until stdin closes.
#[test]
fn lock_holder_child() {
    let Some(dir) = std::env::var_os(LOCK_CHILD_ENV) else {
        return;
    };
    let j = FileJournal::open(&dir).expect("child open");
    println!("locked");
    let mut sink = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
    drop(j);
}
