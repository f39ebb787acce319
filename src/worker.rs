//! Background work of a node under one supervisor. Every loop (the lease keeper, the
//! controller, the shard-table follower, the backup sender, the trailer consumer, ...)
//! is a named worker that gets one [`MustExit`] signal, is restarted with backoff when it
//! fails or panics, and has a status an operator can read (`cluster status --json`,
//! `playstate_worker_*` metrics). An orderly stop sets the signal and waits for each
//! worker to return: nothing is detached, and nothing is aborted.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::retry::backoff;
use crate::telemetry::Metrics;

/// Why a worker's run ended before it was asked to exit.
pub type WorkerError = Box<dyn std::error::Error + Send + Sync>;

/// Set once, when the node stops: a worker returns soon after, from a point where
/// stopping loses nothing.
#[derive(Clone, Debug)]
pub struct MustExit(watch::Receiver<bool>);

impl MustExit {
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal is set (or its supervisor is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|exit| *exit).await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Running,
    /// Failed; restarts after a backoff.
    Restarting,
    /// Returned by itself: its work is done (e.g. the node has formed its cluster).
    Finished,
    /// Returned after the node asked it to exit.
    Stopped,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The status of every worker of a node, readable while they run.
#[derive(Clone, Default)]
pub struct WorkerStatuses(Arc<Mutex<BTreeMap<&'static str, WorkerStatus>>>);

impl WorkerStatuses {
    pub fn list(&self) -> Vec<WorkerStatus> {
        self.lock().values().cloned().collect()
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut WorkerStatus)) {
        let mut all = self.lock();
        let status = all.entry(name).or_insert(WorkerStatus {
            name: name.to_owned(),
            state: WorkerState::Running,
            restarts: 0,
            last_error: None,
        });
        change(status);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, WorkerStatus>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts workers, restarts the ones that fail, and stops them all.
pub struct Supervisor {
    exit: watch::Sender<bool>,
    running: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    statuses: WorkerStatuses,
    metrics: Arc<Metrics>,
}

/// Restart backoff: from `FIRST_RETRY` doubling up to `LAST_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(10);

impl Supervisor {
    /// Workers report into `statuses` (shared with whatever shows them).
    pub fn new(metrics: Arc<Metrics>, statuses: WorkerStatuses) -> Supervisor {
        Supervisor {
            exit: watch::channel(false).0,
            running: Vec::new(),
            statuses,
            metrics,
        }
    }

    /// Runs `work` as the worker `name` on this thread's runtime (actix's: the workers
    /// share the node's main thread). `work` is called again for each restart.
    pub fn spawn<W, Run>(&mut self, name: &'static str, mut work: W)
    where
        W: FnMut(MustExit) -> Run + 'static,
        Run: Future<Output = Result<(), WorkerError>> + 'static,
    {
        let must_exit = MustExit(self.exit.subscribe());
        let statuses = self.statuses.clone();
        let running = self.metrics.workers.running.with_label_values(&[name]);
        let restarts = self.metrics.workers.restarts.with_label_values(&[name]);
        statuses.update(name, |_| {});
        let supervised = async move {
            let mut failures = 0u32;
            loop {
                running.set(1);
                let attempt = actix_rt::spawn(work(must_exit.clone())).await;
                running.set(0);
                let error = match attempt {
                    Ok(Ok(())) => {
                        let state = if must_exit.is_set() {
                            WorkerState::Stopped
                        } else {
                            tracing::info!(worker = name, "worker finished its work");
                            WorkerState::Finished
                        };
                        statuses.update(name, |s| s.state = state);
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(join) => match join.try_into_panic() {
                        Ok(panic) => panic_message(panic.as_ref()),
                        Err(join) => join.to_string(),
                    },
                };
                if must_exit.is_set() {
                    tracing::warn!(worker = name, error, "worker failed while stopping");
                    statuses.update(name, |s| s.state = WorkerState::Stopped);
                    return;
                }
                failures += 1;
                restarts.inc();
                let wait = backoff(failures, FIRST_RETRY, LAST_RETRY);
                tracing::error!(
                    worker = name,
                    error,
                    restarts = failures,
                    retry_in_ms = wait.as_millis() as u64,
                    "worker failed; restarting it"
                );
                statuses.update(name, |s| {
                    s.state = WorkerState::Restarting;
                    s.restarts = failures;
                    s.last_error = Some(error.clone());
                });
                let mut exit = must_exit.clone();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = exit.wait() => {
                        statuses.update(name, |s| s.state = WorkerState::Stopped);
                        return;
                    }
                }
                statuses.update(name, |s| s.state = WorkerState::Running);
            }
        };
        self.running.push((name, actix_rt::spawn(supervised)));
    }

    /// Asks every worker to exit and waits for them, in the order they were started, until
    /// `deadline`. A worker still running then is named in a WARN line; it ends with the
    /// process.
    pub async fn stop(self, deadline: Duration) {
        self.exit.send_replace(true);
        let until = tokio::time::Instant::now() + deadline;
        for (name, handle) in self.running {
            if tokio::time::timeout_at(until, handle).await.is_err() {
                tracing::warn!(worker = name, "worker did not stop in time");
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned());
    format!("panicked: {text}")
}
