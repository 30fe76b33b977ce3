//! The use-case examples run as real programs: each exits 0, says what the
//! use case promises, and leaves no process behind.
//!
//! `cargo test` builds the examples next to this test binary
//! (`target/<profile>/examples/`); when one is missing or older than the
//! sources (`cargo test --test examples` builds no examples), it is built
//! here with `cargo build --example`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Environment marker given to an example run; its child processes inherit
/// it, which is how leftovers are found.
const MARKER: &str = "SHMPORT_EXAMPLES_TEST_RUN";

/// How long one example may run.
const LIMIT: Duration = Duration::from_secs(60);

/// One `cargo build` at a time from this process.
static BUILD: Mutex<()> = Mutex::new(());

/// The newest modification time of the files under `path`.
fn newest(path: &Path) -> SystemTime {
    let mut t = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(dir) = std::fs::read_dir(path) {
        for e in dir.flatten() {
            t = t.max(newest(&e.path()));
        }
    }
    t
}

/// The built example, fresh.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    let profile_dir = deps.parent().expect("profile directory");
    let path = profile_dir.join("examples").join(name);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        root.join("examples").join(format!("{name}.rs")),
        root.join("src"),
        root.join("Cargo.toml"),
    ]
    .iter()
    .map(|p| newest(p))
    .max()
    .expect("sources");
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    if built.is_some_and(|b| b >= sources) {
        return path;
    }

    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(root)
        .args(["build", "--quiet", "--example", name]);
    if cfg!(feature = "tokio") {
        cargo.args(["--features", "tokio"]);
    }
    if profile_dir.file_name().is_some_and(|d| d == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example {name}: {status}");
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Processes (other than this one) whose environment holds `marker`.
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let needle = format!("{MARKER}={marker}");
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in proc_dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            found.push((pid, cmd.replace('\0', " ")));
        }
    }
    found
}

/// Run an example to its end; check it exited 0 and left nothing running.
/// Returns its standard output.
fn run(name: &str, args: &[&str]) -> String {
    let path = example(name);
    // Unique per run: runs of one example may overlap (parallel tests).
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let marker = format!("{}-{name}-{n}", std::process::id());
    let started = Instant::now();
    let mut child = Command::new(&path)
        .args(args)
        .env(MARKER, &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).map(|_| s)
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            for (pid, _) in processes_with(&marker) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            panic!("{name} ran longer than {LIMIT:?}; killed it");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let left = processes_with(&marker);
    // Read the pipes only now: a leftover process would hold them open.
    for (pid, _) in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let out = out.join().expect("stdout reader").expect("read stdout");
    let err = err.join().expect("stderr reader").expect("read stderr");
    assert!(
        status.success(),
        "{name} exited with {status}\n--- stdout\n{out}--- stderr\n{err}"
    );
    assert!(
        left.is_empty(),
        "{name} left processes behind: {left:?}\n--- stdout\n{out}"
    );
    out
}

/// The number right after `prefix` in `line`, if `line` has it.
fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn reply_stream_ends_each_stream_after_exactly_the_messages_asked_for() {
    let out = run("reply_stream", &[]);
    // (element, count) in the order asked.
    let asked: Vec<(u64, u64)> = out
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("requester: asked for ")?;
            let count = number_after(rest, "")?;
            let element = number_after(rest, " about ")?;
            Some((element, count))
        })
        .collect();
    assert!(asked.len() >= 2, "requests: {asked:?}\n{out}");
    assert!(asked.iter().any(|&(_, n)| n > 1), "{out}");

    // The requester's side of the output: messages, then "stream ended".
    let mut streams: Vec<(u64, u64)> = Vec::new();
    let mut current: Option<(u64, u64)> = None;
    for l in out.lines() {
        if let Some(rest) = l.strip_prefix("  got response data: ") {
            let element = number_after(rest, "").expect("an element");
            let seq = number_after(rest, "(#").expect("a sequence number");
            let (e, n) = current.get_or_insert((element, 0));
            assert_eq!(*e, element, "streams mixed up:\n{out}");
            assert_eq!(seq, *n, "stream for {element} out of order:\n{out}");
            *n += 1;
        } else if let Some(rest) = l.strip_prefix("stream ended") {
            let element = number_after(rest, "(request for ").expect("an element");
            let (e, n) = current.take().unwrap_or((element, 0));
            assert_eq!(e, element, "{out}");
            streams.push((e, n));
        }
    }
    assert!(current.is_none(), "a stream without its end:\n{out}");
    assert_eq!(
        streams, asked,
        "each request: exactly its messages, then \"stream ended\"\n{out}"
    );
    let total: u64 = asked.iter().map(|&(_, n)| n).sum();
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "reply_stream: {} requests, {total} messages",
            asked.len()
        )),
        "{out}"
    );
}

