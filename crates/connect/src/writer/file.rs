//! The file writer: each request becomes one file in the adapter's directory, written
//! atomically (a temporary file, `fsync`, rename into place, `fsync` of the directory), so
//! a vendor that picks files up never sees half of one. The name comes from a template
//! over the event, so it is checked: one path component of `[A-Za-z0-9._-]`, no leading
//! dot (no `..`, no `/`, no hidden files), at most 200 characters.

use super::{Sent, Writer, class};
use crate::adapter::Answer;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use switchyard_store::connect::OutboundRequest;

#[derive(Debug)]
pub struct FileWriter {
    dir: PathBuf,
}

impl FileWriter {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

/// Checks a rendered file name (see the module docs).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err(format!("file name {name:?}: 1 to 200 characters"));
    }
    if name.starts_with('.') {
        return Err(format!("file name {name:?} must not start with `.`"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "file name {name:?} holds {c:?}: only A-Z, a-z, 0-9, `.`, `_` and `-` (no paths)"
        ));
    }
    Ok(())
}

fn write_atomically(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{name}-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[async_trait::async_trait]
impl Writer for FileWriter {
    async fn send(&self, request: &OutboundRequest) -> Sent {
        if let Err(message) = check_name(&request.target) {
            return Sent::Failed {
                class: class::IO,
                message,
            };
        }
        let dir = self.dir.clone();
        let name = request.target.clone();
        let body = request.body.clone().into_bytes();
        let done = tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &body)).await;
        match done {
            Ok(Ok(())) => Sent::Answer(Answer {
                status: None,
                headers: Vec::new(),
                body: String::new(),
            }),
            Ok(Err(e)) => Sent::Failed {
                class: class::IO,
                message: format!("writing {}: {e}", self.dir.join(&request.target).display()),
            },
            Err(e) => Sent::Failed {
                class: class::IO,
                message: format!("the write task failed: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_data_cannot_leave_the_directory() {
        for bad in ["", "../x", "a/b", ".hidden", "..", "a b", "x\0y", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?} must be refused");
        }
        for good in ["00123-abc.csv", "order_1.txt", "A.B-c"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[tokio::test]
    async fn a_file_appears_whole_and_nothing_else_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let w = FileWriter::new(out.clone());
        let req = OutboundRequest {
            target: "r-1.txt".into(),
            method: None,
            headers: vec![],
            content_type: "text/plain".into(),
            body: "hello\n".into(),
        };
        assert!(matches!(w.send(&req).await, Sent::Answer(_)));
        assert_eq!(
            std::fs::read_to_string(out.join("r-1.txt")).expect("read"),
            "hello\n"
        );
        let names: Vec<_> = std::fs::read_dir(&out)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        let bad = OutboundRequest {
            target: "../escape".into(),
            ..req
        };
        assert!(matches!(
            w.send(&bad).await,
            Sent::Failed { class: "io", .. }
        ));
        assert!(!dir.path().join("escape").exists());
    }
}
