//! The main thread while load runs: draws the progress bar and samples the processes'
//! memory and CPU, until every load-generator thread has finished.

use std::io::IsTerminal;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::runner::{Control, ShardStats};
use crate::server_stats::Sampler;
use crate::stats::Live;

pub struct Watched {
    pub shards: Vec<ShardStats>,
    /// When the last thread finished.
    pub finished: Instant,
}

/// Waits for the threads, sampling every `Sampler` as it goes. A thread that panicked is
/// an error in this tool, reported as such.
pub fn watch(
    handles: Vec<JoinHandle<ShardStats>>,
    ctl: &Control,
    samplers: &mut [&mut Sampler],
    quiet: bool,
    open_loop: bool,
) -> anyhow::Result<Watched> {
    let bar = progress_bar(ctl, quiet);
    let tick = Duration::from_millis(100);
    let mut last = (std::time::Instant::now(), 0u64);
    let mut rate = 0.0;
    let mut ticks = 0u64;
    while !handles.iter().all(JoinHandle::is_finished) {
        std::thread::sleep(tick);
        ticks += 1;
        // Every 250 ms or so is enough to catch the RSS peak of a steady load.
        if ticks.is_multiple_of(2) {
            for s in samplers.iter_mut() {
                s.sample();
            }
        }
        let responses = Live::get(&ctl.live.responses);
        let now = std::time::Instant::now();
        let dt = now.duration_since(last.0);
        if dt >= Duration::from_millis(500) {
            rate = (responses - last.1) as f64 / dt.as_secs_f64();
            last = (now, responses);
        }
        let elapsed = Instant::now().saturating_duration_since(ctl.start);
        bar.set_position(elapsed.as_millis() as u64);
        let mut message = format!(
            "{rate:>8.0} resp/s  {responses} ok  {} errors",
            Live::get(&ctl.live.errors)
        );
        if open_loop {
            message.push_str(&format!(
                "  {} scheduled  {} late",
                Live::get(&ctl.live.scheduled),
                Live::get(&ctl.live.late)
            ));
        }
        bar.set_message(message);
    }
    let finished = Instant::now();
    bar.finish_and_clear();
    for s in samplers.iter_mut() {
        s.sample();
    }
    let mut shards = Vec::with_capacity(handles.len());
    for h in handles {
        match h.join() {
            Ok(stats) => shards.push(stats),
            Err(_) => anyhow::bail!("a load-generator thread panicked; the results are incomplete"),
        }
    }
    Ok(Watched { shards, finished })
}

fn progress_bar(ctl: &Control, quiet: bool) -> ProgressBar {
    let total = ctl
        .deadline
        .saturating_duration_since(ctl.start)
        .as_millis() as u64;
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {msg}")
        .expect("the template is valid")
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style)
}
