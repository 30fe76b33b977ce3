//! shmport against the transports users would pick instead, in one run.
//!
//! ```text
//! cargo run --release -p shmport-benchsuite                  # full run, a few minutes
//! cargo run --release -p shmport-benchsuite -- --quick      # CI: few iterations, every byte checked
//! cargo run --release -p shmport-benchsuite -- --out DIR    # where results go (default target/benchsuite)
//! ```
//!
//! Between two processes pinned to two CPUs, for payloads of 64 B to 4 MiB:
//! round-trip latency (median, p99, p99.9) and one-way throughput of
//! shmport (raw and typed, spin and block paths), a Unix domain socket, a
//! pipe, ipc-channel and iceoryx2 (busy-poll, and with its event service to
//! sleep); a one-thread memcpy of each size; and the cost of setting up a
//! channel between two running processes. Prints the tables with each
//! row's ratio to shmport on the same wait path, writes `results.csv`,
//! `report.md` and `plot.svg`, and exits non-zero if any transport lost,
//! reordered or damaged a message.

mod cases;
mod cleanup;
mod link;
mod machine;
mod measure;
mod payload;
mod peer;
mod plan;
mod plot;
mod report;
mod setup;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cases::{Case, Tally};
use link::{Mode, Session};
use plan::{Counts, SIZES, TRANSPORTS, Transport, size_label};
use report::{Row, Workload};

/// Any failure, with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// The suite's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

const USAGE: &str = "\
usage: shmport-benchsuite [--quick] [--out DIR] [--only NAME] [--part PART]
  --quick      a few thousand iterations per case, every byte of every
               message checked (CI); figures are not meaningful
  --out DIR    where results.csv, report.md and plot.svg go
               (default: target/benchsuite in the workspace)
  --only NAME  only transports whose name contains NAME (shmport always
               runs: it is every ratio's reference)
  --part PART  only this part: round-trip, one-way or setup (repeatable;
               the memcpy baseline runs with one-way)";

struct Options {
    quick: bool,
    out: PathBuf,
    only: Option<String>,
    parts: Option<Vec<Workload>>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options {
            quick: false,
            // The workspace's target directory.
            out: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("target/benchsuite"),
            only: None,
            parts: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => opts.quick = true,
                "--out" => opts.out = it.next().ok_or("--out needs a directory")?.into(),
                "--only" => opts.only = Some(it.next().ok_or("--only needs a name")?.clone()),
                "--part" => {
                    let part = it.next().ok_or("--part needs a name")?;
                    let w = match part.as_str() {
                        "round-trip" => Workload::Rtt,
                        "one-way" => Workload::Oneway,
                        "setup" => Workload::Setup,
                        _ => return Err(format!("unknown part {part:?}\n{USAGE}").into()),
                    };
                    opts.parts.get_or_insert_with(Vec::new).push(w);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
            }
        }
        Ok(opts)
    }

    fn runs(&self, w: Workload) -> bool {
        self.parts.as_ref().is_none_or(|p| p.contains(&w))
    }

    fn wants(&self, t: Transport) -> bool {
        t.is_shmport()
            || self
                .only
                .as_ref()
                .is_none_or(|o| t.name().contains(o.as_str()))
    }
}

