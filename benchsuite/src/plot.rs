//! The plot: round-trip latency and one-way throughput against payload
//! size, log-log, one line per transport and wait path, as a hand-written
//! SVG.

use std::fmt::Write as _;

use crate::plan::Wait;
use crate::report::{Figure, GIB, Row, Workload};

const W: f64 = 1000.0;
const PANEL_W: f64 = 400.0;
const PANEL_H: f64 = 300.0;
const TOP: f64 = 60.0;
const LEFT: [f64; 2] = [80.0, 580.0];
/// Payload sizes span 2^6 ..= 2^22 bytes.
const X_MIN: f64 = 6.0;
const X_MAX: f64 = 22.0;

fn color(name: &str) -> &'static str {
    match name {
        "shmport raw" => "#1f5fbf",
        "shmport typed" => "#17a2b8",
        "shmport raw, 1 MiB ring" => "#7b4fbf",
        "iceoryx2" | "iceoryx2 + event" => "#d62728",
        "unix socket" => "#2ca02c",
        "pipe" => "#ff7f0e",
        "ipc-channel" => "#8c564b",
        _ => "#000000",
    }
}

fn dash(wait: Option<Wait>) -> &'static str {
    match wait {
        Some(Wait::BusyPoll) => "",
        Some(Wait::Sleep) => " stroke-dasharray=\"7 4\"",
        None => " stroke-dasharray=\"2 3\"",
    }
}

struct Series {
    label: String,
    color: &'static str,
    dash: &'static str,
    points: Vec<(usize, f64)>,
}

fn series(rows: &[Row], workload: Workload, value: impl Fn(&Figure) -> f64) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.workload == workload) {
        let Ok(fig) = &r.figure else { continue };
        let i = match keys.iter().position(|k| *k == r.key) {
            Some(i) => i,
            None => {
                keys.push(&r.key);
                out.push(Series {
                    label: r.label(),
                    color: color(&r.name),
                    dash: dash(r.wait),
                    points: Vec::new(),
                });
                out.len() - 1
            }
        };
        out[i].points.push((r.size, value(fig)));
    }
    out
}

/// Decades covering all values.
fn decades(all: &[&Series]) -> (i32, i32) {
    let vals = all.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = vals.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi || lo <= 0.0 {
        return (0, 1);
    }
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a, b.max(a + 1))
}

struct Panel<'a> {
    left: f64,
    title: &'a str,
    y_label: &'a str,
    tick: fn(i32) -> String,
}

fn x_of(left: f64, size: usize) -> f64 {
    left + ((size as f64).log2() - X_MIN) / (X_MAX - X_MIN) * PANEL_W
}

fn draw(svg: &mut String, p: &Panel<'_>, series: &[Series]) {
    let refs: Vec<&Series> = series.iter().collect();
    let (lo, hi) = decades(&refs);
    let y_of = |v: f64| TOP + PANEL_H - (v.log10() - lo as f64) / (hi - lo) as f64 * PANEL_H;
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"##,
        p.left + PANEL_W / 2.0,
        TOP - 14.0,
        p.title
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##,
        p.left
    );
    for d in lo..=hi {
        let y = y_of(10f64.powi(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            p.left,
            p.left + PANEL_W,
            p.left - 6.0,
            y + 4.0,
            (p.tick)(d)
        );
    }
    for (size, label) in [
        (64usize, "64 B"),
        (4 << 10, "4 KiB"),
        (64 << 10, "64 KiB"),
        (1 << 20, "1 MiB"),
        (4 << 20, "4 MiB"),
    ] {
        let x = x_of(p.left, size);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{label}</text>"##,
            TOP + PANEL_H,
            TOP + PANEL_H + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle">payload size</text>"##,
        p.left + PANEL_W / 2.0,
        TOP + PANEL_H + 34.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"##,
        p.left - 58.0,
        TOP + PANEL_H / 2.0,
        p.left - 58.0,
        TOP + PANEL_H / 2.0,
        p.y_label
    );
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(size, v)| format!("{:.1},{:.1}", x_of(p.left, size), y_of(v)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{}/>"##,
            pts.join(" "),
            s.color,
            s.dash
        );
        for &(size, v) in &s.points {
            let _ = writeln!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"##,
                x_of(p.left, size),
                y_of(v),
                s.color
            );
        }
    }
}

fn latency_tick(d: i32) -> String {
    match d {
        ..=2 => format!("{} ns", 10i64.pow(d.max(0) as u32)),
        3..=5 => format!("{} µs", 10i64.pow((d - 3) as u32)),
        6..=8 => format!("{} ms", 10i64.pow((d - 6) as u32)),
        _ => format!("{} s", 10i64.pow((d - 9) as u32)),
    }
}

fn throughput_tick(d: i32) -> String {
    if d >= 0 {
        format!("{}", 10i64.pow(d as u32))
    } else {
        format!("{}", 10f64.powi(d))
    }
}

/// The SVG document.
pub fn svg(rows: &[Row], subtitle: &str) -> String {
    let rtt = series(rows, Workload::Rtt, |f| match f {
        Figure::Latency(l) => l.median as f64,
        Figure::Throughput(_) => f64::NAN,
    });
    let mut thr = series(rows, Workload::Oneway, |f| match f {
        Figure::Throughput(t) => t.median / GIB,
        Figure::Latency(_) => f64::NAN,
    });
    thr.extend(series(rows, Workload::Memcpy, |f| match f {
        Figure::Throughput(t) => t.median / GIB,
        Figure::Latency(_) => f64::NAN,
    }));
    // Legend: every series of either panel, once.
    let mut legend: Vec<(String, &'static str, &'static str)> = Vec::new();
    for s in rtt.iter().chain(&thr) {
        if !legend.iter().any(|l| l.0 == s.label) {
            legend.push((s.label.clone(), s.color, s.dash));
        }
    }
    let rows_of_legend = legend.len().div_ceil(3);
    let height = TOP + PANEL_H + 60.0 + rows_of_legend as f64 * 20.0 + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif">"##
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{}" y="20" font-size="12" text-anchor="middle" fill="#444">{}</text>"##,
        W / 2.0,
        escape(subtitle)
    );
    draw(
        &mut svg,
        &Panel {
            left: LEFT[0],
            title: "Round trip, median (lower is better)",
            y_label: "round-trip time",
            tick: latency_tick,
        },
        &rtt,
    );
    draw(
        &mut svg,
        &Panel {
            left: LEFT[1],
            title: "One-way throughput, median (higher is better)",
            y_label: "GiB/s",
            tick: throughput_tick,
        },
        &thr,
    );
    let base = TOP + PANEL_H + 62.0;
    for (i, (label, color, dash)) in legend.iter().enumerate() {
        let x = 60.0 + (i % 3) as f64 * 310.0;
        let y = base + (i / 3) as f64 * 20.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}" font-size="12">{}</text>"##,
            x + 30.0,
            x + 36.0,
            y + 4.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" font-size="11" fill="#444" text-anchor="middle">solid: busy-poll · dashed: sleep (woken by the kernel) · dotted: memcpy in one thread</text>"##,
        W / 2.0,
        base + rows_of_legend as f64 * 20.0 + 8.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
