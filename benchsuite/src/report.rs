//! Results: rows, their ratios to shmport, the tables (terminal and
//! Markdown), the CSV file, and the targets.

use std::fmt::Write as _;

use crate::plan::{Wait, size_label};
use crate::stats::{Latency, Throughput};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Rtt,
    Oneway,
    Setup,
    Memcpy,
}

impl Workload {
    fn code(self) -> &'static str {
        match self {
            Workload::Rtt => "round_trip",
            Workload::Oneway => "one_way",
            Workload::Setup => "setup",
            Workload::Memcpy => "memcpy",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Figure {
    Latency(Latency),
    Throughput(Throughput),
}

/// One measured case.
#[derive(Debug)]
pub struct Row {
    pub workload: Workload,
    /// Identifies the variant (a transport or set-up code).
    pub key: String,
    pub name: String,
    pub wait: Option<Wait>,
    pub size: usize,
    /// Ring size, queue size, or how a set-up is done.
    pub note: String,
    /// The figure, or why the case failed (damaged messages included).
    pub figure: Result<Figure, String>,
    /// The row this one's ratio is taken against.
    pub ref_key: Option<String>,
    pub ratio: Option<f64>,
}

impl Row {
    /// The headline number: median nanoseconds, or median bytes per second.
    pub fn value(&self) -> Option<f64> {
        match self.figure {
            Ok(Figure::Latency(l)) => Some(l.median as f64),
            Ok(Figure::Throughput(t)) => Some(t.median),
            Err(_) => None,
        }
    }

    pub fn label(&self) -> String {
        match self.wait {
            Some(w) => format!("{} ({})", self.name, w.label()),
            None => self.name.clone(),
        }
    }
}

/// Fill in each row's ratio: its figure over its reference row's (same
/// workload and size).
pub fn link_ratios(rows: &mut [Row]) {
    let values: Vec<(Workload, usize, String, Option<f64>)> = rows
        .iter()
        .map(|r| (r.workload, r.size, r.key.clone(), r.value()))
        .collect();
    for row in rows.iter_mut() {
        let Some(ref_key) = &row.ref_key else {
            continue;
        };
        let reference = values
            .iter()
            .find(|(w, s, k, _)| *w == row.workload && *s == row.size && k == ref_key)
            .and_then(|v| v.3);
        row.ratio = match (row.value(), reference) {
            (Some(v), Some(r)) if r > 0.0 => Some(v / r),
            _ => None,
        };
    }
}

pub fn find<'a>(rows: &'a [Row], workload: Workload, key: &str, size: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.workload == workload && r.key == key && r.size == size)
}

// ------------------------------------------------------------ formatting

pub fn ns(v: u64) -> String {
    let v = v as f64;
    if v < 1e3 {
        format!("{v:.0} ns")
    } else if v < 1e6 {
        format!("{:.1} µs", v / 1e3)
    } else {
        format!("{:.2} ms", v / 1e6)
    }
}

pub const GIB: f64 = (1u64 << 30) as f64;

pub fn gib(bytes_per_s: f64) -> String {
    let g = bytes_per_s / GIB;
    if g >= 10.0 {
        format!("{g:.1}")
    } else if g >= 0.1 {
        format!("{g:.2}")
    } else {
        format!("{g:.3}")
    }
}

fn msgs(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

fn ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 100.0 => format!("{r:.0}×"),
        Some(r) if r >= 10.0 => format!("{r:.1}×"),
        Some(r) => format!("{r:.2}×"),
        None => "-".into(),
    }
}

/// A table printed as aligned text or as Markdown.
pub struct Table {
    head: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named `head`; those starting with '>' are right-aligned.
    pub fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.iter().map(|h| h.trim_start_matches('>')).collect(),
            right: head.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn text(&self) -> String {
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i] - c.chars().count();
                if i > 0 {
                    s.push_str("  ");
                }
                if self.right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let head: Vec<String> = self.head.iter().map(|h| h.to_string()).collect();
        let mut out = line(&head);
        let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n|", self.head.join(" | "));
        for &r in &self.right {
            out.push_str(if r { "---:|" } else { "---|" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }
}

fn failed(e: &str) -> String {
    format!("FAILED: {e}")
}

pub fn rtt_table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "payload",
        "transport",
        "wait",
        ">median",
        ">p99",
        ">p99.9",
        ">× shmport",
        ">n",
        "notes",
    ]);
    for r in rows.iter().filter(|r| r.workload == Workload::Rtt) {
        let mut cells = vec![
            size_label(r.size),
            r.name.clone(),
            r.wait.map_or("", Wait::label).into(),
        ];
        match &r.figure {
            Ok(Figure::Latency(l)) => cells.extend([
                ns(l.median),
                ns(l.p99),
                ns(l.p999),
                ratio(r.ratio),
                l.n.to_string(),
                r.note.clone(),
            ]),
            Ok(Figure::Throughput(_)) => unreachable!("a round trip has a latency"),
            Err(e) => cells.extend([
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                failed(e),
            ]),
        }
        t.push(cells);
    }
    t
}

