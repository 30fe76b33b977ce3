//! What the criterion benches share.

use std::time::Duration;

use criterion::Criterion;

/// Criterion as these benches run it: one second of warm-up, three of
/// measurement, no plots; the command line (`--test`, filters) applies on
/// top.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
        .configure_from_args()
}
