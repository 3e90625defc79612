//! The families computed at scrape time from state that lives elsewhere: the federation list
//! and outbound queue, the store, the process.

use std::path::Path;

use tocsin_store::COMMIT_BUCKETS;

use crate::metrics::registry::{Exposition, escape};
use crate::{Services, error::Result, federation::sender::Backlog, policy::federation::ListState};

/// Everything: the registry's series, then the families below.
pub fn render_all(services: &Services) -> Result<String> {
    let mut text = services.metrics.render();
    let mut out = Exposition::default();
    federation(&mut out, services.policy.federation.state().as_ref(), &services.sender.backlog()?);
    let totals = services.sender.totals()?;
    let per = |f: fn(&(ruma::OwnedServerName, u64, u64)) -> u64| -> Vec<(String, u64)> {
        totals.iter().map(|t| (format!("{{destination=\"{}\"}}", escape(t.0.as_str())), f(t))).collect()
    };
    out.counter("tocsin_federation_transactions_sent_total", "Transactions delivered to a peer.", &per(|t| t.1));
    out.counter(
        "tocsin_federation_transactions_failed_total",
        "Transaction attempts to a peer that failed (network, TLS, refusal).",
        &per(|t| t.2),
    );
    store(&mut out, services);
    out.gauge(
        "tocsin_sync_long_polls",
        "Client sync requests (v3 and sliding) registered for wake-ups now.",
        &[(String::new(), int(services.sync.wakes.waiting()))],
    );
    out.counter(
        "tocsin_sync_wakeups_total",
        "Long-polls woken by a change that concerned their user.",
        &[(String::new(), services.sync.wakes.woken_total())],
    );
    process(&mut out);
    text.push_str(&out.into_text());
    Ok(text)
}

fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// The federation list in force and the outbound backlog per peer. Without a configured list,
/// `tocsin_federation_list_configured` is 0 and the list's other series are absent.
pub fn federation(out: &mut Exposition, list: Option<&ListState>, backlog: &[Backlog]) {
    out.gauge(
        "tocsin_federation_list_configured",
        "Whether a signed federation list is enforced.",
        &[(String::new(), i64::from(list.is_some()))],
    );
    if let Some(state) = list {
        let l = format!("{{name=\"{}\"}}", escape(&state.name));
        let flag = |b: bool| vec![(l.clone(), i64::from(b))];
        out.gauge(
            "tocsin_federation_list_version",
            "Version of the federation list in force.",
            &[(l.clone(), int(state.version))],
        );
        out.gauge(
            "tocsin_federation_list_expires_in_seconds",
            "Seconds until the federation list in force expires; negative once expired.",
            &[(l.clone(), state.expires_in_secs)],
        );
        out.gauge(
            "tocsin_federation_list_expired",
            "1 when the federation list in force has expired (it is still enforced).",
            &flag(state.expired),
        );
        out.gauge(
            "tocsin_federation_list_expiry_warning",
            "1 when the federation list in force expires within 7 days or has expired.",
            &flag(state.expired || state.expires_soon),
        );
        out.gauge(
            "tocsin_federation_list_members",
            "Members of the federation list in force.",
            &[(l.clone(), int(state.members))],
        );
        out.gauge(
            "tocsin_federation_list_reload_refused",
            "1 when the last federation list file read was refused (bad signature, rollback, expired).",
            &flag(state.last_reload_error.is_some()),
        );
    }
    let per_peer = |f: fn(&Backlog) -> i64| -> Vec<(String, i64)> {
        backlog.iter().map(|b| (format!("{{destination=\"{}\"}}", escape(b.destination.as_str())), f(b))).collect()
    };
    out.gauge(
        "tocsin_federation_backlog_pdus",
        "Events queued for a peer and not yet delivered.",
        &per_peer(|b| int(b.pdus)),
    );
    out.gauge(
        "tocsin_federation_backlog_edus",
        "Ephemeral events queued for a peer and not yet delivered.",
        &per_peer(|b| int(b.edus)),
    );
    out.gauge(
        "tocsin_federation_consecutive_failures",
        "Failed transactions to a peer since its last success.",
        &per_peer(|b| i64::from(b.failures)),
    );
    out.counter(
        "tocsin_federation_dropped_total",
        "Items dropped unsent because the peer left the federation list.",
        &per_peer(|b| int(b.dropped)),
    );
}