pub fn oneway_table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "payload",
        "transport",
        "wait",
        ">GiB/s",
        ">slowest–fastest",
        ">msg/s",
        ">× shmport",
        "notes",
    ]);
    for r in rows
        .iter()
        .filter(|r| matches!(r.workload, Workload::Oneway | Workload::Memcpy))
    {
        let mut cells = vec![
            size_label(r.size),
            r.name.clone(),
            r.wait.map_or("", Wait::label).into(),
        ];
        match &r.figure {
            Ok(Figure::Throughput(x)) => cells.extend([
                gib(x.median),
                format!("{}–{}", gib(x.min), gib(x.max)),
                msgs(x.msgs),
                ratio(r.ratio),
                r.note.clone(),
            ]),
            Ok(Figure::Latency(_)) => unreachable!("one way has a throughput"),
            Err(e) => cells.extend(["-".into(), "-".into(), "-".into(), "-".into(), failed(e)]),
        }
        t.push(cells);
    }
    t
}

pub fn setup_table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "transport",
        "how",
        "first round trip",
        ">median",
        ">p99",
        ">× shmport",
        "compared with",
        ">n",
    ]);
    for r in rows.iter().filter(|r| r.workload == Workload::Setup) {
        let mut cells = vec![
            r.name.clone(),
            r.note.clone(),
            r.wait.map_or("", Wait::label).into(),
        ];
        let reference = r
            .ref_key
            .as_ref()
            .and_then(|k| {
                rows.iter()
                    .find(|x| x.workload == Workload::Setup && &x.key == k)
            })
            .map(|x| x.note.clone())
            .unwrap_or_default();
        match &r.figure {
            Ok(Figure::Latency(l)) => cells.extend([
                ns(l.median),
                ns(l.p99),
                ratio(r.ratio),
                reference,
                l.n.to_string(),
            ]),
            Ok(Figure::Throughput(_)) => unreachable!("a set-up has a latency"),
            Err(e) => cells.extend(["-".into(), "-".into(), "-".into(), failed(e), "-".into()]),
        }
        t.push(cells);
    }
    t
}

// ---------------------------------------------------------------- targets

/// One of the targets, evaluated on this run.
pub struct Target {
    pub what: &'static str,
    pub goal: &'static str,
    /// The measured ratio and what it compares.
    pub measured: String,
    /// `None` when a figure is missing (a case failed).
    pub met: Option<bool>,
    /// By how much, when missed.
    pub shortfall: String,
}

