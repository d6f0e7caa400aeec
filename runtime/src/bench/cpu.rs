//! CPU time used by server processes (every thread, user and system), read from
//! `/proc/<pid>/stat`. Work per operation — operations per server CPU-second — holds up on a
//! shared, noisy machine where throughput does not: another process taking a core halves a
//! server's throughput but not the CPU it spends on each request.

use std::future::Future;
use std::time::Duration;

use super::BenchOpts;

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`, 100 on every Linux this runs on).
const TICKS_PER_SEC: u64 = 100;

/// The server processes whose CPU a benchmark counts.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pids: Vec<u32>,
}

impl CpuMeter {
    pub fn new(pids: impl IntoIterator<Item = u32>) -> Self {
        Self { pids: pids.into_iter().collect() }
    }

    /// CPU time the processes have used so far; `None` if one of them cannot be read (gone, or
    /// no `/proc`).
    pub fn used(&self) -> Option<Duration> {
        let mut ticks = 0u64;
        for pid in &self.pids {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            ticks += parse_stat(&text)?;
        }
        Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SEC))
    }

    /// Run `scenario` (a `measure_*` call with `opts`) and return, beside its result, the CPU the
    /// processes used during its measured window (after the warm-up, for the duration).
    pub async fn during<T>(&self, opts: &BenchOpts, scenario: impl Future<Output = T>) -> (T, Option<Duration>) {
        let sample = async {
            tokio::time::sleep(opts.warmup).await;
            let start = self.used();
            tokio::time::sleep(opts.duration).await;
            Some(self.used()?.saturating_sub(start?))
        };
        tokio::join!(scenario, sample)
    }
}

/// `utime + stime` in ticks from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses, so fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // state is field 3; utime is field 14
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Operations per CPU-second (0 when no CPU was counted).
pub fn ops_per_cpu_sec(ops: u64, cpu: Duration) -> f64 {
    if cpu.is_zero() { 0.0 } else { ops as f64 / cpu.as_secs_f64() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(325));
        assert_eq!(parse_stat("4242 (short) S 1 2"), None, "a truncated line");
        assert_eq!(parse_stat("no parenthesis"), None);
        assert_eq!(parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 1"), None, "a field that is not a number");
    }

    #[test]
    fn the_meter_counts_cpu_this_process_burns() {
        // Spin until the meter has seen 100 ms of CPU (however long a busy machine makes that
        // take); it must get there, and never count more CPU than the wall time allows.
        let meter = CpuMeter::new([std::process::id()]);
        let before = meter.used().expect("this process's /proc/<pid>/stat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let used = meter.used().unwrap() - before;
            if used >= Duration::from_millis(100) {
                break used;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "60 s of spinning counted as {used:?}");
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        assert!(used <= start.elapsed() * cores + Duration::from_millis(20), "{used:?} in {:?}", start.elapsed());
        assert!(CpuMeter::new([u32::MAX]).used().is_none(), "a process that does not exist");
        assert_eq!(ops_per_cpu_sec(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(ops_per_cpu_sec(500, Duration::ZERO), 0.0);
    }
}
