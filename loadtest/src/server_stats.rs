//! Memory and CPU of a process during the run, read from /proc.
//!
//! Used for the server (`--server-pid`) and for this load generator itself: on a small
//! machine both share the cores, and the report is only meaningful knowing who used them.

use std::fs;
use std::time::{Duration, Instant};

/// One reading of a process.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Reading {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size over the process's life, KiB.
    pub hwm_kib: u64,
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
}

/// Parses `VmRSS` and `VmHWM` out of /proc/PID/status.
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// utime + stime, in clock ticks, out of /proc/PID/stat. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted from the last ')'.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Which process to read: a PID or this process.
#[derive(Clone, Debug)]
pub struct Proc {
    dir: String,
    ticks_per_second: u64,
}

impl Proc {
    pub fn pid(pid: u32) -> Proc {
        Proc {
            dir: format!("/proc/{pid}"),
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    pub fn this() -> Proc {
        Proc {
            dir: "/proc/self".into(),
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    pub fn read(&self) -> Option<Reading> {
        let status = fs::read_to_string(format!("{}/status", self.dir)).ok()?;
        let stat = fs::read_to_string(format!("{}/stat", self.dir)).ok()?;
        let (rss_kib, hwm_kib) = parse_status(&status)?;
        let ticks = parse_stat_ticks(&stat)?;
        Some(Reading {
            rss_kib,
            hwm_kib,
            cpu: Duration::from_nanos(ticks * 1_000_000_000 / self.ticks_per_second),
        })
    }
}

/// Usage over the run: the first and latest readings, and the largest RSS seen between.
#[derive(Clone, Debug)]
pub struct Sampler {
    proc: Proc,
    first: Reading,
    first_at: Instant,
    last: Reading,
    last_at: Instant,
    peak_rss_kib: u64,
    samples: u64,
    /// The process disappeared (or became unreadable) during the run.
    pub lost: bool,
}

impl Sampler {
    /// Takes the first reading, or `None` if the process cannot be read.
    pub fn start(proc: Proc) -> Option<Sampler> {
        let first = proc.read()?;
        let now = Instant::now();
        Some(Sampler {
            proc,
            first,
            first_at: now,
            last: first,
            last_at: now,
            peak_rss_kib: first.rss_kib,
            samples: 1,
            lost: false,
        })
    }

    pub fn sample(&mut self) {
        if self.lost {
            return;
        }
        match self.proc.read() {
            Some(r) => {
                self.peak_rss_kib = self.peak_rss_kib.max(r.rss_kib);
                self.last = r;
                self.last_at = Instant::now();
                self.samples += 1;
            }
            None => self.lost = true,
        }
    }

    pub fn usage(&self) -> Usage {
        let cpu = self.last.cpu.saturating_sub(self.first.cpu);
        let wall = self.last_at.saturating_duration_since(self.first_at);
        Usage {
            peak_rss_kib: self.peak_rss_kib,
            start_rss_kib: self.first.rss_kib,
            end_rss_kib: self.last.rss_kib,
            hwm_kib: self.last.hwm_kib,
            cpu_seconds: cpu.as_secs_f64(),
            cpu_cores: if wall.is_zero() {
                0.0
            } else {
                cpu.as_secs_f64() / wall.as_secs_f64()
            },
            samples: self.samples,
            exited: self.lost,
        }
    }
}

/// What a process used during the run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Usage {
    /// Largest VmRSS sampled during the run.
    pub peak_rss_kib: u64,
    pub start_rss_kib: u64,
    pub end_rss_kib: u64,
    /// VmHWM at the last sample: the peak over the process's whole life.
    pub hwm_kib: u64,
    /// CPU time (user + system) consumed during the run.
    pub cpu_seconds: f64,
    /// `cpu_seconds` per wall-clock second: 1.0 is one core busy.
    pub cpu_cores: f64,
    pub samples: u64,
    /// The process could no longer be read before the run ended.
    pub exited: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text =
            "Name:\tplaystate\nVmPeak:\t  900 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status(text), Some((40_960, 51_234)));
        assert_eq!(parse_status("Name:\tkthread\n"), None);
    }

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 9 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(text), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let mut s = Sampler::start(Proc::this()).expect("/proc/self is readable");
        // Burn a little CPU so the usage is not all zero.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        s.sample();
        let u = s.usage();
        assert!(u.peak_rss_kib > 0 && u.hwm_kib >= u.end_rss_kib);
        assert_eq!(u.samples, 2);
        assert!(!u.exited);
    }

    #[test]
    fn a_missing_process_is_reported() {
        assert!(Sampler::start(Proc::pid(u32::MAX)).is_none());
    }
}
