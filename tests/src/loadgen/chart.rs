//! The scale sweep's output: a markdown table of every server's figures side by side, and an SVG
//! line chart per curve (cost against room count, log scale), drawn with plotters.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::sync_cost::SyncCostReport;

/// One curve of the charts: a figure of each point.
struct Curve {
    title: &'static str,
    y_label: &'static str,
    value: fn(&super::sync_cost::SyncCostPoint) -> f64,
}

const CURVES: [Curve; 3] = [
    Curve { title: "Incremental /sync, one room changed (p50)", y_label: "ms", value: |p| p.incremental_p50_ms },
    Curve { title: "Initial /sync", y_label: "ms", value: |p| p.initial_ms },
    Curve { title: "Sliding sync, one room changed (p50)", y_label: "ms", value: |p| p.sliding_incremental_p50_ms },
];

const COLOURS: [RGBColor; 4] =
    [RGBColor(200, 40, 40), RGBColor(30, 90, 200), RGBColor(40, 150, 60), RGBColor(120, 60, 160)];

/// The markdown table: one row per room count, each server's figures side by side.
pub fn table(reports: &[SyncCostReport]) -> String {
    let mut rooms: Vec<u32> = reports.iter().flat_map(|r| r.points.iter().map(|p| p.rooms)).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let mut out = String::from("| rooms |");
    for r in reports {
        let _ = write!(
            out,
            " {0} initial (ms) | {0} incremental p50 / p95 (ms) | {0} sliding first (ms) | {0} sliding incremental p50 / p95 (ms) |",
            r.label
        );
    }
    out.push('\n');
    out.push_str("|---:|");
    for _ in reports {
        out.push_str("---:|---:|---:|---:|");
    }
    out.push('\n');
    for n in rooms {
        let _ = write!(out, "| {n} |");
        for r in reports {
            match r.points.iter().find(|p| p.rooms == n) {
                Some(p) => {
                    let _ = write!(
                        out,
                        " {:.1} | {:.2} / {:.2} | {:.1} | {:.2} / {:.2} |",
                        p.initial_ms,
                        p.incremental_p50_ms,
                        p.incremental_p95_ms,
                        p.sliding_first_ms,
                        p.sliding_incremental_p50_ms,
                        p.sliding_incremental_p95_ms
                    );
                }
                None => out.push_str(" – | – | – | – |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Writes `<stem>-incremental.svg`, `<stem>-initial.svg` and `<stem>-sliding.svg` into `dir`;
/// returns their paths.
pub fn charts(reports: &[SyncCostReport], dir: &Path, stem: &str) -> Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    for (curve, name) in CURVES.iter().zip(["incremental", "initial", "sliding"]) {
        let path = dir.join(format!("{stem}-{name}.svg"));
        draw(reports, curve, &path).with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(reports: &[SyncCostReport], curve: &Curve, path: &Path) -> Result<()> {
    let points = reports.iter().flat_map(|r| r.points.iter());
    let max_rooms = points.clone().map(|p| p.rooms).max().unwrap_or(10).max(10);
    let max_y = points.map(curve.value).fold(0.0f64, f64::max).max(0.1) * 1.15;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(curve.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1u32..max_rooms * 2).log_scale(), 0.0..max_y)?;
    chart.configure_mesh().x_desc("rooms the user is in").y_desc(curve.y_label).draw()?;
    for (i, report) in reports.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let series: Vec<(u32, f64)> = report.points.iter().map(|p| (p.rooms, (curve.value)(p))).collect();
        chart
            .draw_series(LineSeries::new(series.clone(), colour.stroke_width(2)))?
            .label(report.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(series.into_iter().map(|(x, y)| Circle::new((x, y), 3, colour.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// A line chart of named series against a log-scale x axis from `x_min`, written to `path`.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    unit: &str,
    x_min: u64,
    series: &[(&str, Vec<(u64, f64)>)],
) -> Result<()> {
    let max_x = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).max().unwrap_or(x_min).max(x_min + 1);
    let max_y = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(0.1f64, f64::max);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min..max_x * 2).log_scale(), 0.0..max_y * 1.15)?;
    chart.configure_mesh().x_desc(x_desc).y_desc(unit).draw()?;
    for (i, (label, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 3, colour.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
