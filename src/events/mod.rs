//! BI events: a bounded in-memory outbox in front of a sink (SQS, or a JSON-lines file).
//!
//! Producers reserve room before they change state, so an event is never dropped for lack
//! of space: when the outbox is full, the change is refused or postponed instead. A single
//! delivery task sends in batches and retries with backoff while the sink is down.
//!
//! Every queued event is also appended to a journal in the data dir (`outbox.spool`, JSON
//! lines), compacted as events are delivered, so that what a node had not delivered when
//! it stopped, gracefully or by a crash, is sent after its next start. Delivery is
//! therefore at least once: an event delivered just before a crash, before the journal
//! was compacted, is sent again (consumers deduplicate by its `id`). An append is a
//! write to the page cache, with no fsync: it survives a crash of the process, not of
//! the machine.

pub mod file;
pub mod sqs;

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::domain::EventRecord;
use crate::domain::events::BATCH;
use crate::retry::backoff;
use crate::telemetry::Metrics;

/// Some (or all) of a batch was not delivered.
#[derive(Debug)]
pub struct NotDelivered {
    /// Indexes into the batch of the records to retry.
    pub failed: Vec<usize>,
    pub reason: String,
}

impl NotDelivered {
    pub fn all(batch: &[EventRecord], reason: impl Into<String>) -> NotDelivered {
        NotDelivered {
            failed: (0..batch.len()).collect(),
            reason: reason.into(),
        }
    }
}

#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Delivers up to `BATCH` records, at least once each.
    async fn deliver(&self, batch: &[EventRecord]) -> Result<(), NotDelivered>;
    fn name(&self) -> &'static str;
}

/// Room reserved in the outbox for events not yet built.
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Notify,
    room: Arc<Semaphore>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<Metrics>,
    spool: PathBuf,
    closing: AtomicBool,
    drained: Notify,
}

/// The events not yet delivered, and their journal.
struct Queue {
    records: VecDeque<EventRecord>,
    journal: Journal,
}

impl Outbox {
    /// Starts the delivery task (inside a tokio runtime), after re-queueing any events
    /// the previous run had not delivered.
    pub fn start(
        sink: Arc<dyn EventSink>,
        capacity: usize,
        spool: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Outbox {
        metrics.outbox_capacity.set(capacity as i64);
        let spooled: VecDeque<EventRecord> = read_spool(&spool).into();
        let journal = Journal::open(&spool, &spooled);
        let outbox = Outbox {
            inner: Arc::new(Inner {
                room: Arc::new(Semaphore::new(capacity.saturating_sub(spooled.len()))),
                queue: Mutex::new(Queue {
                    records: spooled,
                    journal,
                }),
                wake: Notify::new(),
                sink,
                metrics,
                spool,
                closing: AtomicBool::new(false),
                drained: Notify::new(),
            }),
        };
        outbox.update_depth();
        let delivery = outbox.clone();
        tokio::spawn(async move { delivery.deliver_forever().await });
        outbox
    }

    /// Reserves room for `n` events, or `None` when the outbox is full.
    pub fn reserve(&self, n: usize) -> Option<Reservation> {
        let n = u32::try_from(n).ok()?;
        let permit = Arc::clone(&self.inner.room)
            .try_acquire_many_owned(n)
            .ok()?;
        Some(Reservation { permit })
    }

    /// Queues events into room reserved for them; unused room is given back.
    pub fn publish(&self, reservation: Reservation, records: Vec<EventRecord>) {
        let Reservation { mut permit } = reservation;
        match permit.split(records.len()) {
            // The room is now held by the queued records, until delivered.
            Some(used) => used.forget(),
            None => {
                tracing::error!(
                    events = records.len(),
                    reserved = permit.num_permits(),
                    "published more events than reserved; queueing them anyway"
                );
                permit.forget();
            }
        }
        for record in &records {
            self.inner
                .metrics
                .bi_events(record.event.name(), "queued")
                .inc();
        }
        {
            let mut queue = self.inner.queue.lock().expect("outbox lock");
            queue.journal.append(&records);
            queue.records.extend(records);
        }
        self.update_depth();
        self.inner.wake.notify_one();
    }

    pub fn depth(&self) -> usize {
        self.inner.queue.lock().expect("outbox lock").records.len()
    }

    fn update_depth(&self) {
        let depth = self.depth();
        self.inner.metrics.outbox_depth.set(depth as i64);
    }

    async fn deliver_forever(&self) {
        let mut failures = 0u32;
        loop {
            let batch: Vec<EventRecord> = {
                let queue = self.inner.queue.lock().expect("outbox lock");
                queue.records.iter().take(BATCH).cloned().collect()
            };
            if batch.is_empty() {
                if self.inner.closing.load(Ordering::Acquire) {
                    self.inner.drained.notify_waiters();
                }
                self.inner.wake.notified().await;
                continue;
            }
            let result = self.inner.sink.deliver(&batch).await;
            let failed = match &result {
                Ok(()) => Vec::new(),
                Err(not_delivered) => not_delivered.failed.clone(),
            };
            self.settle(&batch, &failed);
            match result {
                Ok(()) => failures = 0,
                Err(not_delivered) => {
                    tracing::warn!(
                        sink = self.inner.sink.name(),
                        failed = failed.len(),
                        reason = %not_delivered.reason,
                        "event delivery failed; retrying"
                    );
                    let delay = backoff(
                        failures,
                        Duration::from_millis(200),
                        Duration::from_secs(10),
                    );
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // A shutdown cuts the wait short: one last try, then spool.
                        _ = self.inner.drained.notified() => {}
                    }
                }
            }
        }
    }

