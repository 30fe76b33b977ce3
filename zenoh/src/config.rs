//! A zenoh configuration for hosts that find each other by explicit
//! addresses.

use std::time::Duration;

/// A peer-mode zenoh configuration: listen on `listen`, connect to
/// `connect` (zenoh endpoints, e.g. `"tcp/127.0.0.1:7447"`), multicast
/// scouting off, and a link lease of `lease`: a host that stays silent
/// that long (stopped, partitioned) is taken for gone, and its ports'
/// peers see `PeerDied`. A killed process is seen at once, when its TCP
/// connection closes. zenoh's default lease is 10 s.
///
/// It also turns on zenoh's low-latency transport (and so turns its QoS
/// priorities off, which that transport lacks): a publication is written
/// to the socket by the publishing thread, instead of being queued for
/// zenoh's transmit thread (one thread hop less per frame, measured in
/// BENCHMARKS.md). That transport does not fragment; the bridge's frames
/// are cut to fit (30 KiB chunks). Both hosts must use it: zenoh
/// negotiates it only when both ask for it, and a session with another
/// configuration still works, with zenoh's default transport.
///
/// ```
/// use std::time::Duration;
///
/// let config = shmport_zenoh::peer_config(
///     &["tcp/127.0.0.1:0"],
///     &[],
///     Duration::from_secs(1),
/// )?;
/// # Ok::<(), zenoh::Error>(())
/// ```
pub fn peer_config(
    listen: &[&str],
    connect: &[&str],
    lease: Duration,
) -> zenoh::Result<zenoh::Config> {
    let mut config = zenoh::Config::default();
    config.insert_json5("mode", r#""peer""#)?;
    config.insert_json5("listen/endpoints", &json_list(listen))?;
    config.insert_json5("connect/endpoints", &json_list(connect))?;
    config.insert_json5("scouting/multicast/enabled", "false")?;
    let ms = lease.as_millis().clamp(1, u64::MAX as u128) as u64;
    config.insert_json5("transport/link/tx/lease", &ms.to_string())?;
    config.insert_json5("transport/unicast/lowlatency", "true")?;
    config.insert_json5("transport/unicast/qos/enabled", "false")?;
    Ok(config)
}

fn json_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(","))
}
