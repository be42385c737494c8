//! SVG charts, written by hand: line charts over time with fault markers, and grouped bars.

use std::fmt::Write as _;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// A vertical marker (a fault) at `x`.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Where.
    pub x: f64,
    /// Its label.
    pub label: String,
}

/// A line chart: `series` over x, with `markers`.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    markers: &[Marker],
) -> String {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(markers.iter().map(|m| m.x))
        .fold(1.0_f64, f64::max);
    let y_max = nice(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0_f64, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;

    let mut svg = header(title);
    axes(&mut svg, x_label, y_label, x_max, y_max);
    for (i, marker) in markers.iter().enumerate() {
        let mx = x(marker.x);
        let _ = write!(
            svg,
            r##"<line x1="{mx:.1}" y1="{TOP}" x2="{mx:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
            TOP + plot_h,
            mx + 3.0,
            TOP + 12.0 + 12.0 * (i % 4) as f64,
            escape(&marker.label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        legend(&mut svg, i, colour, &s.name);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Grouped bars: for each group (e.g. a percentile), one bar per series.
pub fn bars(title: &str, y_label: &str, groups: &[(String, Vec<(String, f64)>)]) -> String {
    let y_max = nice(
        groups
            .iter()
            .flat_map(|(_, bars)| bars.iter().map(|b| b.1))
            .fold(0.0_f64, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut svg = header(title);
    axes(&mut svg, "", y_label, 0.0, y_max);
    let group_w = plot_w / groups.len().max(1) as f64;
    for (g, (name, values)) in groups.iter().enumerate() {
        let bar_w = group_w * 0.8 / values.len().max(1) as f64;
        let gx = LEFT + g as f64 * group_w + group_w * 0.1;
        for (b, (_, value)) in values.iter().enumerate() {
            let h = value / y_max * plot_h;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/>"#,
                gx + b as f64 * bar_w,
                TOP + plot_h - h,
                bar_w * 0.9,
                COLOURS[b % COLOURS.len()]
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            LEFT + (g as f64 + 0.5) * group_w,
            TOP + plot_h + 18.0,
            escape(name)
        );
    }
    if let Some((_, values)) = groups.first() {
        for (b, (name, _)) in values.iter().enumerate() {
            legend(&mut svg, b, COLOURS[b % COLOURS.len()], name);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn header(title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        escape(title)
    )
}

/// The axes, with five ticks on y and, when `x_max` > 0, on x.
fn axes(svg: &mut String, x_label: &str, y_label: &str, x_max: f64, y_max: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let bottom = TOP + plot_h;
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{:.1}" y2="{bottom}" stroke="#000"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#000"/>"##,
        LEFT + plot_w
    );
    for i in 0..=5 {
        let value = y_max * f64::from(i) / 5.0;
        let ty = bottom - plot_h * f64::from(i) / 5.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 5.0,
            ty + 4.0,
            short(value)
        );
        if x_max > 0.0 {
            let tx = LEFT + plot_w * f64::from(i) / 5.0;
            let _ = write!(
                svg,
                r#"<text x="{tx:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                short(x_max * f64::from(i) / 5.0)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text><text x="16" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
}

fn legend(svg: &mut String, i: usize, colour: &str, name: &str) {
    let ly = TOP + 10.0 + 18.0 * i as f64;
    let lx = WIDTH - RIGHT + 15.0;
    let _ = write!(
        svg,
        r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{ly:.1}" font-size="12" dominant-baseline="middle">{}</text>"#,
        ly - 6.0,
        lx + 17.0,
        escape(name)
    );
}

/// A round upper bound for an axis (1, 2 or 5 × 10ⁿ), at least 1.
fn nice(max: f64) -> f64 {
    if max.is_nan() || max <= 1.0 {
        return 1.0;
    }
    let magnitude = 10_f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude)
}

fn short(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 10.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_series_and_markers() {
        let svg = lines(
            "throughput",
            "s",
            "msg/s",
            &[Series {
                name: "replies".into(),
                points: vec![(0.0, 1.0), (1.0, 30.0)],
            }],
            &[Marker {
                x: 0.5,
                label: "kill <node-1>".into(),
            }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("<polyline") && svg.contains("kill &lt;node-1&gt;"));
        let svg = bars(
            "latency",
            "ms",
            &[("p50".into(), vec![("gateway".into(), 3.0)])],
        );
        assert!(svg.contains("<rect") && svg.contains("gateway"));
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(31.0), 50.0);
        assert_eq!(nice(100.0), 100.0);
    }
}
