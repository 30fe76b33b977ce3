//! The sizes of the CPU caches, read once from sysfs: the last level's,
//! and that of the largest cache of one core's own.

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

/// CPU 0's caches: (size, shared with no other CPU).
fn caches() -> impl Iterator<Item = (usize, bool)> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache")
        .into_iter()
        .flatten();
    dir.filter_map(|e| {
        let path = e.ok()?.path();
        let size = parse_size(std::fs::read_to_string(path.join("size")).ok()?.trim())?;
        let shared = std::fs::read_to_string(path.join("shared_cpu_list")).ok()?;
        Some((size, shared.trim() == "0"))
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
