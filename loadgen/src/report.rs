//! One row per measured step, printed as a table, written as JSON, and
//! plotted (server CPU and delivery against peers) as a hand-written SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::audio::Verdict;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Row {
    pub scenario: String,
    pub step: usize,
    /// Connected peers (all roles) during the window.
    pub peers: usize,
    /// Of those, peers whose received audio is counted.
    pub receivers: usize,
    pub window_s: f64,
    /// 100 = one core.
    pub server_cpu_pct: f64,
    pub server_rss_mb: f64,
    /// (RSS now − RSS before the first peer) ÷ peers.
    pub server_rss_per_peer_kb: f64,
    /// RSS at the end of the window − its lowest in the window (sampled
    /// each second), peers unchanged: memory the server took after the
    /// join's had gone back, and kept.
    pub server_rss_growth_mb: f64,
    pub loadgen_cpu_pct: f64,
    pub delivered_packets: u64,
    pub expected_packets: u64,
    pub delivery: f64,
    /// Server CPU time in the window ÷ delivered listener packets.
    pub server_us_per_packet: f64,
    pub loadgen_us_per_packet: f64,
    pub gaps_over_100ms: u64,
    /// POST → first RTP packet, of the peers joined in this step.
    pub join_p50_ms: Option<f64>,
    pub join_p95_ms: Option<f64>,
    pub join_max_ms: Option<f64>,
    /// POST → ICE and DTLS connected, same peers.
    pub connect_p50_ms: Option<f64>,
    pub connect_p95_ms: Option<f64>,
    /// Failed joins of this step by kind (`http_503`, `ice`, `dtls`, `no_audio`, …).
    pub errors: BTreeMap<String, u64>,
    /// Increase of `sabha_mixer_tick_overruns_total` over the window.
    pub late_ticks: f64,
    pub rtc_errors: u64,
    pub send_errors: u64,
    /// Opus packets sampled peers could not decode.
    pub decode_errors: u64,
    pub verdicts: Vec<Verdict>,
    /// Sampled peers whose audio checked out, of those sampled.
    pub heard_ok: usize,
    pub heard_total: usize,
    /// Frequencies the sampled peers heard (rounded, distinct).
    pub heard_hz: Vec<f32>,
}

impl Row {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

pub fn header() -> String {
    format!(
        "{:<8} {:>6} {:>6} {:>7} {:>8} {:>8} {:>6} {:>7} {:>8} {:>8} {:>9} {:>5} {:>8} {:>8} {:>6} {:>5} {:>5}  {}",
        "scenario",
        "peers",
        "recv",
        "srv%",
        "rssMB",
        "KB/peer",
        "rss+MB",
        "lg%",
        "srv.us/p",
        "lg.us/p",
        "delivery",
        "gaps",
        "join.p50",
        "join.p95",
        "errors",
        "late",
        "heard",
        "tone"
    )
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0}"))
}

pub fn line(r: &Row) -> String {
    let hz: Vec<String> = r.heard_hz.iter().map(|h| format!("{h:.0}")).collect();
    format!(
        "{:<8} {:>6} {:>6} {:>7.1} {:>8.1} {:>8.1} {:>6.1} {:>7.1} {:>8.2} {:>8.2} {:>9.5} {:>5} {:>8} {:>8} {:>6} {:>5} {:>5}  {}",
        r.scenario,
        r.peers,
        r.receivers,
        r.server_cpu_pct,
        r.server_rss_mb,
        r.server_rss_per_peer_kb,
        r.server_rss_growth_mb,
        r.loadgen_cpu_pct,
        r.server_us_per_packet,
        r.loadgen_us_per_packet,
        r.delivery,
        r.gaps_over_100ms,
        opt(r.join_p50_ms),
        opt(r.join_p95_ms),
        r.error_count(),
        r.late_ticks,
        format!("{}/{}", r.heard_ok, r.heard_total),
        if hz.is_empty() {
            "-".into()
        } else {
            format!("{} Hz", hz.join(","))
        }
    )
}

