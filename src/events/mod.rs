//! BI events: a bounded in-memory outbox in front of a sink (SQS, or a JSON-lines file).
//!
//! Producers reserve room before they change state, so an event is never dropped for lack
//! of space: when the outbox is full, the change is refused or postponed instead. A single
//! delivery task sends in batches and retries with backoff while the sink is down. On
//! graceful shutdown whatever could not be delivered is spooled to the data dir and sent
//! after the next start.

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
use crate::retry::backoff;
use crate::telemetry::Metrics;

/// Records handed to the sink in one delivery round. Large, because a round costs the
/// file sink one fsync and the SQS sink one round trip (its requests run concurrently):
/// with small rounds a burst of viewers starting titles outruns delivery and fills the
/// outbox.
pub const BATCH: usize = 500;

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
    queue: Mutex<VecDeque<EventRecord>>,
    wake: Notify,
    room: Arc<Semaphore>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<Metrics>,
    spool: PathBuf,
    closing: AtomicBool,
    drained: Notify,
}

impl Outbox {
    /// Starts the delivery task (inside a tokio runtime), after re-queueing any events
    /// spooled by the previous graceful shutdown.
    pub fn start(
        sink: Arc<dyn EventSink>,
        capacity: usize,
        spool: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Outbox {
        let spooled = read_spool(&spool);
        let outbox = Outbox {
            inner: Arc::new(Inner {
                room: Arc::new(Semaphore::new(capacity.saturating_sub(spooled.len()))),
                queue: Mutex::new(spooled.into()),
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
        self.inner
            .queue
            .lock()
            .expect("outbox lock")
            .extend(records);
        self.update_depth();
        self.inner.wake.notify_one();
    }

    pub fn depth(&self) -> usize {
        self.inner.queue.lock().expect("outbox lock").len()
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
                queue.iter().take(BATCH).cloned().collect()
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
        let front: Vec<EventRecord> = queue.drain(..batch.len()).collect();
        for (i, record) in front.into_iter().enumerate().rev() {
            let outcome = if failed.contains(&i) {
                queue.push_front(record.clone());
                "failed"
            } else {
                "delivered"
            };
            self.inner
                .metrics
                .bi_events(record.event.name(), outcome)
                .inc();
        }
        drop(queue);
        let delivered = batch.len() - failed.len();
        self.inner.room.add_permits(delivered);
        self.update_depth();
    }

    /// Stops taking events, tries to deliver what is queued until `deadline`, and spools
    /// the rest to disk for the next start. Nothing queued is lost.
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
        let left: Vec<EventRecord> = self
            .inner
            .queue
            .lock()
            .expect("outbox lock")
            .drain(..)
            .collect();
        if left.is_empty() {
            return;
        }
        match write_spool(&self.inner.spool, &left) {
            Ok(()) => tracing::warn!(
                events = left.len(),
                spool = %self.inner.spool.display(),
                "sink unreachable at shutdown; events spooled for the next start"
            ),
            Err(e) => tracing::error!(
                events = left.len(),
                error = %e,
                "cannot spool undelivered events; they are lost"
            ),
        }
        self.update_depth();
    }
}

fn write_spool(path: &Path, records: &[EventRecord]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    let mut existing = std::fs::read(path).unwrap_or_default();
    file.write_all(&existing)?;
    existing.clear();
    for record in records {
        serde_json::to_writer(&mut file, record)?;
        file.write_all(b"\n")?;
    }
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

fn read_spool(path: &Path) -> Vec<EventRecord> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let records: Vec<EventRecord> = text
        .lines()
        .filter_map(|line| match serde_json::from_str::<EventRecord>(line) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::error!(error = %e, "skipping unreadable spooled event");
                None
            }
        })
        .collect();
    if let Err(e) = std::fs::remove_file(path) {
        tracing::error!(error = %e, "cannot remove the event spool; events may be sent twice");
    }
    if !records.is_empty() {
        tracing::info!(
            events = records.len(),
            "re-queued events spooled at the last shutdown"
        );
    }
    records
}
