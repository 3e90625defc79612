//! The room-size sweep's output: one markdown table and three charts over one or more reports
//! (one per server), each server a row per size and its own lines in the charts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{RoomSizePoint, RoomSizeReport};

/// The markdown table: a row per size and server, sizes ascending, servers in the reports'
/// order. Figures a server does not have (Synapse's state resolutions) show as "–".
pub fn table(reports: &[RoomSizeReport]) -> String {
    let mut out = String::from(
        "| members | server | join p50 (ms) | join max (ms) | first /sync, lazy members (bytes, ms) | first /sync, all members (bytes, ms) | heal after a partition (ms) | resolutions, total time (ms) |\n|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut rows: Vec<(usize, &str, &RoomSizePoint)> =
        reports.iter().enumerate().flat_map(|(i, r)| r.points.iter().map(move |p| (i, r.server.as_str(), p))).collect();
    rows.sort_by_key(|(i, _, p)| (p.members, *i));
    for (_, server, p) in rows {
        let resolutions = match (p.resolutions, p.resolution_total_ms) {
            (Some(count), Some(ms)) => format!("{count:.0}, {ms:.1}"),
            _ => "–".to_owned(),
        };
        out += &format!(
            "| {} | {} | {:.1} | {:.1} | {} B, {:.0} | {} B, {:.0} | {:.0} | {} |\n",
            p.members,
            server,
            p.join_p50_ms,
            p.join_max_ms,
            p.lazy_sync_bytes,
            p.lazy_sync_ms,
            p.full_sync_bytes,
            p.full_sync_ms,
            p.heal_ms,
            resolutions
        );
    }
    out
}

/// One line of a chart: its name and its points.
type Line = (String, Vec<(u64, f64)>);

/// The points of `report` where `f` has a figure, against the members.
fn series(report: &RoomSizeReport, f: impl Fn(&RoomSizePoint) -> Option<f64>) -> Vec<(u64, f64)> {
    report.points.iter().filter_map(|p| Some((u64::from(p.members), f(p)?))).collect()
}

/// Writes `<stem>-join.svg`, `<stem>-sync.svg` and `<stem>-heal.svg` into `dir`, each against
/// the members (log scale), each server's lines named after it; returns their paths.
pub fn charts(reports: &[RoomSizeReport], dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    let kib = |bytes: u64| Some(bytes as f64 / 1024.0);
    let (mut join, mut sync, mut heal) = (Vec::<Line>::new(), Vec::<Line>::new(), Vec::<Line>::new());
    for r in reports {
        let s = &r.server;
        join.push((format!("{s} p50"), series(r, |p| Some(p.join_p50_ms))));
        join.push((format!("{s} max"), series(r, |p| Some(p.join_max_ms))));
        sync.push((format!("{s}, lazy-loaded members"), series(r, |p| kib(p.lazy_sync_bytes))));
        sync.push((format!("{s}, all members"), series(r, |p| kib(p.full_sync_bytes))));
        heal.push((format!("{s} heal"), series(r, |p| Some(p.heal_ms))));
        let resolution = series(r, |p| p.resolution_total_ms);
        if !resolution.is_empty() {
            heal.push((format!("{s} state resolution, total"), resolution));
        }
    }
    let charts = [
        ("join", "A join into the room, one at a time", "ms", join),
        ("sync", "A late joiner's first /sync (timeline limit 10)", "KiB", sync),
        ("heal", "After a partition: until both servers agree, and resolution time", "ms", heal),
    ];
    let mut written = Vec::new();
    for (name, title, unit, lines) in charts {
        let path = dir.join(format!("{stem}-{name}.svg"));
        let lines: Vec<(&str, Vec<(u64, f64)>)> = lines.iter().map(|(l, p)| (l.as_str(), p.clone())).collect();
        super::super::chart::lines(&path, title, "members in the room", unit, 10, &lines)
            .with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
