//! Small statistics helpers: percentiles, and a process's CPU time and memory from /proc.

use std::time::Duration;

/// The `p`-th percentile (0..=100) of `values`, by nearest rank; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Latency {
    pub fn of(values_ms: &[f64]) -> Self {
        let p = |q| percentile(values_ms, q).unwrap_or(f64::NAN);
        Self {
            p50: p(50.0),
            p95: p(95.0),
            p99: p(99.0),
        }
    }
}

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux x86_64).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of process `pid` so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(Duration::from_secs_f64(ticks / TICKS_PER_SECOND))
}

/// Resident memory of process `pid` now, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS:").map(|kib| kib / 1024.0)
}

/// Peak resident memory of process `pid`, in MiB. The kernel updates its high-water mark
/// lazily, so it may trail the current figure: the larger of the two.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let peak = status_kib(pid, "VmHWM:")?.max(status_kib(pid, "VmRSS:")?);
    Some(peak / 1024.0)
}

fn status_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(cpu_time(pid).is_some());
        let rss = rss_mib(pid).unwrap_or(0.0);
        assert!(rss > 1.0);
        assert!(peak_rss_mib(pid).is_some_and(|peak| peak >= rss));
    }
}
