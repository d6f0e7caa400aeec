//! `basalt bench coord` (below).
use basalt_runtime::bench::{BenchOpts, Report};

pub async fn run(_opts: &BenchOpts) -> anyhow::Result<Report> {
    anyhow::bail!("not yet")
}
