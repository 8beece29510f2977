//! Output: the human-readable lines, the JSON-lines file, and the Markdown table and SVG charts
//! for one run or for several runs side by side (one column or curve per label).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::summary::{Latency, Summary};

/// One run: a label and its scenarios' summaries, in order.
pub struct Run {
    pub label: String,
    pub summaries: Vec<Summary>,
}

/// Colours of the runs in the charts, in order.
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// A summary as a few lines for the terminal.
pub fn human(s: &Summary) -> String {
    let mut out = format!("[{}] {:.2} s", s.scenario, s.elapsed_s);
    if let Some(t) = &s.throughput {
        let _ = write!(out, ", {} {}", t.value, t.unit);
    }
    if !s.counts.is_empty() {
        let counts: Vec<String> = s.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = write!(out, "; {}", counts.join(", "));
    }
    for (k, v) in &s.values {
        let _ = write!(out, "; {k} {v}");
    }
    for l in &s.latency {
        let _ = write!(
            out,
            "\n  {}: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms ({} samples)",
            l.name,
            num(l.p50_ms),
            num(l.p90_ms),
            num(l.p99_ms),
            num(l.max_ms),
            l.count
        );
    }
    if let Some(server) = &s.server {
        let _ = write!(
            out,
            "\n  server: CPU {} s ({}%), RSS {} → {} MB, peak {} MB (since {})",
            server.cpu_s,
            server.cpu_percent,
            server.rss_start_mb,
            server.rss_end_mb,
            server.peak_rss_mb,
            server.peak_since
        );
    }
    if let Some(cpu) = s.tool_cpu_s {
        let _ = write!(out, "\n  load tool: CPU {cpu} s");
    }
    if s.failures > 0 || s.rate_limited > 0 {
        let _ = write!(
            out,
            "\n  failures {}, HTTP 429 answers {}",
            s.failures, s.rate_limited
        );
        if let Some(first) = &s.first_failure {
            let _ = write!(out, " (first failure: {first})");
        }
    }
    for t in &s.targets {
        let value = t.value.map_or("none".into(), |v| v.to_string());
        let verdict = if t.met { "met" } else { "MISSED" };
        let _ = write!(out, "\n  target {}: {verdict} ({value})", t.describe());
    }
    out
}

/// Reads a JSON-lines file of summaries (other lines are skipped).
pub fn read_jsonl(path: &Path) -> Result<Vec<Summary>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut summaries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("{\"scenario\":") {
            summaries.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}", path.display(), n + 1))?,
            );
        }
    }
    if summaries.is_empty() {
        bail!("{} holds no summaries", path.display());
    }
    Ok(summaries)
}

/// A label made safe for a file name.
pub fn file_stem(label: &str) -> String {
    let stem: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "homeserver".into()
    } else {
        stem
    }
}

/// Writes `<name>.md`, `<name>-latency.svg` and `<name>-throughput.svg` under `dir`; returns
/// their paths.
pub fn write(dir: &Path, name: &str, runs: &[Run], notes: &[String]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = file_stem(name);
    let latency_svg = format!("{stem}-latency.svg");
    let throughput_svg = format!("{stem}-throughput.svg");
    let files = [
        (
            format!("{stem}.md"),
            markdown(name, runs, notes, &latency_svg, &throughput_svg),
        ),
        (latency_svg.clone(), latency_chart(runs)),
        (throughput_svg.clone(), throughput_chart(runs)),
    ];
    let mut written = Vec::new();
    for (file, content) in files {
        let path = dir.join(file);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Scenario names in order of first appearance across the runs.
fn scenarios(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in runs.iter().flat_map(|r| &r.summaries) {
        if !names.contains(&s.scenario) {
            names.push(s.scenario.clone());
        }
    }
    names
}

fn find<'a>(run: &'a Run, scenario: &str) -> Option<&'a Summary> {
    run.summaries.iter().rev().find(|s| s.scenario == scenario)
}

