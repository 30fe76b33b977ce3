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
    Ok(config)
}

fn json_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(","))
}