#[test]
fn forward_delivers_everything_posted_before_during_and_after_the_hop() {
    let out = run("forward", &[]);
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("forward: all "), "final line:\n{out}");
    let n = number_after(last, "forward: all ").unwrap();
    let before = number_after(last, "in order (").unwrap();
    let during = number_after(last, " before, ").unwrap();
    let after = number_after(last, " during, ").unwrap();
    assert!(last.ends_with(" after the hop)"), "{last}");
    assert_eq!(n, before + during + after, "{last}");
    assert!(before > 0 && during > 0 && after > 0, "{last}");

    // The main world printed every message, in order, each with its phase.
    let seen: Vec<(u64, String)> = out
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("  main world: message #")?;
            let seq = number_after(rest, "")?;
            let phase = rest.split("posted ").nth(1)?.split(' ').next()?;
            Some((seq, phase.to_string()))
        })
        .collect();
    let expected: Vec<(u64, String)> = (0..n)
        .map(|i| {
            let phase = if i < before {
                "before"
            } else if i < before + during {
                "during"
            } else {
                "after"
            };
            (i, phase.to_string())
        })
        .collect();
    assert_eq!(seen, expected, "{out}");
    assert!(out.contains("main world: main closed the port"), "{out}");
}

#[test]
fn worker_offload_serves_checked_apps_directly_and_refuses_the_plugin() {
    check_worker_offload(&run("worker_offload", &["--quick"]));
}

/// The same, with the async worker (one tokio task per client).
#[cfg(feature = "tokio")]
#[test]
fn worker_offload_with_the_async_worker() {
    let out = run("worker_offload", &["--quick", "--async-worker"]);
    assert!(out.contains("started the hidden worker-async"), "{out}");
    check_worker_offload(&out);
}

fn check_worker_offload(out: &str) {
    // Each app that ran to its end checked every answer.
    let apps: Vec<(u64, u64)> = out
        .lines()
        .filter(|l| l.starts_with("app") && l.contains(" answers checked"))
        .map(|l| {
            let requests = number_after(l, "): ").expect("a request count");
            let checked = number_after(l, "requests/s, all ").expect("a checked count");
            assert!(l.contains(" requests/s, "), "{l}");
            (requests, checked)
        })
        .collect();
    assert_eq!(apps.len(), 2, "app2 and the reloaded app1:\n{out}");
    for (requests, checked) in &apps {
        assert!(*requests > 0, "{out}");
        assert_eq!(requests, checked, "{out}");
    }

    // The worker's count per client: the killed app1, app2, app1 again.
    let table: Vec<(&str, u64, &str)> = out
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("  app")?;
            let name = l.trim_start().split(' ').next()?;
            let requests = number_after(rest, "): ")?;
            let left = rest.split("(left: ").nth(1)?.strip_suffix(')')?;
            assert!(rest.contains(" requests/s "), "{l}");
            Some((name, requests, left))
        })
        .collect();
    // In the order they left: the killed app1 first, then the other two
    // in either order.
    let mut shape: Vec<(&str, &str)> = table.iter().map(|&(n, _, l)| (n, l)).collect();
    if shape.len() == 3 {
        shape[1..].sort_unstable();
    }
    assert_eq!(
        shape,
        vec![
            ("app1", "peer died"),
            ("app1", "closed by the peer"),
            ("app2", "closed by the peer"),
        ],
        "{out}"
    );
    assert!(table.iter().all(|&(_, r, _)| r > 0), "{out}");
    // Those that ended normally: the worker answered what the app checked.
    let mut served: Vec<u64> = table[1..].iter().map(|&(_, r, _)| r).collect();
    let mut checked: Vec<u64> = apps.iter().map(|&(_, c)| c).collect();
    served.sort_unstable();
    checked.sort_unstable();
    assert_eq!(served, checked, "{out}");

    let total = out
        .lines()
        .find_map(|l| l.strip_prefix("  total: "))
        .unwrap_or_else(|| panic!("no total line:\n{out}"));
    let sum: u64 = table.iter().map(|&(_, r, _)| r).sum();
    assert_eq!(number_after(total, ""), Some(sum), "{out}");
    assert!(total.contains(" requests/s over 3 clients"), "{out}");

    assert!(
        out.lines()
            .any(|l| l.starts_with("main: plugin") && l.contains(": refused (")),
        "{out}"
    );
    assert!(out.contains("plugin: refused as expected"), "{out}");
    assert!(out.contains("main: app1 (pid "), "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("worker_offload: 3 clients talked to the worker directly"),
        "{out}"
    );
}

#[test]
fn large_frames_checks_every_frame_and_reuses_a_small_pool() {
    let out = run("large_frames", &["--frames", "300", "--size-kib", "2048"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("300 frames of 2048 KiB"))
        .unwrap_or_else(|| panic!("no summary line in {out:?}"));
    // Two frames in flight (three blocks of 2 MiB at most, if the worker
    // lagged): the pool stays at a few blocks, whatever the frame count.
    let pool = number_after(line, "pool ").expect("the pool's size");
    assert!((2..=16).contains(&pool), "pool of {pool} MiB: {line}");
}
