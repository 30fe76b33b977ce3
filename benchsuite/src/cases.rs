//! The cases of a run, and what their rounds gather.

use std::time::Duration;

use crate::link::{self, Mode, Session};
use crate::peer::Cpus;
use crate::plan::{self, Counts, Kind, Ring, Transport, size_label};
use crate::report::{Figure, Row, Workload};
use crate::stats::{Latency, Throughput};
use crate::{measure, payload, setup};

/// One thing measured: a transport at a payload size in one mode, a
/// memcpy, or a way to set up a channel.
#[derive(Debug, Clone, Copy)]
pub enum Case {
    Memcpy(usize),
    Link(Session),
    Setup(setup::Setup),
}

/// What a case's rounds have gathered so far.
pub struct Tally {
    pub case: Case,
    /// Round-trip or set-up times, nanoseconds, all rounds pooled.
    samples: Vec<u64>,
    /// Seconds per repetition (one-way, memcpy), one per round.
    secs: Vec<f64>,
    /// Messages (or copies) per repetition.
    per_rep: usize,
    /// The first failure; a failed case is not run again.
    error: Option<String>,
}

impl Tally {
    pub fn new(case: Case) -> Tally {
        Tally {
            case,
            samples: Vec::new(),
            secs: Vec::new(),
            per_rep: 0,
            error: None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Run one round of the case (unless it failed before).
    pub fn run_round(&mut self, counts: Counts, cpus: Cpus, limit: Duration) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.round(counts, cpus, limit) {
            self.error = Some(e.to_string());
        }
    }

    fn round(&mut self, counts: Counts, cpus: Cpus, limit: Duration) -> crate::Result<()> {
        match self.case {
            Case::Memcpy(size) => {
                let (secs, per_rep) = measure::memcpy(size, counts);
                self.secs.push(secs);
                self.per_rep = per_rep;
            }
            Case::Link(session) => match session.mode {
                Mode::Echo => {
                    let work = measure::Rtt {
                        size: session.size,
                        counts,
                    };
                    let run = link::run(session, cpus, limit, work)?;
                    if run.damaged > 0 {
                        return Err(format!("{} echoes came back damaged", run.damaged).into());
                    }
                    self.samples.extend(run.samples);
                }
                Mode::Sink => {
                    let work = measure::Oneway {
                        size: session.size,
                        counts,
                    };
                    let run = link::run(session, cpus, limit, work)?;
                    if run.damaged > 0 {
                        return Err(format!("{} batches were not acked intact", run.damaged).into());
                    }
                    self.secs.push(run.secs);
                    self.per_rep = run.msgs;
                }
            },
            Case::Setup(s) => {
                let times = setup::measure(s, counts.setups, cpus, limit)?;
                self.samples.extend(times);
            }
        }
        Ok(())
    }

    /// The case's row, from everything gathered.
    pub fn row(self) -> Row {
        let latency = |samples: Vec<u64>| {
            Latency::of(samples)
                .map(Figure::Latency)
                .ok_or_else(|| "no samples".to_string())
        };
        let throughput = |secs: &[f64], per_rep: usize, size: usize| {
            Throughput::of(secs, per_rep, size)
                .map(Figure::Throughput)
                .ok_or_else(|| "no repetitions".to_string())
        };
        let error = self.error;
        let figure = |f: Result<Figure, String>| match error {
            Some(e) => Err(e),
            None => f,
        };
        match self.case {
            Case::Memcpy(size) => Row {
                workload: Workload::Memcpy,
                key: "memcpy".into(),
                name: "memcpy, one thread".into(),
                wait: None,
                size,
                note: "copy_from_slice, same process; fixed placement, best of 5".into(),
                figure: figure(throughput(&self.secs, self.per_rep, size)),
                ref_key: None,
                ratio: None,
            },
            Case::Link(session) => {
                let t = session.transport;
                let (workload, f) = match session.mode {
                    Mode::Echo => (Workload::Rtt, latency(self.samples)),
                    Mode::Sink => (
                        Workload::Oneway,
                        throughput(&self.secs, self.per_rep, session.size),
                    ),
                };
                Row {
                    workload,
                    key: t.code(),
                    name: t.name().into(),
                    wait: Some(t.wait),
                    size: session.size,
                    note: note(t, session.size),
                    figure: figure(f),
                    ref_key: Some(t.reference().code()).filter(|k| *k != t.code()),
                    ratio: None,
                }
            }
            Case::Setup(s) => {
                let key = format!("setup:{s:?}");
                let ref_key = format!("setup:{:?}", s.reference());
                Row {
                    workload: Workload::Setup,
                    name: s.name().into(),
                    wait: Some(s.wait()),
                    size: payload::CTRL_LEN,
                    note: s.how().into(),
                    figure: figure(latency(self.samples)),
                    ratio: None,
                    ref_key: Some(ref_key).filter(|k| *k != key),
                    key,
                }
            }
        }
    }

    /// "round trip 64 B shmport raw (busy-poll)".
    pub fn label(&self) -> String {
        match self.case {
            Case::Memcpy(size) => format!("memcpy {}", size_label(size)),
            Case::Link(s) => format!(
                "{} {} {} ({})",
                match s.mode {
                    Mode::Echo => "round trip",
                    Mode::Sink => "one way",
                },
                size_label(s.size),
                s.transport.name(),
                s.transport.wait.label()
            ),
            Case::Setup(s) => format!("set-up {} ({})", s.name(), s.how()),
        }
    }
}

/// What is particular to a row: ring or queue sizes, kinds of socket.
fn note(t: Transport, size: usize) -> String {
    match t.kind {
        Kind::ShmRaw | Kind::ShmTyped => {
            let ring = size_label(t.ring.capacity(size));
            if t.ring == Ring::Default {
                format!("ring {ring}: the default channel, messages in its pool")
            } else {
                format!("ring {ring}")
            }
        }
        Kind::Iceoryx2 => format!("subscriber queue {}", plan::iceoryx2_queue(size)),
        Kind::Uds => "SOCK_STREAM socketpair".into(),
        Kind::Pipe => "default pipe buffer".into(),
        Kind::IpcChannel => "IpcBytesSender/Receiver".into(),
    }
}
