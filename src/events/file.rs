//! Events as JSON lines in a file: the default sink of a single node, and easy to tail.

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;

use super::{EventSink, NotDelivered};
use crate::domain::EventRecord;

pub struct FileSink {
    path: PathBuf,
}

impl FileSink {
    pub fn new(path: PathBuf) -> FileSink {
        FileSink { path }
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
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            // One write per batch: lines of one batch never interleave with another's.
            file.write_all(&lines)?;
            file.sync_data()
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
