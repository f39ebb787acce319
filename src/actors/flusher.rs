//! Groups the dirty progress of many users into few store writes.
//!
//! Each actor hands its own dirty entries over when its flush interval is up; the
//! flusher takes whatever has queued meanwhile, up to a batch limit, and writes it in one
//! store call (one redb transaction and fsync, or 25-item DynamoDB batches). So the store
//! sees a handful of writes per second however many users flush.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::{ProgressItem, StoreError, UserStore};
use crate::telemetry::Metrics;

/// Items per store call: 10 DynamoDB batches, or one comfortable redb transaction.
const MAX_BATCH_ITEMS: usize = 250;
/// Store calls in flight at once.
const CONCURRENT_WRITES: usize = 4;

struct Job {
    items: Vec<ProgressItem>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Clone)]
pub struct Flusher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Flusher {
    /// Starts the flusher task in the current tokio runtime.
    pub fn start(store: Arc<dyn UserStore>, metrics: Arc<Metrics>) -> Flusher {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(queue, store, metrics));
        Flusher { jobs }
    }

    /// Writes `items` (in a batch with others') and reports whether they are stored.
    pub async fn write(&self, items: Vec<ProgressItem>) -> Result<(), StoreError> {
        let (done, stored) = oneshot::channel();
        self.jobs
            .send(Job { items, done })
            .map_err(|_| StoreError::unavailable("the flusher has stopped"))?;
        stored
            .await
            .map_err(|_| StoreError::unavailable("the flusher dropped the batch"))?
    }
}

async fn run(
    mut queue: mpsc::UnboundedReceiver<Job>,
    store: Arc<dyn UserStore>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_WRITES));
    while let Some(first) = queue.recv().await {
        let mut count = first.items.len();
        let mut jobs = vec![first];
        while count < MAX_BATCH_ITEMS {
            match queue.try_recv() {
                Ok(job) => {
                    count += job.items.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let store = Arc::clone(&store);
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let items: Vec<ProgressItem> = jobs
                .iter()
                .flat_map(|job| job.items.iter().cloned())
                .collect();
            let timer = metrics.flush_duration.start_timer();
            let result = store.write_progress(&items).await;
            timer.observe_duration();
            if result.is_err() {
                metrics.flush_failures.inc();
            }
            for job in jobs {
                let _ = job.done.send(result.clone());
            }
            drop(slot);
        });
    }
}
