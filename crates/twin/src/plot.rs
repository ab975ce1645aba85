//! SVG plots of MTTR distributions: a histogram of the first series and the CDF of
//! every series on one chart (the lab draws x0tta6bl4, the twin and babeld together).

use std::fmt::Write;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 380.0;
const MARGIN: f64 = 50.0;
const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Render `series` (label, samples in ms) as an SVG document titled `title`.
pub fn mttr_svg(title: &str, series: &[(&str, &[f64])]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1.0_f64, f64::max)
        * 1.05;
    let panel = (WIDTH - 3.0 * MARGIN) / 2.0;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="15">{}</text>
"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (p, heading) in [(0.0, "histogram"), (1.0, "CDF")] {
        let x0 = MARGIN + p * (panel + MARGIN);
        let _ = writeln!(
            svg,
            r##"<rect x="{x0}" y="{MARGIN}" width="{panel}" height="{plot_h}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{heading} of outage (ms)</text>"#,
            x0 + panel / 2.0,
            HEIGHT - 12.0
        );
        for tick in 0..=4 {
            let value = max * f64::from(tick) / 4.0;
            let x = x0 + panel * f64::from(tick) / 4.0;
            let _ = writeln!(
                svg,
                r#"<text x="{x}" y="{}" text-anchor="middle">{value:.0}</text>"#,
                MARGIN + plot_h + 15.0
            );
        }
    }
    if let Some((label, samples)) = series.first() {
        histogram(&mut svg, samples, max, panel, plot_h, label);
    }
    for (k, (label, samples)) in series.iter().enumerate() {
        cdf(
            &mut svg,
            samples,
            max,
            MARGIN * 2.0 + panel,
            panel,
            plot_h,
            COLOURS[k % COLOURS.len()],
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{}">{} ({} samples)</text>"#,
            MARGIN * 2.0 + panel + 10.0,
            MARGIN + 18.0 + 16.0 * k as f64,
            COLOURS[k % COLOURS.len()],
            escape(label),
            samples.len()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn histogram(svg: &mut String, samples: &[f64], max: f64, panel: f64, plot_h: f64, label: &str) {
    const BINS: usize = 30;
    let mut counts = [0usize; BINS];
    for &v in samples.iter().filter(|v| v.is_finite()) {
        counts[((v / max * BINS as f64) as usize).min(BINS - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bar = panel / BINS as f64;
    for (i, &c) in counts.iter().enumerate() {
        let h = plot_h * c as f64 / top;
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{c}</title></rect>"#,
            MARGIN + bar * i as f64,
            MARGIN + plot_h - h,
            bar - 1.0,
            COLOURS[0]
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}">{} (max bin {top:.0})</text>"#,
        MARGIN + 8.0,
        MARGIN + 16.0,
        escape(label)
    );
}

fn cdf(
    svg: &mut String,
    samples: &[f64],
    max: f64,
    x0: f64,
    panel: f64,
    plot_h: f64,
    colour: &str,
) {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mut points = format!("{x0:.1},{:.1}", MARGIN + plot_h);
    for (i, v) in sorted.iter().enumerate() {
        let x = x0 + panel * v / max;
        let y_before = MARGIN + plot_h * (1.0 - i as f64 / n);
        let y_after = MARGIN + plot_h * (1.0 - (i + 1) as f64 / n);
        let _ = write!(points, " {x:.1},{y_before:.1} {x:.1},{y_after:.1}");
    }
    let _ = writeln!(
        svg,
        r#"<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_well_formed_svg() {
        let a = [100.0, 150.0, 160.0, 170.0];
        let b = [90.0, 200.0];
        let svg = mttr_svg("MTTR <test>", &[("twin", &a), ("babeld", &b)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("MTTR &lt;test&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("twin (4 samples)"));
    }
}