/// The Markdown page: parameters, a table with one column per run, the targets, the charts.
fn markdown(name: &str, runs: &[Run], notes: &[String], latency: &str, throughput: &str) -> String {
    let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let mut md = format!("# Benchmark results: {name}\n\n");
    for note in notes {
        let _ = writeln!(md, "{note}\n");
    }
    for run in runs {
        if let Some(first) = run.summaries.first() {
            let _ = writeln!(md, "- **{}**: {}", run.label, first.machine);
            if let Some(idle) = first.server.as_ref().and_then(|s| s.idle_rss_mb) {
                let _ = writeln!(
                    md,
                    "  (server idle RSS before the first scenario: {idle} MB)"
                );
            }
        }
    }
    md.push_str("\n## Parameters\n\n");
    for scenario in scenarios(runs) {
        for run in runs {
            if let Some(s) = find(run, &scenario) {
                let params = s
                    .params
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let _ = writeln!(md, "- `{scenario}` ({}): {params}", run.label);
            }
        }
    }

    md.push_str("\n## Results\n\nLatencies in ms as p50 / p90 / p99 / max.\n\n");
    let _ = writeln!(md, "| Scenario | Metric | {} |", labels.join(" | "));
    let _ = writeln!(md, "|---|---|{}", "---:|".repeat(labels.len()));
    for scenario in scenarios(runs) {
        let present: Vec<Option<&Summary>> = runs.iter().map(|r| find(r, &scenario)).collect();
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let unit = present
            .iter()
            .flatten()
            .find_map(|s| s.throughput.as_ref().map(|t| t.unit.clone()));
        if let Some(unit) = unit {
            rows.push((
                format!("throughput ({unit})"),
                cells(&present, |s| s.throughput.as_ref().map(|t| num(t.value))),
            ));
        }
        for latency in latency_names(&present) {
            rows.push((
                format!("{latency} latency"),
                cells(&present, |s| {
                    s.latency(&latency).map(|l| {
                        format!(
                            "{} / {} / {} / {}",
                            num(l.p50_ms),
                            num(l.p90_ms),
                            num(l.p99_ms),
                            num(l.max_ms)
                        )
                    })
                }),
            ));
        }
        for key in keys(&present, |s| s.counts.keys().cloned().collect()) {
            rows.push((
                key.clone(),
                cells(&present, |s| s.counts.get(&key).map(u64::to_string)),
            ));
        }
        for key in keys(&present, |s| s.values.keys().cloned().collect()) {
            rows.push((
                key.clone(),
                cells(&present, |s| s.values.get(&key).copied().map(num)),
            ));
        }
        rows.push((
            "failures / HTTP 429".into(),
            cells(&present, |s| {
                Some(format!("{} / {}", s.failures, s.rate_limited))
            }),
        ));
        if present.iter().flatten().any(|s| s.server.is_some()) {
            rows.push((
                "server CPU s (% of one core)".into(),
                cells(&present, |s| {
                    s.server
                        .as_ref()
                        .map(|u| format!("{} ({}%)", u.cpu_s, u.cpu_percent))
                }),
            ));
            rows.push((
                "server RSS start → end, peak (MB)".into(),
                cells(&present, |s| {
                    s.server.as_ref().map(|u| {
                        format!("{} → {}, {}", u.rss_start_mb, u.rss_end_mb, u.peak_rss_mb)
                    })
                }),
            ));
        }
        rows.push((
            "load tool CPU s".into(),
            cells(&present, |s| s.tool_cpu_s.map(|c| c.to_string())),
        ));
        rows.push((
            "measured phase (s)".into(),
            cells(&present, |s| Some(s.elapsed_s.to_string())),
        ));
        for (metric, values) in rows {
            let _ = writeln!(md, "| {scenario} | {metric} | {} |", values.join(" | "));
        }
    }

    let targets: Vec<(String, String)> = scenarios(runs)
        .into_iter()
        .flat_map(|scenario| {
            let mut seen = Vec::new();
            for run in runs {
                for t in find(run, &scenario)
                    .map(|s| s.targets.as_slice())
                    .unwrap_or(&[])
                {
                    if !seen.contains(&t.describe()) {
                        seen.push(t.describe());
                    }
                }
            }
            seen.into_iter().map(move |t| (scenario.clone(), t))
        })
        .collect();
    if !targets.is_empty() {
        md.push_str("\n## Targets\n\n");
        let _ = writeln!(md, "| Scenario | Target | {} |", labels.join(" | "));
        let _ = writeln!(md, "|---|---|{}", ":---:|".repeat(labels.len()));
        for (scenario, target) in targets {
            let values: Vec<String> = runs
                .iter()
                .map(|run| {
                    find(run, &scenario)
                        .and_then(|s| s.targets.iter().find(|t| t.describe() == target))
                        .map_or("–".into(), |t| {
                            let value = t.value.map_or("none".into(), |v| v.to_string());
                            format!("{value} {}", if t.met { "✓" } else { "✗" })
                        })
                })
                .collect();
            let _ = writeln!(md, "| {scenario} | `{target}` | {} |", values.join(" | "));
        }
    }
    let _ = write!(
        md,
        "\n## Charts\n\n![Latency percentiles]({latency})\n\n![Throughput]({throughput})\n"
    );
    md
}

