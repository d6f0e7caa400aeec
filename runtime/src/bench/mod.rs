//! The benchmark harness behind `basalt bench <system>`: a warm-up, then a fixed duration of
//! load; throughput and latency percentiles from an HDR histogram; a progress line on a terminal;
//! a table for people and, with `--json`, exactly one JSON object:
//! `{"system":"ids","results":[{"name","unit","value","p50_us","p99_us","peer","peer_value","ratio"}]}`.

mod cpu;
mod only;
pub use cpu::{CpuMeter, children_cpu, ops_per_cpu_sec};
pub use only::only_from_env;

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Options every system's benchmark takes.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Measured time per scenario.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Target a running node; without it the bench starts its own.
    pub url: Option<String>,
    /// Threads for in-process scenarios.
    pub threads: usize,
    /// Concurrent requests for over-the-network scenarios.
    pub concurrency: usize,
    /// The `basalt` executable, to start a node when `url` is not given.
    pub exe: PathBuf,
    /// Print a progress line on stderr (only on a terminal).
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub system: String,
    pub results: Vec<BenchResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub name: String,
    pub unit: String,
    pub value: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_value: Option<f64>,
    /// `value / peer_value`: above 1 means Basalt did more per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl BenchResult {
    pub fn from_measured(name: &str, m: &Measured) -> Self {
        Self {
            name: name.to_string(),
            unit: "ops/s".to_string(),
            value: round(m.ops_per_sec()),
            p50_us: round(m.percentile_us(50.0)),
            p99_us: round(m.percentile_us(99.0)),
            peer: None,
            peer_value: None,
            ratio: None,
        }
    }

    /// A result measured in milliseconds: `value_us` shown in ms, with its percentiles in µs.
    pub fn ms(name: &str, value_us: f64, p50_us: f64, p99_us: f64) -> Self {
        Self {
            name: name.into(),
            unit: "ms".into(),
            value: (value_us / 100.0).round() / 10.0,
            p50_us,
            p99_us,
            peer: None,
            peer_value: None,
            ratio: None,
        }
    }

    /// Attach the peer's number measured in the same run.
    pub fn with_peer(mut self, peer: &str, peer_value: f64) -> Self {
        self.peer = Some(peer.to_string());
        self.peer_value = Some(round(peer_value));
        self.ratio = (peer_value > 0.0).then(|| (self.value / peer_value * 100.0).round() / 100.0);
        self
    }
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 { v.round() } else { (v * 1000.0).round() / 1000.0 }
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn table(&self) -> String {
        let mut out = format!("basalt bench {}\n", self.system);
        out +=
            &format!("{:<44} {:>14} {:>10} {:>10}  {}\n", "scenario", "value", "p50 µs", "p99 µs", "peer (same run)");
        for r in &self.results {
            let peer = match (&r.peer, r.peer_value, r.ratio) {
                (Some(p), Some(v), Some(x)) => format!("{p}: {} {} → ratio {x:.2}", human(v), r.unit),
                _ => String::new(),
            };
            // Rows without latencies (work per CPU-second) leave the columns blank.
            let (p50, p99) = if r.p50_us == 0.0 && r.p99_us == 0.0 {
                (String::new(), String::new())
            } else {
                (format!("{:.2}", r.p50_us), format!("{:.2}", r.p99_us))
            };
            out += &format!(
                "{:<44} {:>14} {p50:>10} {p99:>10}  {peer}\n",
                r.name,
                format!("{} {}", human(r.value), r.unit)
            );
        }
        out
    }
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct Measured {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Per sample, in nanoseconds.
    pub hist: Histogram<u64>,
}