    /// Removes the delivered records of `batch` (the front of the queue), keeping the
    /// failed ones at the front in their order.
    fn settle(&self, batch: &[EventRecord], failed: &[usize]) {
        let mut queue = self.inner.queue.lock().expect("outbox lock");
        let front: Vec<EventRecord> = queue.records.drain(..batch.len()).collect();
        for (i, record) in front.into_iter().enumerate().rev() {
            let outcome = if failed.contains(&i) {
                queue.records.push_front(record.clone());
                "failed"
            } else {
                "delivered"
            };
            self.inner
                .metrics
                .bi_events(record.event.name(), outcome)
                .inc();
        }
        let Queue { records, journal } = &mut *queue;
        journal.compact(records);
        drop(queue);
        let delivered = batch.len() - failed.len();
        self.inner.room.add_permits(delivered);
        self.update_depth();
    }

    /// Stops taking events and tries to deliver what is queued until `deadline`; the rest
    /// stays in the journal for the next start. Nothing queued is lost.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.closing.store(true, Ordering::Release);
        self.inner.room.close();
        let drained = async {
            while self.depth() > 0 {
                let notified = self.inner.drained.notified();
                self.inner.wake.notify_one();
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
        };
        let _ = tokio::time::timeout(deadline, drained).await;
        let mut queue = self.inner.queue.lock().expect("outbox lock");
        if queue.records.is_empty() {
            return;
        }
        let Queue { records, journal } = &mut *queue;
        journal.rewrite(records);
        tracing::warn!(
            events = records.len(),
            spool = %self.inner.spool.display(),
            "sink unreachable at shutdown; events kept for the next start"
        );
    }
}

/// The append-only file behind the queue (see the module doc). Its failures are logged
/// and counted, never fatal: delivery goes on from memory.
struct Journal {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Records in the file, delivered ones included until the next compaction.
    lines: usize,
}

impl Journal {
    /// A journal holding exactly `records`.
    fn open(path: &Path, records: &VecDeque<EventRecord>) -> Journal {
        let mut journal = Journal {
            path: path.to_path_buf(),
            file: None,
            lines: 0,
        };
        journal.rewrite(records);
        journal
    }