fn cells(present: &[Option<&Summary>], value: impl Fn(&Summary) -> Option<String>) -> Vec<String> {
    present
        .iter()
        .map(|s| s.and_then(&value).unwrap_or_else(|| "–".into()))
        .collect()
}

fn keys(present: &[Option<&Summary>], of: impl Fn(&Summary) -> Vec<String>) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for key in present.iter().flatten().flat_map(|s| of(s)) {
        if !all.contains(&key) {
            all.push(key);
        }
    }
    all
}

fn latency_names(present: &[Option<&Summary>]) -> Vec<String> {
    keys(present, |s| {
        s.latency.iter().map(|l| l.name.clone()).collect()
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The x position of a percentile on a "nines" scale: p50 → 0.3, p90 → 1, p99 → 2, p99.9 → 3,
/// and the maximum drawn at 3.3.
fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        3.3
    } else {
        (-(1.0 - p / 100.0).log10()).min(3.3)
    }
}

/// A number for people: three significant digits or so (the JSON keeps full precision).
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || x == x.trunc() {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// Small multiples, one panel per scenario and latency: the percentile curve of each run, on a
/// log scale of milliseconds against a "nines" scale of percentiles.
fn latency_chart(runs: &[Run]) -> String {
    let mut panels: Vec<(String, String)> = Vec::new();
    for scenario in scenarios(runs) {
        let present: Vec<Option<&Summary>> = runs.iter().map(|r| find(r, &scenario)).collect();
        for latency in latency_names(&present) {
            panels.push((scenario.clone(), latency));
        }
    }
    let (pw, ph, columns) = (440.0, 250.0, 2usize);
    let (left, right, top, bottom) = (62.0, 14.0, 30.0, 36.0);
    let rows = panels.len().div_ceil(columns).max(1);
    let legend = 24.0;
    let width = pw * columns as f64;
    let height = ph * rows as f64 + legend;
    let mut svg = svg_open(width, height);
    legend_row(&mut svg, runs, 10.0, 16.0);
    for (n, (scenario, latency)) in panels.iter().enumerate() {
        let x0 = (n % columns) as f64 * pw;
        let y0 = legend + (n / columns) as f64 * ph;
        let (plot_w, plot_h) = (pw - left - right, ph - top - bottom);
        let curves: Vec<(usize, &Latency)> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                find(r, scenario)
                    .and_then(|s| s.latency(latency))
                    .map(|l| (i, l))
            })
            .collect();
        let all: Vec<f64> = curves
            .iter()
            .flat_map(|(_, l)| l.curve.iter().map(|p| p[1]))
            .collect();
        // Latency goals on this distribution's percentiles, drawn as dashed lines.
        let mut goals: Vec<(String, f64)> = Vec::new();
        for t in runs
            .iter()
            .filter_map(|r| find(r, scenario))
            .flat_map(|s| &s.targets)
        {
            if let Some((name, stat)) = t.metric.rsplit_once('.')
                && name == latency
                && !goals.iter().any(|(s, l)| s == stat && *l == t.limit)
            {
                goals.push((stat.to_owned(), t.limit));
            }
        }
        // Zeros (a delivery seen before its send was answered) sit on the bottom edge.
        let lo_ms = all
            .iter()
            .copied()
            .chain(goals.iter().map(|g| g.1))
            .filter(|&ms| ms > 0.0)
            .fold(f64::INFINITY, f64::min);
        let lo_ms = if lo_ms.is_finite() { lo_ms } else { 1.0 };
        let hi_ms = all
            .iter()
            .copied()
            .chain(goals.iter().map(|g| g.1))
            .fold(0.0, f64::max)
            .max(lo_ms);
        let lo = lo_ms.log10().floor();
        let hi = (hi_ms.log10().ceil()).max(lo + 1.0);
        let floor_ms = 10f64.powf(lo);
        let y_of =
            |ms: f64| y0 + top + plot_h - (ms.max(floor_ms).log10() - lo) / (hi - lo) * plot_h;
        let x_of = |p: f64| x0 + left + nines(p) / 3.3 * plot_w;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-weight="bold">{}: {}</text>"#,
            x0 + left,
            y0 + 18.0,
            escape(scenario),
            escape(latency)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{}" y="{}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##,
            x0 + left,
            y0 + top
        );
        let mut decade = lo;
        while decade <= hi {
            let ms = 10f64.powf(decade);
            let y = y_of(ms);
            let _ = writeln!(
                svg,
                r##"<line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end" font-size="11">{}</text>"##,
                x0 + left,
                x0 + left + plot_w,
                x0 + left - 4.0,
                y + 4.0,
                format_ms((ms * 1000.0).round() / 1000.0)
            );
            decade += 1.0;
        }
        for (p, name) in [
            (0.0, "p0"),
            (50.0, "p50"),
            (90.0, "p90"),
            (99.0, "p99"),
            (99.9, "p99.9"),
            (100.0, "max"),
        ] {
            let x = x_of(p);
            let _ = writeln!(
                svg,
                r##"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle" font-size="11">{name}</text>"##,
                y0 + top,
                y0 + top + plot_h,
                y0 + top + plot_h + 14.0
            );
        }
        for (stat, limit) in &goals {
            let y = y_of(*limit);
            let _ = writeln!(
                svg,
                r##"<line x1="{}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#333" stroke-dasharray="4 3"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">target {stat} ≤ {}</text>"##,
                x0 + left,
                x0 + left + plot_w,
                x0 + left + plot_w - 4.0,
                y - 4.0,
                format_ms(*limit)
            );
        }
        for (i, l) in &curves {
            let points: Vec<String> = l
                .curve
                .iter()
                .map(|p| format!("{:.1},{:.1}", x_of(p[0]), y_of(p[1])))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                COLOURS[i % COLOURS.len()],
                points.join(" ")
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="11">percentile</text>"#,
            x0 + left + plot_w / 2.0,
            y0 + top + plot_h + 28.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Horizontal bars, one group per scenario and one bar per run. Each group has its own scale
/// (units differ); a dashed line marks the throughput target where there is one.
fn throughput_chart(runs: &[Run]) -> String {
    let groups: Vec<String> = scenarios(runs)
        .into_iter()
        .filter(|s| {
            runs.iter()
                .any(|r| find(r, s).is_some_and(|s| s.throughput.is_some()))
        })
        .collect();
    let (width, label_w, bar_h, gap) = (800.0, 150.0, 20.0, 30.0);
    let value_w = 160.0;
    let group_h = gap + bar_h * runs.len() as f64 + 6.0;
    let legend = 24.0;
    let height = legend + group_h * groups.len().max(1) as f64 + 10.0;
    let mut svg = svg_open(width, height);
    legend_row(&mut svg, runs, 10.0, 16.0);
    let plot_w = width - label_w - value_w;
    for (g, scenario) in groups.iter().enumerate() {
        let y0 = legend + g as f64 * group_h;
        let bars: Vec<(usize, f64, String)> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let t = find(r, scenario)?.throughput.as_ref()?;
                Some((i, t.value, t.unit.clone()))
            })
            .collect();
        let target = runs.iter().find_map(|r| {
            find(r, scenario)?
                .targets
                .iter()
                .find(|t| t.metric == "throughput")
                .map(|t| t.limit)
        });
        let max = bars
            .iter()
            .map(|b| b.1)
            .chain(target)
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE);
        let unit = bars.first().map(|b| b.2.clone()).unwrap_or_default();
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{}" font-weight="bold">{} ({})</text>"#,
            y0 + gap - 8.0,
            escape(scenario),
            escape(&unit)
        );
        for (row, (i, value, unit)) in bars.iter().enumerate() {
            let y = y0 + gap + row as f64 * bar_h;
            let w = value / max * plot_w;
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end" font-size="12">{}</text><rect x="{label_w}" y="{y}" width="{w:.1}" height="{}" fill="{}"/><text x="{}" y="{}" font-size="12">{} {}</text>"#,
                label_w - 6.0,
                y + bar_h - 6.0,
                escape(&runs[*i].label),
                bar_h - 4.0,
                COLOURS[i % COLOURS.len()],
                label_w + w + 4.0,
                y + bar_h - 6.0,
                num(*value),
                escape(unit)
            );
        }
        if let Some(target) = target {
            let x = label_w + target / max * plot_w;
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#333" stroke-dasharray="4 3"/><text x="{x:.1}" y="{}" text-anchor="middle" font-size="11">target {target}</text>"##,
                y0 + gap - 4.0,
                y0 + gap + bar_h * bars.len() as f64,
                y0 + gap + bar_h * bars.len() as f64 + 11.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn svg_open(width: f64, height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    )
}

