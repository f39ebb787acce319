//! Events as JSON lines in a file: the default sink of a single node, and easy to tail.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use super::{EventSink, NotDelivered};
use crate::domain::EventRecord;

pub struct FileSink {
    path: Arc<Path>,
    /// Whether the file is known to end with a whole line: checked before the first write
    /// of a run and after a failed write, either of which may have left a line torn.
    whole: Arc<AtomicBool>,
}

impl FileSink {
    pub fn new(path: PathBuf) -> FileSink {
        FileSink {
            path: path.into(),
            whole: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl EventSink for FileSink {
    async fn deliver(&self, batch: &[EventRecord]) -> Result<(), NotDelivered> {
        let mut lines = Vec::with_capacity(batch.len() * 200);
        for record in batch {
            serde_json::to_writer(&mut lines, record)
                .map_err(|e| NotDelivered::all(batch, e.to_string()))?;
            lines.push(b'\n');
        }
        let (path, whole) = (Arc::clone(&self.path), Arc::clone(&self.whole));
        let written = tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)?;
            if !whole.load(Ordering::Acquire) {
                terminate_torn_line(&mut file, &path)?;
                whole.store(true, Ordering::Release);
            }
            // One write per batch: lines of one batch never interleave with another's.
            let appended = file.write_all(&lines).and_then(|()| file.sync_data());
            if appended.is_err() {
                // Part of the batch may be in the file, its last line cut short.
                whole.store(false, Ordering::Release);
            }
            appended
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NotDelivered::all(
                batch,
                format!("{}: {e}", self.path.display()),
            )),
            Err(e) => Err(NotDelivered::all(batch, e.to_string())),
        }
    }

    fn name(&self) -> &'static str {
        "file"
    }
}

/// A file that does not end with a newline holds a line torn by a crash mid-write (or a
/// failed write): ends it, so that it stays one unreadable line and the next event starts
/// a line of its own instead of continuing it.
fn terminate_torn_line(file: &mut File, path: &Path) -> io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let line = count_newlines(file)? + 1;
    file.write_all(b"\n")?;
    file.sync_data()?;
    tracing::warn!(
        file = %path.display(),
        line,
        "the last event line was torn (the node stopped mid-write); ended it there, so it is one unreadable line and the events after it are whole"
    );
    Ok(())
}

fn count_newlines(file: &mut File) -> io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut newlines = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(newlines);
        }
        newlines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AssetId, BiEvent, Timestamp, UserId};

    fn record() -> EventRecord {
        EventRecord::new(
            BiEvent::AddedToWatchlist {
                asset_id: AssetId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            },
            UserId::parse("u").unwrap(),
            Timestamp(0),
            uuid::Uuid::new_v4(),
        )
    }

    fn parsed_lines(path: &Path) -> (usize, usize) {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let good = lines
            .iter()
            .filter(|l| serde_json::from_str::<EventRecord>(l).is_ok())
            .count();
        (good, lines.len() - good)
    }

    #[tokio::test]
    async fn an_event_after_a_torn_line_starts_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let whole = serde_json::to_string(&record()).unwrap();
        // The previous run died mid-write: one whole line, then half of one.
        std::fs::write(&path, format!("{whole}\n{}", &whole[..whole.len() / 2])).unwrap();
        let sink = FileSink::new(path.clone());
        sink.deliver(&[record(), record()]).await.unwrap();
        sink.deliver(&[record()]).await.unwrap();
        assert_eq!(parsed_lines(&path), (4, 1), "only the torn line is lost");
        assert!(std::fs::read(&path).unwrap().ends_with(b"\n"));
    }

    #[tokio::test]
    async fn a_whole_file_is_appended_to_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let sink = FileSink::new(path.clone());
        sink.deliver(&[record()]).await.unwrap();
        let again = FileSink::new(path.clone());
        again.deliver(&[record()]).await.unwrap();
        assert_eq!(parsed_lines(&path), (2, 0));
    }
}