    fn append(&mut self, records: &[EventRecord]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut bytes = Vec::with_capacity(records.len() * 256);
        for record in records {
            serde_json::to_writer(&mut bytes, record).expect("a record serializes");
            bytes.push(b'\n');
        }
        match file.write_all(&bytes) {
            Ok(()) => self.lines += records.len(),
            Err(e) => {
                tracing::error!(error = %e, path = %self.path.display(), "cannot journal events; a crash now would lose them");
            }
        }
    }

    /// Drops delivered records from the file: all of it once nothing is queued, else a
    /// rewrite once it has grown well past what is queued.
    fn compact(&mut self, queued: &VecDeque<EventRecord>) {
        if queued.is_empty() && self.lines > 0 {
            match self.file.as_ref().map(|f| f.set_len(0)) {
                Some(Ok(())) => self.lines = 0,
                Some(Err(e)) => tracing::error!(error = %e, "cannot truncate the event journal"),
                None => {}
            }
        } else if self.lines > 4 * queued.len() + 10_000 {
            self.rewrite(queued);
        }
    }

    /// Replaces the file by one holding exactly `records` (written aside, then renamed).
    fn rewrite(&mut self, records: &VecDeque<EventRecord>) {
        let written = (|| -> std::io::Result<std::fs::File> {
            let tmp = self.path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            for record in records {
                serde_json::to_writer(&mut file, record)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::OpenOptions::new().append(true).open(&self.path)
        })();
        match written {
            Ok(file) => {
                self.file = Some(file);
                self.lines = records.len();
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.path.display(), "cannot write the event journal; undelivered events will not survive a crash");
                self.file = None;
            }
        }
    }
}

/// The records of the journal left by the previous run. A line that does not parse (a
/// write torn by a crash, a damaged byte) is skipped and logged; the others are kept.
fn read_spool(path: &Path) -> Vec<EventRecord> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let records: Vec<EventRecord> = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .filter_map(|(index, line)| match serde_json::from_slice::<EventRecord>(line) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    line = index + 1,
                    error = %e,
                    "skipping an unreadable journaled event (torn by a crash or damaged); the other lines are kept"
                );
                None
            }
        })
        .collect();
    if !records.is_empty() {
        tracing::info!(
            events = records.len(),
            "re-queued the events the last run had not delivered"
        );
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BiEvent, Timestamp, UserId};

    /// A sink that is down: nothing is ever delivered.
    struct Down;

    #[async_trait]
    impl EventSink for Down {
        async fn deliver(&self, batch: &[EventRecord]) -> Result<(), NotDelivered> {
            Err(NotDelivered::all(batch, "down"))
        }
        fn name(&self) -> &'static str {
            "down"
        }
    }

    fn record(n: u32) -> EventRecord {
        EventRecord::new(
            BiEvent::AddedToWatchlist {
                asset_id: crate::domain::AssetId::parse(&format!(
                    "00000000-0000-4000-8000-{n:012}"
                ))
                .unwrap(),
            },
            UserId::parse("u").unwrap(),
            Timestamp(0),
            uuid::Uuid::new_v4(),
        )
    }

    #[tokio::test]
    async fn what_was_queued_when_the_process_died_is_queued_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("outbox.spool");
        let metrics = Arc::new(Metrics::new());
        let first = Outbox::start(Arc::new(Down), 100, spool.clone(), metrics.clone());
        let room = first.reserve(3).unwrap();
        first.publish(room, vec![record(1), record(2), record(3)]);
        // No shutdown: the process "dies" here. A crash mid-write tears the last line, and
        // a damaged byte spoils another; only those are lost.
        let mut bytes = std::fs::read(&spool).unwrap();
        let second_line = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
        bytes[second_line + 3] = 0xff;
        bytes.extend_from_slice(b"{\"torn");
        std::fs::write(&spool, bytes).unwrap();
        let second = Outbox::start(Arc::new(Down), 100, spool.clone(), metrics);
        assert_eq!(second.depth(), 2, "the first and third events come back");
        // The journal was rewritten clean: new events append after whole lines.
        let room = second.reserve(1).unwrap();
        second.publish(room, vec![record(4)]);
        assert_eq!(read_spool(&spool).len(), 3);
    }
}