fn main() -> ExitCode {
    // iceoryx2 logs on its own (its failures reach the suite as errors
    // anyway); IOX2_LOG_LEVEL overrides.
    iceoryx2::prelude::set_log_level_from_env_or(iceoryx2::prelude::LogLevel::Error);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--peer") {
        return peer_main(&args[1..]);
    }
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            cleanup::emergency();
            eprintln!("benchsuite: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A peer process: serve one session (or the set-ups), then exit.
fn peer_main(args: &[String]) -> ExitCode {
    let result = peer::init_in_peer().and_then(|()| match args.first().map(String::as_str) {
        Some("setup") => setup::serve(&args[1..]),
        _ => link::serve(Session::parse(args).ok_or("peer: bad arguments")?),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchsuite peer {args:?}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<bool> {
    let counts = Counts::new(opts.quick);
    // Before pinning, which narrows what this process sees of the machine.
    let machine = machine::Machine::read();
    let cpus = peer::Cpus::pick();
    if let Some(cpu) = cpus.main {
        peer::pin(cpu)?;
    }
    let removed = cleanup::start()?;
    for r in &removed {
        eprintln!("removed a leftover of an earlier, killed run: {r}");
    }
    let limit = if opts.quick {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(180)
    };
    let started = Instant::now();
    eprintln!(
        "shmport benchsuite, {} mode: {}; {}",
        if opts.quick { "quick" } else { "full" },
        cpus.describe(),
        machine.one_line()
    );

    let mut cases: Vec<Case> = Vec::new();
    if opts.runs(Workload::Oneway) {
        for size in SIZES {
            cases.push(Case::Memcpy(size));
        }
    }
    for mode in [Mode::Echo, Mode::Sink] {
        let workload = match mode {
            Mode::Echo => Workload::Rtt,
            Mode::Sink => Workload::Oneway,
        };
        if !opts.runs(workload) {
            continue;
        }
        for size in SIZES {
            for t in TRANSPORTS {
                if t.runs_at(size) && opts.wants(t) {
                    cases.push(Case::Link(Session {
                        transport: t,
                        size,
                        mode,
                        verify: opts.quick,
                    }));
                }
            }
        }
    }
    for s in setup::SETUPS {
        if !opts.runs(Workload::Setup) {
            break;
        }
        if s.name() == "shmport"
            || opts
                .only
                .as_ref()
                .is_none_or(|o| s.name().contains(o.as_str()))
        {
            cases.push(Case::Setup(s));
        }
    }

    let tallies_len = cases.len();
    let mut tallies: Vec<Tally> = cases.into_iter().map(Tally::new).collect();
    for round in 1..=counts.rounds {
        let t0 = Instant::now();
        for (i, tally) in tallies.iter_mut().enumerate() {
            let failed_before = tally.error().is_some();
            tally.run_round(counts, cpus, limit);
            if counts.rounds == 1 || round == 1 {
                eprintln!(
                    "[{:>3}/{}] {}{}",
                    i + 1,
                    tallies_len,
                    tally.label(),
                    tally
                        .error()
                        .map(|e| format!(": FAILED: {e}"))
                        .unwrap_or_default()
                );
            } else if let (false, Some(e)) = (failed_before, tally.error()) {
                eprintln!("{}: FAILED: {e}", tally.label());
            }
        }
        eprintln!(
            "round {round}/{} done in {:.0} s",
            counts.rounds,
            t0.elapsed().as_secs_f64()
        );
    }
    let mut rows: Vec<Row> = tallies.into_iter().map(Tally::row).collect();
    report::link_ratios(&mut rows);
    let left = cleanup::finish();
    let elapsed = started.elapsed();

    let targets = report::targets(&rows);
    let failures: Vec<&Row> = rows.iter().filter(|r| r.figure.is_err()).collect();
    let header = header(opts, &machine, cpus, counts, elapsed);
    print!("{}", text_report(&header, &rows, &targets, &left));
    std::fs::create_dir_all(&opts.out)?;
    std::fs::write(opts.out.join("results.csv"), report::csv(&rows))?;
    std::fs::write(
        opts.out.join("report.md"),
        markdown_report(&header, &rows, &targets, &left),
    )?;
    let subtitle = format!(
        "{}, {}; {}",
        machine.date,
        machine.one_line(),
        if opts.quick {
            "quick mode (not meaningful)"
        } else {
            "full run"
        }
    );
    std::fs::write(opts.out.join("plot.svg"), plot::svg(&rows, &subtitle))?;
    println!(
        "\nwrote {}/{{results.csv,report.md,plot.svg}}",
        opts.out.display()
    );
    if failures.is_empty() {
        println!(
            "every transport delivered every message intact ({} checked)",
            if opts.quick {
                "every byte"
            } else {
                "sequence stamps at both ends"
            }
        );
        Ok(true)
    } else {
        println!("{} cases FAILED:", failures.len());
        for f in failures {
            if let Err(e) = &f.figure {
                println!(
                    "  {} {} {}: {e}",
                    f.workload_label(),
                    size_label(f.size),
                    f.label()
                );
            }
        }
        Ok(false)
    }
}

impl Row {
    fn workload_label(&self) -> &'static str {
        match self.workload {
            Workload::Rtt => "round trip",
            Workload::Oneway => "one way",
            Workload::Setup => "set-up",
            Workload::Memcpy => "memcpy",
        }
    }
}

fn header(
    opts: &Options,
    machine: &machine::Machine,
    cpus: peer::Cpus,
    counts: Counts,
    elapsed: Duration,
) -> Vec<String> {
    vec![
        format!(
            "Run: {} ({} mode, {:.0} s)",
            machine.date,
            if opts.quick { "quick" } else { "full" },
            elapsed.as_secs_f64()
        ),
        format!("Machine: {}", machine.describe()),
        format!(
            "Load average (1 min) at the start and the end: {} and {} (anything above 0 is other work sharing the CPUs)",
            machine.load,
            machine::load_average()
        ),
        format!(
            "Processes: two per case and round, {}; the same warm-up for every transport ({} ms of the same workload, at least 10 round trips or one batch, before measuring); {}",
            cpus.describe(),
            counts.warmup.as_millis(),
            if counts.rounds == 1 {
                "one round".to_string()
            } else {
                format!(
                    "{} rounds, each running every case once in the same order (a case's figures pool its rounds; one-way throughput is the median round)",
                    counts.rounds
                )
            }
        ),
        format!(
            "Checked: {}",
            if opts.quick {
                "every byte of every message, and its sequence number"
            } else {
                "every message's sequence number, stamped at both ends"
            }
        ),
    ]
}

const LEGEND: &str = "\
Wait paths. busy-poll: the receiver polls on its own CPU (shmport spin path: spin 10 s \
before parking, so it never parks; iceoryx2: receive() in a loop). sleep: the receiver \
blocks in the kernel until woken (shmport block path: spin 0, parks on the port's socket at \
once; unix socket and pipe: read; ipc-channel: recvmsg; iceoryx2 + event: listener wait, the \
sender notifies after each send). × shmport = this row's median / shmport raw's median on \
the same wait path and payload: busy-poll rows against shmport raw (busy-poll), sleeping \
rows against shmport raw (sleep). Round trip: above 1× is slower than shmport. Throughput: \
below 1× is slower. The one-way receiver checks the stamps at both ends of each message \
and reads no other byte (zero-copy transports never copy the payload; sockets and pipes \
copy it into the receiver's buffer).";

fn text_report(
    header: &[String],
    rows: &[Row],
    targets: &[report::Target],
    left: &[String],
) -> String {
    let mut s = String::new();
    s.push('\n');
    for h in header {
        s.push_str(h);
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&wrap(LEGEND, 100));
    s.push_str("\n== Round trip (payload out, same payload back)\n");
    s.push_str(&report::rtt_table(rows).text());
    s.push_str("\n== One-way throughput (GiB/s = 2^30 bytes/s; msg/s for the same run)\n");
    s.push_str(&report::oneway_table(rows).text());
    s.push_str(
        "\n== Set-up: a new channel between two running processes, until its first 64 B round trip\n",
    );
    s.push_str(&report::setup_table(rows).text());
    s.push_str("\n== Targets (this run)\n");
    s.push_str(&report::targets_table(targets).text());
    s.push_str(&leftovers(left));
    s
}

fn markdown_report(
    header: &[String],
    rows: &[Row],
    targets: &[report::Target],
    left: &[String],
) -> String {
    let mut s = String::from("# shmport benchsuite report\n\n");
    for h in header {
        s.push_str(&format!("- {h}\n"));
    }
    s.push('\n');
    s.push_str(LEGEND);
    s.push_str("\n\n## Round trip\n\n");
    s.push_str(&report::rtt_table(rows).markdown());
    s.push_str("\n## One-way throughput\n\n");
    s.push_str(&report::oneway_table(rows).markdown());
    s.push_str("\n## Set-up\n\n");
    s.push_str(&report::setup_table(rows).markdown());
    s.push_str("\n## Targets\n\n");
    s.push_str(&report::targets_table(targets).markdown());
    s.push_str(&leftovers(left));
    s
}

fn leftovers(left: &[String]) -> String {
    if left.is_empty() {
        "\nNothing was left in /dev/shm or the run's directory.\n".into()
    } else {
        format!(
            "\nRemoved {} objects left in /dev/shm after every port was dropped: {}\n",
            left.len(),
            left.join(", ")
        )
    }
}

fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}