/// The `p`-th percentile (0..=100) of `v`, nearest rank.
pub fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// The plot: server CPU % (left axis) and delivery (right axis) against peers.
pub fn svg(rows: &[Row], title: &str) -> String {
    let (w, h, l, r, t, b) = (640.0, 400.0, 60.0, 60.0, 40.0, 50.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let max_x = rows.iter().map(|r| r.peers).max().unwrap_or(1).max(1) as f64;
    let max_cpu = rows
        .iter()
        .map(|r| r.server_cpu_pct)
        .fold(10.0f64, f64::max)
        * 1.1;
    let min_del = rows
        .iter()
        .map(|r| r.delivery)
        .fold(0.99f64, f64::min)
        .max(0.0);
    let x = |v: f64| l + pw * v / max_x;
    let y_cpu = |v: f64| t + ph * (1.0 - v / max_cpu);
    let y_del = |v: f64| t + ph * (1.0 - (v - min_del) / (1.0 - min_del).max(1e-9));
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="#c0392b"/>
<line x1="{}" y1="{t}" x2="{}" y2="{}" stroke="#2471a3"/>
<text x="{}" y="{}" text-anchor="middle">peers</text>
<text x="15" y="{}" fill="#c0392b" transform="rotate(-90 15 {})" text-anchor="middle">server CPU % (100 = one core)</text>
<text x="{}" y="{}" fill="#2471a3" transform="rotate(90 {} {})" text-anchor="middle">delivery</text>
"##,
        w / 2.0,
        escape(title),
        t + ph,
        l + pw,
        t + ph,
        t + ph,
        l + pw,
        l + pw,
        t + ph,
        l + pw / 2.0,
        h - 10.0,
        t + ph / 2.0,
        t + ph / 2.0,
        w - 15.0,
        t + ph / 2.0,
        w - 15.0,
        t + ph / 2.0,
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let (xv, cv, dv) = (max_x * f, max_cpu * f, min_del + (1.0 - min_del) * f);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#c0392b">{:.0}</text><text x="{:.1}" y="{:.1}" fill="#2471a3">{:.4}</text>"##,
            x(xv),
            t + ph + 16.0,
            xv,
            l - 4.0,
            y_cpu(cv) + 4.0,
            cv,
            l + pw + 4.0,
            y_del(dv) + 4.0,
            dv
        );
    }
    let series = |f: &dyn Fn(&Row) -> (f64, f64)| {
        rows.iter()
            .map(|r| {
                let (a, b) = f(r);
                format!("{a:.1},{b:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let cpu = series(&|r| (x(r.peers as f64), y_cpu(r.server_cpu_pct)));
    let del = series(&|r| (x(r.peers as f64), y_del(r.delivery)));
    let _ = writeln!(
        s,
        r##"<polyline points="{cpu}" fill="none" stroke="#c0392b" stroke-width="2"/>
<polyline points="{del}" fill="none" stroke="#2471a3" stroke-width="2" stroke-dasharray="6 3"/>"##
    );
    for r in rows {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#c0392b"/><circle cx="{:.1}" cy="{:.1}" r="3" fill="#2471a3"/>"##,
            x(r.peers as f64),
            y_cpu(r.server_cpu_pct),
            x(r.peers as f64),
            y_del(r.delivery)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `doc` to `path` and the plot to `path` + `.svg`.
pub fn write(
    path: &Path,
    doc: &serde_json::Value,
    rows: &[Row],
    title: &str,
) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")?;
    let mut svg_path = path.as_os_str().to_owned();
    svg_path.push(".svg");
    std::fs::write(svg_path, svg(rows, title))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 95.0), Some(95.0));
        assert_eq!(percentile(&mut [3.0], 95.0), Some(3.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn the_plot_has_a_point_per_row() {
        let rows: Vec<Row> = [(100, 5.0, 1.0), (1000, 40.0, 0.998)]
            .iter()
            .map(|&(peers, cpu, delivery)| Row {
                peers,
                server_cpu_pct: cpu,
                delivery,
                ..Row::default()
            })
            .collect();
        let svg = svg(&rows, "fanout <test>");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("fanout &lt;test&gt;"));
        assert!(line(&rows[1]).contains("0.99800"));
    }
}
