//! A small SVG writer for latency CDFs (`shmchan bench --plot FILE.svg`).

use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Draws one CDF line per series (sorted samples in ns) on a log-scaled x axis, with
/// the y axis in "nines" (0, 90, 99, 99.9, 99.99 %) so that tails are visible.
pub fn cdf(title: &str, series: &[(String, Vec<u64>)]) -> String {
    let all = series.iter().flat_map(|(_, s)| s.iter().copied());
    let (lo, hi) = all.fold((u64::MAX, 1u64), |(lo, hi), v| {
        (lo.min(v.max(1)), hi.max(v))
    });
    let lo = if lo == u64::MAX { 1 } else { lo };
    let (xl, xh) = (
        (lo as f64).log10().floor(),
        (hi as f64)
            .log10()
            .ceil()
            .max((lo as f64).log10().floor() + 1.0),
    );
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + ((v.max(1.0).log10() - xl) / (xh - xl)) * pw;
    // y: "nines" scale, -log10(1 - q), capped at 4 (99.99 %).
    let max_nines = 4.0;
    let y = |q: f64| {
        let n = (-(1.0 - q).max(1e-4).log10()).min(max_nines);
        TOP + ph - n / max_nines * ph
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="18" font-size="14">{}</text>"#,
        escape(title)
    );
    // Grid.
    let mut d = xl;
    while d <= xh {
        let gx = x(10f64.powf(d));
        let _ = write!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            human_ns(10f64.powf(d))
        );
        d += 1.0;
    }
    for (q, label) in [
        (0.0, "0%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
    ] {
        let gy = y(q);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            gy + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round trip (log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 10.0
    );
    for (i, (name, samples)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if samples.is_empty() {
            continue;
        }
        let n = samples.len() as f64;
        let step = (samples.len() / 2000).max(1);
        let mut pts = String::new();
        for (k, v) in samples.iter().enumerate() {
            if k % step != 0 && k + 1 != samples.len() {
                continue;
            }
            let _ = write!(pts, "{:.1},{:.1} ", x(*v as f64), y(k as f64 / n));
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>"#
        );
        let ly = TOP + 16.0 * i as f64 + 10.0;
        let lx = LEFT + pw + 12.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn human_ns(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.0} s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.0} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} µs", v / 1e3)
    } else {
        format!("{v:.0} ns")
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_every_series_and_axis() {
        let svg = super::cdf(
            "t <1>",
            &[
                ("a".into(), vec![100, 200, 300]),
                ("b".into(), vec![1000, 5000]),
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains("99.9%"));
    }
}