fn legend_row(svg: &mut String, runs: &[Run], x: f64, y: f64) {
    let mut at = x;
    for (i, run) in runs.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<rect x="{at}" y="{}" width="14" height="10" fill="{}"/><text x="{}" y="{y}">{}</text>"#,
            y - 10.0,
            COLOURS[i % COLOURS.len()],
            at + 18.0,
            escape(&run.label)
        );
        at += 30.0 + 8.0 * run.label.chars().count() as f64;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Target;

    fn sample(label: &str, ms: u64) -> Summary {
        let mut s = Summary::new("send", &serde_json::json!({"senders": 2}));
        s.label = label.into();
        s.set_throughput(100, Duration::from_millis(ms), "msg/s");
        s.add_latency(
            "send",
            &[Duration::from_millis(ms), Duration::from_millis(ms * 2)],
        );
        s.count("messages", 100);
        s.targets = vec![Target::at_least("throughput", 1000.0)];
        s.check_targets();
        s
    }

    #[test]
    fn writes_side_by_side_tables_and_charts() {
        let runs = vec![
            Run {
                label: "a".into(),
                summaries: vec![sample("a", 50)],
            },
            Run {
                label: "b<x>".into(),
                summaries: vec![sample("b<x>", 200)],
            },
        ];
        let dir = std::env::temp_dir().join(format!("roost-bench-report-{}", std::process::id()));
        let files = write(&dir, "both", &runs, &[]).unwrap();
        let md = std::fs::read_to_string(&files[0]).unwrap();
        assert!(md.contains("| Scenario | Metric | a | b<x> |"), "{md}");
        assert!(
            md.contains("| send | throughput (msg/s) | 2000 | 500 |"),
            "{md}"
        );
        assert!(
            md.contains("| send | `throughput >= 1000` | 2000 ✓ | 500 ✗ |"),
            "{md}"
        );
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("b&lt;x&gt;"));
        let bars = std::fs::read_to_string(&files[2]).unwrap();
        assert!(bars.contains("target 1000"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
