//! The sizes of the CPU caches, read once from sysfs: the last level's,
//! and that of the largest cache of one core's own; and how far a write's
//! lines stay in them ([`reach`]).

use std::sync::OnceLock;

/// Assumed when sysfs does not say: a common L3 size.
const DEFAULT: usize = 32 << 20;

/// Assumed when sysfs does not say: a common L2 size.
const DEFAULT_OWN: usize = 1 << 20;

/// Bytes of the largest cache CPU 0 reports (its last level, shared by the
/// cores that run the two ends of a ring on most machines).
pub fn last_level_bytes() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| read().unwrap_or(DEFAULT))
}

/// Bytes of the largest cache CPU 0 shares with no other CPU (its L2 on
/// most machines): where the lines it writes stay first.
pub fn own_bytes() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| read_own().unwrap_or(DEFAULT_OWN))
}

/// The bytes of writes after which a line this process wrote is taken to
/// have left its caches: twice the core's own cache (its L2), at most half
/// the last-level cache. Not the last-level cache itself: the other
/// process's writes and reads share it, and a VM reports its host's whole
/// last-level cache (260 MiB on the machines here), most of which serves
/// other guests. A Node sender of 1 MiB messages into blocks last written
/// 1 to 32 MiB of blocks ago (its receiver gives them back in batches)
/// measured 7.5–8.8 GB/s with this limit at 16 MiB, 5.8–11.6 at 8 MiB,
/// 9.2–13.7 at 4 MiB (twice its 2 MiB L2) and 9.0–12.8 at 2 MiB.
pub fn reach() -> usize {
    (2 * own_bytes()).min(last_level_bytes() / 2)
}

/// CPU 0's caches: (size, shared with no other CPU). A cache whose sharing
/// sysfs does not say still counts for the last level, as one shared.
fn caches() -> impl Iterator<Item = (usize, bool)> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache")
        .into_iter()
        .flatten();
    dir.filter_map(|e| {
        let path = e.ok()?.path();
        let size = parse_size(std::fs::read_to_string(path.join("size")).ok()?.trim())?;
        let own = std::fs::read_to_string(path.join("shared_cpu_list"))
            .is_ok_and(|cpus| cpus.trim() == "0");
        Some((size, own))
    })
}

fn read() -> Option<usize> {
    caches().map(|(size, _)| size).max()
}

fn read_own() -> Option<usize> {
    caches().filter(|&(_, own)| own).map(|(size, _)| size).max()
}

/// "32768K", "1M", "512": bytes.
fn parse_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
        assert!(last_level_bytes() >= 1 << 10);
        assert!(own_bytes() >= 1 << 10 && own_bytes() <= last_level_bytes().max(DEFAULT_OWN));
    }
}