pub fn targets(rows: &[Row]) -> Vec<Target> {
    let value = |w, key: &str, size| find(rows, w, key, size).and_then(Row::value);
    let shm_spin = "shm-raw/spin/inline";
    let mut out = Vec::new();

    // 1. 64 B round trip, spin: shmport ≤ 0.4 × iceoryx2.
    let (s, i) = (
        value(Workload::Rtt, shm_spin, 64),
        value(Workload::Rtt, "iceoryx2/spin/inline", 64),
    );
    let r = s.zip(i).map(|(s, i)| s / i);
    out.push(Target {
        what: "64 B round trip, busy-poll: shmport raw vs iceoryx2 (medians)",
        goal: "≤ 0.40×",
        measured: match (s, i, r) {
            (Some(s), Some(i), Some(r)) => {
                format!("{:.2}× ({} vs {})", r, ns(s as u64), ns(i as u64))
            }
            _ => "-".into(),
        },
        met: r.map(|r| r <= 0.4),
        shortfall: r
            .filter(|&r| r > 0.4)
            .map(|r| format!("{:.0}% above the target", (r / 0.4 - 1.0) * 100.0))
            .unwrap_or_default(),
    });

    // 2. 64 B one way: shmport ≥ 10 × the Unix socket.
    let (s, u) = (
        value(Workload::Oneway, shm_spin, 64),
        value(Workload::Oneway, "uds/block/inline", 64),
    );
    let r = s.zip(u).map(|(s, u)| s / u);
    // The same against shmport's block path, which sleeps like the socket.
    let block = value(Workload::Oneway, "shm-raw/block/inline", 64)
        .zip(u)
        .map(|(b, u)| format!("; block path (sleeps too): {:.1}×", b / u))
        .unwrap_or_default();
    out.push(Target {
        what: "64 B one-way throughput: shmport raw (busy-poll) vs unix socket (sleep)",
        goal: "≥ 10×",
        measured: match (s, u, r) {
            (Some(s), Some(u), Some(r)) => format!(
                "{:.1}× ({} vs {} msg/s){block}",
                r,
                msgs(s / 64.0),
                msgs(u / 64.0)
            ),
            _ => "-".into(),
        },
        met: r.map(|r| r >= 10.0),
        shortfall: r
            .filter(|&r| r < 10.0)
            .map(|r| format!("{:.0}% below the target", (1.0 - r / 10.0) * 100.0))
            .unwrap_or_default(),
    });

    // 3. 1 MiB and 4 MiB one way: shmport ≥ 0.5 × memcpy.
    for (size, what) in [
        (
            1 << 20,
            "1 MiB one-way throughput: shmport raw (busy-poll) vs one-thread memcpy",
        ),
        (
            4 << 20,
            "4 MiB one-way throughput: shmport raw (busy-poll) vs one-thread memcpy",
        ),
    ] {
        let (s, m) = (
            value(Workload::Oneway, shm_spin, size),
            value(Workload::Memcpy, "memcpy", size),
        );
        let r = s.zip(m).map(|(s, m)| s / m);
        out.push(Target {
            what,
            goal: "≥ 0.50×",
            measured: match (s, m, r) {
                (Some(s), Some(m), Some(r)) => {
                    format!("{:.2}× ({} vs {} GiB/s)", r, gib(s), gib(m))
                }
                _ => "-".into(),
            },
            met: r.map(|r| r >= 0.5),
            shortfall: r
                .filter(|&r| r < 0.5)
                .map(|r| format!("{:.0}% below the target", (1.0 - r / 0.5) * 100.0))
                .unwrap_or_default(),
        });
    }
    out
}

pub fn targets_table(targets: &[Target]) -> Table {
    let mut t = Table::new(&["target", "goal", "measured", "met", "shortfall"]);
    for x in targets {
        t.push(vec![
            x.what.into(),
            x.goal.into(),
            x.measured.clone(),
            match x.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "no figure".into(),
            },
            x.shortfall.clone(),
        ]);
    }
    t
}

// ------------------------------------------------------------------- CSV

pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "workload,transport,wait,payload_bytes,n,median_ns,p99_ns,p999_ns,min_ns,\
         gib_per_s,gib_per_s_slowest,gib_per_s_fastest,msgs_per_s,reference,ratio_to_reference,\
         intact,note,error\n",
    );
    for r in rows {
        let reference = r
            .ref_key
            .as_ref()
            .and_then(|k| {
                rows.iter()
                    .find(|x| x.workload == r.workload && x.size == r.size && &x.key == k)
            })
            .map(|x| x.label())
            .unwrap_or_default();
        let (lat, thr) = match &r.figure {
            Ok(Figure::Latency(l)) => (
                format!("{},{},{},{},{}", l.n, l.median, l.p99, l.p999, l.min),
                ",,,".to_string(),
            ),
            Ok(Figure::Throughput(t)) => (
                format!("{},,,,", t.reps),
                format!(
                    "{:.4},{:.4},{:.4},{:.0}",
                    t.median / GIB,
                    t.min / GIB,
                    t.max / GIB,
                    t.msgs
                ),
            ),
            Err(_) => (",,,,".into(), ",,,".into()),
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.workload.code(),
            quote(&r.name),
            r.wait.map_or("", Wait::label),
            r.size,
            lat,
            thr,
            quote(&reference),
            r.ratio.map(|x| format!("{x:.4}")).unwrap_or_default(),
            r.figure.is_ok(),
            quote(&r.note),
            quote(r.figure.as_ref().err().map_or("", |e| e.as_str())),
        );
    }
    out
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
