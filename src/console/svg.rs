//! Hand-drawn inline SVG charts for the dashboard: a bar chart (events per minute)
//! and step lines (segment sizes over time). Pure functions from numbers to markup;
//! every label is escaped. Coordinates are rounded to one decimal.

use super::esc;

/// Colours of the series, in order (then again).
const PALETTE: [&str; 6] = [
    "#4c6ef5", "#12b886", "#f59f00", "#e64980", "#7950f2", "#15aabf",
];

/// Room for the axis labels, in SVG units.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;
const RIGHT: f64 = 8.0;

/// One line of a step chart: its name and `(x, y)` points in x order; the value
/// holds from each point to the next (and to the right edge after the last).
#[derive(Debug, Clone)]
pub(super) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A round maximum for the y axis: 1, 2 or 5 times a power of ten, at least `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * power)
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The frame: the y axis with 0, half and the maximum, and horizontal grid lines.
fn frame(width: f64, height: f64, y_max: f64, label: &str) -> String {
    let mut out = format!(
        r#"<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg">"#,
        label = esc(label)
    );
    let plot_h = height - TOP - BOTTOM;
    for (value, fraction) in [(0.0, 0.0), (y_max / 2.0, 0.5), (y_max, 1.0)] {
        let y = TOP + plot_h * (1.0 - fraction);
        out.push_str(&format!(
            r##"<line x1="{LEFT}" x2="{x2:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e6ee"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            x2 = width - RIGHT,
            tx = LEFT - 4.0,
            ty = y + 4.0,
            v = number(value),
        ));
    }
    out
}

/// A bar per value, left to right, with `x_labels` (index, text) under their bars.
pub(super) fn bars(
    values: &[f64],
    x_labels: &[(usize, String)],
    width: f64,
    height: f64,
    label: &str,
) -> String {
    let y_max = nice_max(values.iter().copied().fold(0.0, f64::max));
    let mut out = frame(width, height, y_max, label);
    let plot_w = width - LEFT - RIGHT;
    let plot_h = height - TOP - BOTTOM;
    let slot = plot_w / values.len().max(1) as f64;
    for (i, value) in values.iter().enumerate() {
        let h = plot_h * value / y_max;
        if h <= 0.0 {
            continue;
        }
        out.push_str(&format!(
            r#"<rect class="col" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"><title>{v}</title></rect>"#,
            x = LEFT + slot * i as f64 + slot * 0.1,
            y = TOP + plot_h - h,
            w = slot * 0.8,
            fill = PALETTE[0],
            v = number(*value),
        ));
    }
    for (i, text) in x_labels {
        out.push_str(&format!(
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{t}</text>"#,
            x = LEFT + slot * (*i as f64 + 0.5),
            y = height - 5.0,
            t = esc(text),
        ));
    }
    out.push_str("</svg>");
    out
}

/// Step lines over x from `x0` to `x1`, with `x_labels` (x, text) under the axis
/// and a legend of the series' names in their colours.
pub(super) fn steps(
    series: &[Series],
    (x0, x1): (f64, f64),
    x_labels: &[(f64, String)],
    width: f64,
    height: f64,
    label: &str,
) -> String {
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let mut out = frame(width, height, y_max, label);
    let plot_w = width - LEFT - RIGHT;
    let plot_h = height - TOP - BOTTOM;
    let span = (x1 - x0).max(1.0);
    let sx = |x: f64| LEFT + plot_w * ((x - x0) / span).clamp(0.0, 1.0);
    let sy = |y: f64| TOP + plot_h * (1.0 - y / y_max);
    for (n, s) in series.iter().enumerate() {
        let colour = PALETTE[n % PALETTE.len()];
        let Some(&(first_x, first_y)) = s.points.first() else {
            continue;
        };
        let mut path = format!("M{:.1},{:.1}", sx(first_x), sy(first_y));
        let mut last_y = first_y;
        for &(x, y) in &s.points[1..] {
            path.push_str(&format!(" H{:.1} V{:.1}", sx(x), sy(y)));
            last_y = y;
        }
        path.push_str(&format!(" H{:.1}", sx(x1)));
        out.push_str(&format!(
            r#"<path class="series" d="{path}" fill="none" stroke="{colour}" stroke-width="2"><title>{name}: {v}</title></path>"#,
            name = esc(&s.name),
            v = number(last_y),
        ));
        out.push_str(&format!(
            r#"<rect x="{x:.1}" y="{y:.1}" width="10" height="10" fill="{colour}"/><text x="{tx:.1}" y="{ty:.1}">{name} ({v})</text>"#,
            x = LEFT + 8.0,
            y = TOP + 4.0 + 14.0 * n as f64,
            tx = LEFT + 22.0,
            ty = TOP + 13.0 + 14.0 * n as f64,
            name = esc(&s.name),
            v = number(last_y),
        ));
    }
    for (x, text) in x_labels {
        // The last label ends at the right edge instead of running over it.
        let anchor = if sx(*x) > width - RIGHT - 20.0 {
            "end"
        } else {
            "middle"
        };
        out.push_str(&format!(
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}">{t}</text>"#,
            x = sx(*x),
            y = height - 5.0,
            t = esc(text),
        ));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_max_rounds_up_to_1_2_5() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(1.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(17.0), 20.0);
        assert_eq!(nice_max(51.0), 100.0);
        assert_eq!(nice_max(0.3), 0.5);
    }

    #[test]
    fn bars_scale_to_the_axis_maximum() {
        let svg = bars(&[0.0, 5.0, 10.0], &[(0, "12:00".into())], 344.0, 128.0, "x");
        // Plot height 100 (128 - 8 - 20), y max 10: the full bar is 100 high, the
        // half one 50, the zero one is not drawn.
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains(r#"height="50.0""#), "{svg}");
        assert!(svg.contains(r#"height="100.0""#), "{svg}");
        assert!(svg.contains(">12:00</text>"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn steps_hold_each_value_until_the_next_point() {
        let series = [Series {
            name: "boot<fans>".into(),
            points: vec![(0.0, 1.0), (50.0, 2.0)],
        }];
        // Plot 100 wide (152 - 44 - 8), 100 high; y max 2.
        let svg = steps(&series, (0.0, 100.0), &[], 152.0, 128.0, "sizes");
        assert!(svg.contains(r#"d="M44.0,58.0 H94.0 V8.0 H144.0""#), "{svg}");
        assert!(svg.contains("boot&lt;fans&gt; (2)"), "{svg}");
    }
}