/// Commit latency and counts since start, and the bytes on disk.
fn store(out: &mut Exposition, services: &Services) {
    let stats = services.db.commit_stats();
    let engine = format!("{{engine=\"{}\"}}", services.db.engine_name());
    out.header("tocsin_store_commit_duration_seconds", "Time of one durable group write (one fsync).", "histogram");
    out.histogram_raw(
        "tocsin_store_commit_duration_seconds",
        &engine,
        COMMIT_BUCKETS,
        &stats.bucket_counts(),
        stats.sum_seconds(),
    );
    out.counter(
        "tocsin_store_commit_batches_total",
        "Write batches made durable (several share one group write).",
        &[(engine.clone(), stats.batches())],
    );
    out.counter("tocsin_store_commit_failures_total", "Group writes that failed.", &[(engine, stats.failures())]);
    let data = &services.config.data_dir;
    out.gauge(
        "tocsin_store_size_bytes",
        "Bytes on disk, by part of the data directory.",
        &[
            ("{part=\"store\"}".to_owned(), dir_size(&data.join("store"))),
            ("{part=\"media\"}".to_owned(), dir_size(&data.join("media"))),
        ],
    );
}

/// Sum of file sizes under `dir` (0 if it does not exist or cannot be read).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Linux reports CPU times in clock ticks of 1/100 s (USER_HZ, fixed in the ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// The standard `process_*` families, from `/proc/self` (absent elsewhere).
fn process(out: &mut Exposition) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some((_, rest)) = stat.rsplit_once(") ") else { return };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        out.counter(
            "process_cpu_seconds_total",
            "User and system CPU time.",
            &[(String::new(), (utime + stime) as f64 / TICKS_PER_SECOND)],
        );
    }
    if let Some(threads) = field(20) {
        out.gauge("process_threads", "OS threads.", &[(String::new(), threads)]);
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok())));
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        out.gauge(
            "process_start_time_seconds",
            "Start time since the Unix epoch.",
            &[(String::new(), boot as f64 + start as f64 / TICKS_PER_SECOND)],
        );
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = |key: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        };
        if let Some(rss) = kib("VmRSS:") {
            out.gauge("process_resident_memory_bytes", "Resident memory.", &[(String::new(), rss * 1024)]);
        }
        if let Some(virt) = kib("VmSize:") {
            out.gauge("process_virtual_memory_bytes", "Virtual memory.", &[(String::new(), virt * 1024)]);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.gauge("process_open_fds", "Open file descriptors.", &[(String::new(), fds.count())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_list_and_escapes_labels() {
        let state = ListState {
            name: "Valley \"north\"".into(),
            version: 7,
            expires: "2030-01-01T00:00:00Z".into(),
            members: 3,
            expired: true,
            expires_in_secs: -5,
            expires_soon: false,
            warning: Some("expired".into()),
            last_reload_error: None,
        };
        let mut out = Exposition::default();
        federation(&mut out, Some(&state), &[]);
        let text = out.into_text();
        assert!(text.contains("tocsin_federation_list_configured 1\n"), "{text}");
        assert!(text.contains("tocsin_federation_list_version{name=\"Valley \\\"north\\\"\"} 7\n"), "{text}");
        assert!(text.contains("tocsin_federation_list_expires_in_seconds{name=\"Valley \\\"north\\\"\"} -5\n"));
        assert!(text.contains("tocsin_federation_list_expired{name=\"Valley \\\"north\\\"\"} 1\n"));
        assert!(text.contains("tocsin_federation_list_expiry_warning{name=\"Valley \\\"north\\\"\"} 1\n"));
        assert!(text.contains("# TYPE tocsin_federation_list_expired gauge\n"));
        let mut none = Exposition::default();
        federation(&mut none, None, &[]);
        let none = none.into_text();
        assert!(none.contains("tocsin_federation_list_configured 0\n") && !none.contains("list_version"), "{none}");
    }

    #[test]
    fn process_families_come_from_proc() {
        let mut out = Exposition::default();
        process(&mut out);
        let text = out.into_text();
        if Path::new("/proc/self/stat").exists() {
            for name in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds "] {
                assert!(text.contains(name), "{name} missing: {text}");
            }
        }
    }
}