impl Measured {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_us(&self, p: f64) -> f64 {
        self.hist.value_at_percentile(p) as f64 / 1000.0
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Shows `name  1.2s/3.0s  12.3M ops/s` on stderr while a scenario runs, if it is a terminal.
struct Progress {
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(enabled: bool, name: &str, total: Duration, ops: Arc<AtomicU64>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let handle = (enabled && std::io::stderr().is_terminal()).then(|| {
            let (done, name) = (done.clone(), name.to_string());
            std::thread::spawn(move || {
                let start = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let t = start.elapsed().as_secs_f64();
                    let rate = ops.load(Ordering::Relaxed) as f64 / t.max(1e-9);
                    eprint!("\r\x1b[2K{name:<44} {t:>5.1}s/{:.1}s {:>10} ops/s", total.as_secs_f64(), human(rate));
                    let _ = std::io::stderr().flush();
                }
                eprint!("\r\x1b[2K");
            })
        });
        Self { done, handle }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Run `threads` OS threads, each calling its own `op` in a loop: first for `warmup`
/// (unrecorded), then for `duration`. `op` returns how many operations one call did (a batch
/// counts its size); each call is one latency sample.
pub fn measure_threads<F, W>(opts: &BenchOpts, name: &str, threads: usize, make_op: F) -> Measured
where
    F: Fn(usize) -> W + Sync,
    W: FnMut() -> u64,
{
    let ops_live = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start(opts.progress, name, opts.warmup + opts.duration, ops_live.clone());
    let start_measure = Instant::now() + opts.warmup;
    let end = start_measure + opts.duration;
    let results: Vec<(u64, Histogram<u64>, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|i| {
                let (make_op, live) = (&make_op, ops_live.clone());
                s.spawn(move || {
                    let mut op = make_op(i);
                    while Instant::now() < start_measure {
                        live.fetch_add(op(), Ordering::Relaxed);
                    }
                    let (mut hist, mut ops, t0) = (new_hist(), 0u64, Instant::now());
                    loop {
                        let t = Instant::now();
                        if t >= end {
                            break;
                        }
                        let n = op();
                        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
                        ops += n;
                        live.fetch_add(n, Ordering::Relaxed);
                    }
                    (ops, hist, t0.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread panicked")).collect()
    });
    merge(results, 0)
}

/// Run `concurrency` tasks on the current tokio runtime, each awaiting `op()` in a loop; the
/// same warm-up and duration rules as `measure_threads`. Failed calls are counted, not timed.
pub async fn measure_async<F, Fut>(opts: &BenchOpts, name: &str, concurrency: usize, op: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send,
{
    let ops_live = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start(opts.progress, name, opts.warmup + opts.duration, ops_live.clone());
    let start_measure = tokio::time::Instant::now() + opts.warmup;
    let end = start_measure + opts.duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency.max(1) {
        let (op, live, errors) = (op.clone(), ops_live.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < start_measure {
                match op(i).await {
                    Ok(n) => live.fetch_add(n, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
            let (mut hist, mut ops, t0) = (new_hist(), 0u64, Instant::now());
            while tokio::time::Instant::now() < end {
                let t = Instant::now();
                match op(i).await {
                    Ok(n) => {
                        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
                        ops += n;
                        live.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(error = %e, "benchmark request failed");
                        }
                    }
                }
            }
            (ops, hist, t0.elapsed())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            results.push(r);
        }
    }
    merge(results, errors.load(Ordering::Relaxed))
}

fn merge(results: Vec<(u64, Histogram<u64>, Duration)>, errors: u64) -> Measured {
    let mut hist = new_hist();
    let (mut ops, mut elapsed) = (0, Duration::ZERO);
    for (o, h, e) in results {
        ops += o;
        let _ = hist.add(&h);
        elapsed = elapsed.max(e);
    }
    Measured { ops, errors, elapsed, hist }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BenchOpts {
        BenchOpts {
            duration: Duration::from_millis(50),
            warmup: Duration::from_millis(10),
            url: None,
            threads: 2,
            concurrency: 2,
            exe: PathBuf::new(),
            progress: false,
        }
    }

    #[test]
    fn the_table_leaves_latencies_blank_on_rows_without_them() {
        let timed = BenchResult::ms("timed", 1500.0, 1234.5, 2000.0);
        let mut per_cpu = BenchResult::ms("per cpu", 0.0, 0.0, 0.0);
        per_cpu.unit = "puts".into();
        let table = Report { system: "t".into(), results: vec![timed, per_cpu] }.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[2].contains("1234.50") && lines[2].contains("2000.00"), "{table}");
        assert!(lines[3].starts_with("per cpu") && !lines[3].contains("0.00"), "{table}");
    }

    #[test]
    fn threads_count_batches_and_time_calls() {
        let m = measure_threads(&opts(), "t", 2, |_| || 10);
        assert!(m.ops > 0 && m.ops % 10 == 0);
        assert!(m.hist.len() * 10 == m.ops);
        let r = BenchResult::from_measured("t", &m).with_peer("p", m.ops_per_sec() / 2.0);
        assert!((r.ratio.unwrap() - 2.0).abs() < 0.02, "{r:?}");
        let json = Report { system: "t".into(), results: vec![r] }.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["results"][0]["peer"], "p");
    }

    #[tokio::test]
    async fn async_counts_errors_separately() {
        let m = measure_async(&opts(), "a", 2, |i| async move {
            tokio::task::yield_now().await;
            if i == 0 { anyhow::bail!("no") } else { Ok(1) }
        })
        .await;
        assert!(m.ops > 0 && m.errors > 0);
        let r = BenchResult::from_measured("a", &m);
        assert!(r.peer.is_none());
        assert!(!Report { system: "a".into(), results: vec![r] }.to_json().contains("peer"));
    }
}
