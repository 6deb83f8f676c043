//! This process's CPU and memory use, for the heartbeat (Linux `/proc`;
//! elsewhere both read as zero).

use std::time::Instant;

/// Kernel clock ticks per second for `/proc/self/stat` times. Linux fixes
/// USER_HZ at 100 on every architecture tokenswarm targets.
const TICKS_PER_SECOND: f64 = 100.0;

/// Samples CPU % (of one core, like psutil's `Process.cpu_percent`) since
/// the previous sample, and resident memory in bytes.
#[derive(Debug)]
pub struct ProcessUsage {
    last_ticks: u64,
    last_at: Instant,
}

impl Default for ProcessUsage {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessUsage {
    pub fn new() -> Self {
        ProcessUsage {
            last_ticks: cpu_ticks().unwrap_or(0),
            last_at: Instant::now(),
        }
    }

    /// (CPU percent since the last call, resident set size in bytes).
    pub fn sample(&mut self) -> (f64, u64) {
        let now = Instant::now();
        let ticks = cpu_ticks().unwrap_or(self.last_ticks);
        let elapsed = now.duration_since(self.last_at).as_secs_f64();
        let cpu = if elapsed > 0.0 {
            (ticks.saturating_sub(self.last_ticks) as f64 / TICKS_PER_SECOND) / elapsed * 100.0
        } else {
            0.0
        };
        self.last_ticks = ticks;
        self.last_at = now;
        (cpu, rss_bytes().unwrap_or(0))
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rises_with_work_and_memory_is_reported() {
        // Proves we read real numbers: busy-spin ~50 ms of CPU, expect > 0 %.
        let mut u = ProcessUsage::new();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let (cpu, mem) = u.sample();
        assert!(cpu > 0.0, "cpu {cpu}");
        assert!(mem > 1024 * 1024, "rss {mem}");
    }
}
