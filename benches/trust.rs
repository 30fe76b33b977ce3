//! What the trust modes cost: receive a typed message and read it, in one
//! process (the copy and the validation are what differ; the transport is
//! the same), for a small and a larger value:
//!
//! - `validated`: the default, validated in place (zero copy);
//! - `untrusted`: copied out of the ring, then validated (`Trust::Untrusted`);
//! - `unchecked`: read in place without validation (`get_unchecked`).
//!
//! ```text
//! cargo bench --bench trust
//! cargo bench --bench trust -- --test   # CI: once each
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use shmport::rkyv::{Archive, Serialize};
use shmport::{MessageChannel, Trust};

/// A request of the kind a worker gets: a name, a few fields, numbers.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct Job {
    id: u64,
    name: String,
    tags: Vec<String>,
    data: Vec<u32>,
}

fn job(numbers: usize) -> Job {
    Job {
        id: 7,
        name: "resize thumbnails".into(),
        tags: (0..4).map(|i| format!("tag-{i}")).collect(),
        data: (0..numbers as u32).collect(),
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args();
    for (size, numbers) in [("small", 8), ("4KiB", 1000)] {
        let mut group = c.benchmark_group(format!("trust_{size}"));
        group.throughput(Throughput::Elements(1));
        let value = job(numbers);
        for mode in ["validated", "untrusted", "unchecked"] {
            let (a, b) = MessageChannel::new().expect("channel").into_ports();
            if mode == "untrusted" {
                b.set_trust(Trust::Untrusted);
            }
            group.bench_function(mode, |bench| {
                bench.iter(|| {
                    a.post(&value).expect("post");
                    let m = b.recv().expect("recv");
                    let v = if mode == "unchecked" {
                        // SAFETY: `Job`s posted by this process just above;
                        // nobody writes to them after publishing.
                        unsafe { m.get_unchecked::<Job>() }.expect("a Job")
                    } else {
                        m.get::<Job>().expect("a Job")
                    };
                    black_box(v.data.len() + v.tags.len() + v.name.len());
                })
            });
        }
        group.finish();
    }
    c.final_summary();
}
