//! A failing run's picture: one HTML file with SVG timelines — a row per client, a bar per
//! operation from invocation to completion (colored by outcome, the value in its tooltip), the
//! nemesis's faults as shaded bands, and the operation the checker could not place outlined in
//! red. The first timeline shows only the keys with an anomaly; the second, the whole run.

use std::fmt::{Debug, Write};

use basalt_lincheck::{Op, Outcome};

/// A fault and when it was in force (ns since the run started).
#[derive(Debug, Clone)]
pub struct Band {
    pub start_ns: u64,
    pub end_ns: u64,
    pub label: String,
}

const ROW: f64 = 16.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 40.0;
const PX_PER_SEC: f64 = 120.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn svg<I: Debug, O: Debug>(ops: &[&Op<I, O>], bands: &[Band], stuck: &[(u64, u64)], end_ns: u64) -> String {
    let clients: std::collections::BTreeSet<u64> = ops.iter().map(|o| o.client).collect();
    let row_of = |c: u64| clients.iter().position(|x| *x == c).unwrap_or(0) as f64;
    let x = |ns: u64| LEFT + ns as f64 / 1e9 * PX_PER_SEC;
    let width = x(end_ns) + 20.0;
    let height = TOP + ROW * clients.len() as f64 + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="monospace" font-size="10">"#
    );
    for b in bands {
        let (x0, x1) = (x(b.start_ns), x(b.end_ns.max(b.start_ns)));
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="0" width="{:.1}" height="{height:.0}" fill="#f4c2c2" opacity="0.45"><title>{}</title></rect><text x="{x0:.1}" y="10" fill="#900">{}</text>"##,
            (x1 - x0).max(1.0),
            esc(&b.label),
            esc(&b.label)
        );
    }
    for sec in 0..=end_ns / 1_000_000_000 {
        let xs = x(sec * 1_000_000_000);
        let _ = write!(
            s,
            r##"<line x1="{xs:.1}" y1="{:.0}" x2="{xs:.1}" y2="{height:.0}" stroke="#ddd"/><text x="{xs:.1}" y="{:.0}" fill="#666">{sec}s</text>"##,
            TOP - 8.0,
            TOP - 10.0
        );
    }
    for c in &clients {
        let _ = write!(s, r#"<text x="4" y="{:.1}">client {c}</text>"#, TOP + ROW * row_of(*c) + 11.0);
    }
    for o in ops {
        let y = TOP + ROW * row_of(o.client) + 2.0;
        let (end, fill, result) = match &o.outcome {
            Outcome::Ok { output, complete_ns } => (*complete_ns, "#4a9a4a", format!("{output:?}")),
            Outcome::Fail { complete_ns } => (*complete_ns, "#bbbbbb", "failed".into()),
            Outcome::Info => (end_ns, "#f0a040", "unknown outcome".into()),
        };
        let is_stuck = stuck.contains(&(o.client, o.invoke_ns));
        let stroke = if is_stuck { r##" stroke="#e00000" stroke-width="3""## } else { "" };
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.0}" fill="{fill}"{stroke}><title>{}</title></rect>"#,
            x(o.invoke_ns),
            (x(end) - x(o.invoke_ns)).max(1.5),
            ROW - 4.0,
            esc(&format!(
                "client {} key {} {:?} -> {result} [{:.3} s .. {:.3} s]{}",
                o.client,
                o.key,
                o.input,
                o.invoke_ns as f64 / 1e9,
                end as f64 / 1e9,
                if is_stuck { " — could not be linearized" } else { "" }
            ))
        );
    }
    s.push_str("</svg>");
    s
}

/// The whole page. `stuck` are the (client, invoke_ns) of operations the checker could not
/// place; their keys get the first timeline.
pub fn render<I: Debug, O: Debug>(
    title: &str,
    explanation: &str,
    ops: &[Op<I, O>],
    bands: &[Band],
    stuck: &[(u64, u64)],
) -> String {
    let end_ns = ops
        .iter()
        .map(|o| match o.outcome {
            Outcome::Ok { complete_ns, .. } | Outcome::Fail { complete_ns } => complete_ns,
            Outcome::Info => o.invoke_ns,
        })
        .chain(bands.iter().map(|b| b.end_ns))
        .max()
        .unwrap_or(0);
    let bad_keys: Vec<&str> =
        ops.iter().filter(|o| stuck.contains(&(o.client, o.invoke_ns))).map(|o| o.key.as_str()).collect();
    let focus: Vec<&Op<I, O>> = ops.iter().filter(|o| bad_keys.contains(&o.key.as_str())).collect();
    let all: Vec<&Op<I, O>> = ops.iter().collect();
    let mut page = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>{t}</title><body style=\"font-family:sans-serif\">\
         <h1>{t}</h1><p>{e}</p><p>green: ok · grey: failed (no effect) · orange: unknown outcome · \
         red outline: the operation that could not be linearized · shaded: faults. Hover for values.</p>",
        t = esc(title),
        e = esc(explanation)
    );
    if !focus.is_empty() {
        let _ = write!(
            page,
            "<h2>Keys with an anomaly: {}</h2><div style=\"overflow-x:auto\">{}</div>",
            esc(&bad_keys.join(", ")),
            svg(&focus, bands, stuck, end_ns)
        );
    }
    let _ =
        write!(page, "<h2>The whole run</h2><div style=\"overflow-x:auto\">{}</div>", svg(&all, bands, stuck, end_ns));
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_every_operation_the_faults_and_the_culprit() {
        let op =
            |client, key: &str, invoke_ns, outcome| Op { client, key: key.into(), input: "w<1>", invoke_ns, outcome };
        let ops = vec![
            op(0, "a", 0, Outcome::Ok { output: "ok", complete_ns: 5_000_000 }),
            op(1, "b", 1_000_000, Outcome::Info),
            op(1, "a", 2_000_000_000, Outcome::Fail { complete_ns: 2_100_000_000 }),
        ];
        let bands = [Band { start_ns: 1_000_000_000, end_ns: 1_500_000_000, label: "pause n2".into() }];
        let page = render("seed 7", "could not place <x>", &ops, &bands, &[(0, 0)]);
        assert!(page.contains("Keys with an anomaly: a"));
        assert!(page.contains("pause n2"));
        assert!(page.contains("could not place &lt;x&gt;"), "escaped");
        assert!(page.contains("w&lt;1&gt;"), "values are escaped");
        // Two timelines: the anomalous key (2 ops) and all (3 ops).
        assert_eq!(page.matches("<rect").count() - 2, 5, "one rect per op per timeline, plus a band each");
        assert_eq!(page.matches("stroke=\"#e00000\"").count(), 2);
    }
}
