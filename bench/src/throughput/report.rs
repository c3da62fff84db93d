//! What a run found: the samples, as CSV, as Markdown tables with ratios, as the issue's
//! targets checked, and as a PNG chart of delivered pps against rule count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use super::frames::Stream;
use super::paths::PathKind;
use super::traffic::Sample;

/// A path core busier than this share of the time is taken to be the limit of what the path
/// carries; below it, a path that took the generator's full speed is generator-bound.
pub const SATURATED_BUSY: f64 = 0.9;

/// Every sample of a run, by (path, stream, rule count). The paths whose work does not depend
/// on the rules are measured at every count too, as references taken at the same time.
#[derive(Debug, Default, Clone)]
pub struct Results {
    points: BTreeMap<(PathKind, Stream, usize), Vec<Sample>>,
    /// The path core's busy share in each of those repetitions.
    busy: BTreeMap<(PathKind, Stream, usize), Vec<f64>>,
    /// The rate the generator was paced to for each point; absent: full speed.
    paced: BTreeMap<(PathKind, Stream, usize), f64>,
    /// Path-core nanoseconds per frame at the common cost rate, and whether the path carried
    /// that rate (if not, it ran saturated at its own throughput).
    costs: BTreeMap<(PathKind, Stream, usize), Vec<(f64, bool)>>,
    cost_rate: Option<f64>,
}

impl Results {
    /// Records one repetition, measured with the generator paced to `paced` frames/s (`None`:
    /// at full speed), with the path core `busy` that share of the time.
    pub fn add(
        &mut self,
        path: PathKind,
        stream: Stream,
        rules: usize,
        paced: Option<f64>,
        sample: Sample,
        busy: f64,
    ) {
        let key = (path, stream, rules);
        self.points.entry(key).or_default().push(sample);
        self.busy.entry(key).or_default().push(busy);
        if let Some(rate) = paced {
            self.paced.insert(key, rate);
        }
    }

    /// The median busy share of the path core over a point's repetitions.
    fn median_busy(&self, key: (PathKind, Stream, usize)) -> Option<f64> {
        self.busy
            .get(&key)
            .filter(|b| !b.is_empty())
            .map(|b| median(b))
    }

    /// Whether a point's figure is the generator's rather than the path's: the path took the
    /// generator's full speed without loss and its core still had time to spare, so its
    /// throughput is at least that figure.
    pub fn generator_bound(&self, path: PathKind, stream: Stream, rules: usize) -> bool {
        let key = (path, stream, rules);
        !self.paced.contains_key(&key)
            && self.samples(path, stream, rules).is_some()
            && self
                .median_busy(key)
                .is_some_and(|busy| busy < SATURATED_BUSY)
    }

    /// Records the path-core cost per frame (ns) of one repetition offered `rate` frames/s,
    /// and whether the path carried that rate.
    pub fn add_cost(
        &mut self,
        path: PathKind,
        stream: Stream,
        rules: usize,
        rate: f64,
        per_frame_ns: f64,
        carried: bool,
    ) {
        self.cost_rate = Some(rate);
        self.costs
            .entry((path, stream, rules))
            .or_default()
            .push((per_frame_ns, carried));
    }

    /// The median cost per frame, and whether every repetition carried the rate.
    fn cost(&self, path: PathKind, stream: Stream, rules: usize) -> Option<(f64, bool)> {
        let costs = self
            .costs
            .get(&(path, stream, rules))
            .filter(|c| !c.is_empty())?;
        let values: Vec<f64> = costs.iter().map(|(ns, _)| *ns).collect();
        Some((median(&values), costs.iter().all(|(_, carried)| *carried)))
    }

    /// The median cost per frame at the common rate, if every repetition carried it.
    pub fn median_cost(&self, path: PathKind, stream: Stream, rules: usize) -> Option<f64> {
        self.cost(path, stream, rules)
            .filter(|(_, carried)| *carried)
            .map(|(ns, _)| ns)
    }

    /// One table per stream: the path core's time per frame at the common rate, and its ratio
    /// to the no-op AF_XDP forwarder's.
    pub fn cost_tables(&self, rule_counts: &[usize]) -> String {
        let Some(rate) = self.cost_rate else {
            return String::new();
        };
        let mut out = String::new();
        for stream in self.streams() {
            let _ = writeln!(
                out,
                "\n### {} — path-core time per frame offered {}/s, median; ratio to the no-op \
                 AF_XDP forwarder (*: could not carry that rate, so measured saturated at its \
                 own throughput)\n",
                stream.name(),
                rate_text(rate)
            );
            out.push_str(&self.table(rule_counts, |path, count| {
                let Some((ns, carried)) = self.cost(path, stream, count) else {
                    return "–".to_string();
                };
                let mark = if carried { "" } else { "*" };
                let ratio = self
                    .median_cost(PathKind::NoopXdp, stream, count)
                    .map_or("–".to_string(), |n| format!("{:.2}×", ns / n));
                format!("{:.2} µs{mark} {ratio}", ns / 1000.0)
            }));
        }
        out
    }

    /// A Markdown table: a row per path, a column per rule count, `cell` filling each.
    fn table(&self, rule_counts: &[usize], cell: impl Fn(PathKind, usize) -> String) -> String {
        let mut out = String::from("| path |");
        for count in rule_counts {
            let _ = write!(out, " {} rules |", count_text(*count));
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(rule_counts.len()));
        out.push('\n');
        for path in self.paths() {
            let _ = write!(out, "| {} |", path.name());
            for &count in rule_counts {
                let _ = write!(out, " {} |", cell(path, count));
            }
            out.push('\n');
        }
        out
    }

    fn samples(&self, path: PathKind, stream: Stream, rules: usize) -> Option<&[Sample]> {
        self.points
            .get(&(path, stream, rules))
            .map(Vec::as_slice)
            .filter(|s| !s.is_empty())
    }

    pub fn median(&self, path: PathKind, stream: Stream, rules: usize) -> Option<f64> {
        self.samples(path, stream, rules)
            .map(|s| median(&s.iter().map(|x| x.delivered).collect::<Vec<_>>()))
    }

    fn paths(&self) -> Vec<PathKind> {
        let mut paths: Vec<PathKind> = self.points.keys().map(|(p, _, _)| *p).collect();
        paths.dedup();
        paths
    }

    fn streams(&self) -> Vec<Stream> {
        let mut streams: Vec<Stream> = self.points.keys().map(|(_, s, _)| *s).collect();
        streams.sort();
        streams.dedup();
        streams
    }

    pub fn csv(&self) -> String {
        let mut out = String::from(
            "path,stream,rules,repetition,delivered_pps,offered_pps,paced_pps,path_busy\n",
        );
        for (key @ (path, stream, rules), samples) in &self.points {
            let paced = self
                .paced
                .get(key)
                .map_or(String::new(), |r| format!("{r:.0}"));
            let busy = self.busy.get(key).map_or(&[][..], Vec::as_slice);
            for (i, sample) in samples.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{:.0},{:.0},{paced},{}",
                    path.key(),
                    stream.key(),
                    rules,
                    i + 1,
                    sample.delivered,
                    sample.offered,
                    busy.get(i).map_or(String::new(), |b| format!("{b:.3}"))
                );
            }
        }
        out
    }

    /// One table per stream: each cell the median (min–max) delivered pps, then its ratio to
    /// the no-op AF_XDP forwarder and to iptables-legacy at the same rule count.
    pub fn tables(&self, rule_counts: &[usize]) -> String {
        let mut out = String::new();
        for stream in self.streams() {
            let _ = writeln!(
                out,
                "\n### {} — delivered pps, median (min–max); ratio to the no-op AF_XDP \
                 forwarder / to iptables-legacy (≥: generator-bound, the path carried all that \
                 one generator core offered with its own core under {:.0} % busy, so its \
                 throughput is at least that)\n",
                stream.name(),
                SATURATED_BUSY * 100.0
            );
            out.push_str(&self.table(rule_counts, |path, count| {
                let Some(samples) = self.samples(path, stream, count) else {
                    return "–".to_string();
                };
                let values: Vec<f64> = samples.iter().map(|s| s.delivered).collect();
                let m = median(&values);
                let ratio = |other: PathKind| {
                    self.median(other, stream, count)
                        .filter(|o| *o > 0.0)
                        .map_or("–".to_string(), |o| format!("{:.2}×", m / o))
                };
                let bound = if self.generator_bound(path, stream, count) {
                    "≥ "
                } else {
                    ""
                };
                format!(
                    "{bound}{} ({}–{}) {} / {}",
                    rate_text(m),
                    rate_text(min(&values)),
                    rate_text(max(&values)),
                    ratio(PathKind::NoopXdp),
                    ratio(PathKind::IptablesLegacy)
                )
            }));
        }
        out
    }

    /// The targets, each with the figures it compares and whether it holds.
    pub fn targets(&self, rule_counts: &[usize]) -> String {
        let mut out = String::from("\n### Targets\n\n");
        let mut line = |text: String, verdict: Verdict| {
            let _ = match verdict {
                Verdict::Measured(Some(true)) => writeln!(out, "- {text}: **met**"),
                Verdict::Measured(Some(false)) => writeln!(out, "- {text}: **NOT MET**"),
                Verdict::Measured(None) => writeln!(out, "- {text}: **not measured**"),
                Verdict::GeneratorBound(why) => {
                    writeln!(out, "- {text}: **generator-bound**: {why}")
                }
            };
        };
        // Two throughputs that are both the generator's say nothing of the paths.
        let both_bound = |a: PathKind, b: PathKind, stream: Stream, count: usize| {
            self.generator_bound(a, stream, count) && self.generator_bound(b, stream, count)
        };
        let podwall = PathKind::PodwallXdp;
        for stream in self.streams() {
            // The 10 % target is for established traffic; new connections have theirs against
            // it (25 %, below).
            let established = stream != Stream::NewConnections;
            if established {
                for &count in rule_counts {
                    let (p, n) = (
                        self.median(podwall, stream, count),
                        self.median(PathKind::NoopXdp, stream, count),
                    );
                    let text = format!(
                        "{}, {} rules: podwall AF_XDP {} vs no-op {} = {} (≥ 0.90)",
                        stream.name(),
                        count_text(count),
                        show_rate(p),
                        show_rate(n),
                        show_ratio(p, n)
                    );
                    let verdict = if both_bound(podwall, PathKind::NoopXdp, stream, count) {
                        Verdict::GeneratorBound(format!(
                            "both carried all the generator offered with their cores under {:.0} % \
                             busy, so throughput cannot tell them apart; the time per frame at a \
                             common rate does",
                            SATURATED_BUSY * 100.0
                        ))
                    } else {
                        Verdict::Measured(p.zip(n).map(|(p, n)| p >= 0.9 * n))
                    };
                    line(text, verdict);
                }
            }
            if let (Some(rate), true) = (self.cost_rate, established) {
                for &count in rule_counts {
                    let (p, n) = (
                        self.median_cost(podwall, stream, count),
                        self.median_cost(PathKind::NoopXdp, stream, count),
                    );
                    // Throughput within 10 % of the no-op's ⇔ time per frame at most 1/0.9 of it.
                    line(
                        format!(
                            "{}, {} rules: at {}/s, podwall AF_XDP costs the path core {} per \
                             frame vs the no-op's {} = {} (≤ 1.11)",
                            stream.name(),
                            count_text(count),
                            rate_text(rate),
                            show_ns(p),
                            show_ns(n),
                            show_ratio(p, n)
                        ),
                        Verdict::Measured(p.zip(n).map(|(p, n)| p <= n / 0.9)),
                    );
                }
            }
            for (count, factor) in [(1000, 2.0), (10_000, 15.0)] {
                if !rule_counts.contains(&count) {
                    continue;
                }
                let (p, l) = (
                    self.median(podwall, stream, count),
                    self.median(PathKind::IptablesLegacy, stream, count),
                );
                line(
                    format!(
                        "{}, {} rules: podwall AF_XDP {} vs iptables-legacy {} = {} (≥ {factor}×)",
                        stream.name(),
                        count_text(count),
                        show_rate(p),
                        show_rate(l),
                        show_ratio(p, l)
                    ),
                    // A generator-bound podwall figure is a lower bound, enough to show a factor.
                    Verdict::Measured(p.zip(l).map(|(p, l)| p >= factor * l)),
                );
            }
        }
        if let Some(rate) = self.cost_rate {
            for &count in rule_counts {
                let (new, established) = (
                    self.median_cost(podwall, Stream::NewConnections, count),
                    self.median_cost(podwall, Stream::ThousandFlows, count),
                );
                // A rate within 25 % of the established one ⇔ at most 1/0.75 the time per frame.
                line(
                    format!(
                        "{} rules: at {}/s, podwall AF_XDP costs the path core {} per new \
                         connection vs {} per frame of 1000 established flows = {} (≤ 1.33)",
                        count_text(count),
                        rate_text(rate),
                        show_ns(new),
                        show_ns(established),
                        show_ratio(new, established)
                    ),
                    Verdict::Measured(new.zip(established).map(|(n, e)| n <= e / 0.75)),
                );
            }
        }
        for &count in rule_counts {
            let (new, established) = (
                self.median(podwall, Stream::NewConnections, count),
                self.median(podwall, Stream::ThousandFlows, count),
            );
            let text = format!(
                "{} rules: podwall AF_XDP new connections {} vs 1000 established flows {} = {} \
                 (≥ 0.75)",
                count_text(count),
                show_rate(new),
                show_rate(established),
                show_ratio(new, established)
            );
            let bound = |stream| self.generator_bound(podwall, stream, count);
            let verdict = if bound(Stream::NewConnections) && bound(Stream::ThousandFlows) {
                Verdict::GeneratorBound(
                    "both streams carried all the generator offered, so throughput cannot tell \
                     them apart; the time per frame does"
                        .to_string(),
                )
            } else {
                Verdict::Measured(new.zip(established).map(|(n, e)| n >= 0.75 * e))
            };
            line(text, verdict);
        }
        out
    }

    /// A PNG with one panel per stream: delivered pps against rule count, both on log scales.
    pub fn chart(&self, rule_counts: &[usize], file: &Path, font: &Path) -> Result<()> {
        register_font(font)?;
        let streams = self.streams();
        let paths = self.paths();
        let (Some(&lowest), Some(&highest)) = (rule_counts.iter().min(), rule_counts.iter().max())
        else {
            return Ok(());
        };
        let all: Vec<f64> = self
            .points
            .values()
            .flatten()
            .map(|s| s.delivered)
            .filter(|v| *v > 0.0)
            .collect();
        let y_low = (min(&all) / 2.0).max(100.0);
        let y_high = max(&all) * 2.0;
        let height = 420 * streams.len().max(1) as u32;
        let root = BitMapBackend::new(file, (1100, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let panels = root.split_evenly((streams.len().max(1), 1));
        for (panel, stream) in panels.iter().zip(&streams) {
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("64-byte UDP, {}: delivered packets/s", stream.name()),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(
                    ((lowest as f64) * 0.8..(highest as f64) * 1.25).log_scale(),
                    (y_low..y_high).log_scale(),
                )
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc("rules applying to the receiving pod")
                .y_desc("packets/s")
                .x_label_formatter(&|x| count_text(x.round() as usize))
                .y_label_formatter(&|y| rate_text(*y))
                .draw()
                .map_err(plot_error)?;
            for (i, path) in paths.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let series: Vec<(f64, f64)> = rule_counts
                    .iter()
                    .filter_map(|&c| self.median(*path, *stream, c).map(|m| (c as f64, m)))
                    .filter(|(_, m)| *m > 0.0)
                    .collect();
                if series.is_empty() {
                    continue;
                }
                let style = ShapeStyle::from(color).stroke_width(2);
                chart
                    .draw_series(LineSeries::new(series.clone(), style))
                    .map_err(plot_error)?
                    .label(path.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(
                        series
                            .iter()
                            .map(|&point| Circle::new(point, 3, color.filled())),
                    )
                    .map_err(plot_error)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
        Ok(())
    }
}

/// What a target line concludes.
enum Verdict {
    /// Met, not met, or not measured.
    Measured(Option<bool>),
    /// Throughput cannot decide it, and why.
    GeneratorBound(String),
}

fn register_font(font: &Path) -> Result<()> {
    let bytes = std::fs::read(font).with_context(|| {
        format!(
            "reading the chart font {} (scripts/setup-bench installs fonts-dejavu-core)",
            font.display()
        )
    })?;
    // plotters keeps the font for the rest of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a font plotters can use", font.display()))
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// `1.23 M`, `456 k`, `789`.
pub fn rate_text(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} M", pps / 1e6)
    } else if pps >= 1e4 {
        format!("{:.0} k", pps / 1e3)
    } else if pps >= 1e3 {
        format!("{:.1} k", pps / 1e3)
    } else {
        format!("{pps:.0}")
    }
}

fn show_ns(ns: Option<f64>) -> String {
    ns.map_or("–".to_string(), |ns| format!("{:.2} µs", ns / 1000.0))
}

fn show_rate(pps: Option<f64>) -> String {
    pps.map_or("–".to_string(), rate_text)
}

fn show_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_string(),
    }
}

/// `10`, `1k`, `100k`.
pub fn count_text(count: usize) -> String {
    if count >= 1000 && count % 1000 == 0 {
        format!("{}k", count / 1000)
    } else {
        count.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(delivered: f64) -> Sample {
        Sample {
            delivered,
            offered: delivered * 2.0,
        }
    }

    fn results() -> Results {
        let mut r = Results::default();
        for d in [300e3, 310e3, 320e3] {
            r.add(
                PathKind::NoopXdp,
                Stream::OneFlow,
                1000,
                Some(330e3),
                sample(d),
                1.0,
            );
        }
        r.add(
            PathKind::PodwallXdp,
            Stream::OneFlow,
            1000,
            None,
            sample(290e3),
            0.97,
        );
        r.add(
            PathKind::IptablesLegacy,
            Stream::OneFlow,
            1000,
            None,
            sample(100e3),
            1.0,
        );
        r
    }

    /// Both AF_XDP paths at the generator's full speed, without loss, with cores to spare.
    fn generator_bound_results() -> Results {
        let mut r = Results::default();
        let all = |pps: f64| Sample {
            delivered: pps,
            offered: pps,
        };
        for (path, pps, busy) in [
            (PathKind::NoopXdp, 800e3, 0.6),
            (PathKind::PodwallXdp, 650e3, 0.7),
            (PathKind::IptablesLegacy, 30e3, 1.0),
        ] {
            r.add(path, Stream::ThousandFlows, 1000, None, all(pps), busy);
        }
        r
    }

    #[test]
    fn a_path_that_took_the_generator_s_full_speed_with_time_to_spare_is_generator_bound() {
        let r = generator_bound_results();
        assert!(r.generator_bound(PathKind::PodwallXdp, Stream::ThousandFlows, 1000));
        assert!(!r.generator_bound(PathKind::IptablesLegacy, Stream::ThousandFlows, 1000));
        // Paced points never are: their rate was the path's limit.
        assert!(!results().generator_bound(PathKind::NoopXdp, Stream::OneFlow, 1000));
        let tables = r.tables(&[1000]);
        assert!(tables.contains("| podwall, AF_XDP | ≥ 650 k"), "{tables}");
        let targets = r.targets(&[1000]);
        assert!(
            targets.contains("vs no-op 800 k = 0.81× (≥ 0.90): **generator-bound**"),
            "{targets}"
        );
        // A lower bound still shows a factor over iptables.
        assert!(
            targets.contains("vs iptables-legacy 30 k = 21.67× (≥ 2×): **met**"),
            "{targets}"
        );
    }

    #[test]
    fn medians_are_per_path_stream_and_count() {
        let r = results();
        assert_eq!(
            r.median(PathKind::NoopXdp, Stream::OneFlow, 1000),
            Some(310e3)
        );
        assert_eq!(r.median(PathKind::NoopXdp, Stream::OneFlow, 10), None);
        assert_eq!(
            r.median(PathKind::NoopXdp, Stream::ThousandFlows, 1000),
            None
        );
    }

    #[test]
    fn tables_show_ratios_and_targets_their_verdicts() {
        let r = results();
        let tables = r.tables(&[1000]);
        assert!(
            tables.contains("| podwall, AF_XDP | 290 k (290 k–290 k) 0.94× / 2.90× |"),
            "{tables}"
        );
        let targets = r.targets(&[1000]);
        assert!(
            targets.contains(
                "1 flow, 1k rules: podwall AF_XDP 290 k vs no-op 310 k = 0.94× (≥ 0.90): **met**"
            ),
            "{targets}"
        );
        assert!(
            targets.contains("vs iptables-legacy 100 k = 2.90× (≥ 2×): **met**"),
            "{targets}"
        );
        assert!(
            targets.contains(
                "new connections – vs 1000 established flows – = – (≥ 0.75): **not measured**"
            ),
            "{targets}"
        );
    }

    #[test]
    fn new_connections_are_held_to_the_established_rate_not_to_the_no_op() {
        let mut r = results();
        for (path, pps) in [(PathKind::NoopXdp, 300e3), (PathKind::PodwallXdp, 200e3)] {
            r.add(path, Stream::NewConnections, 1000, None, sample(pps), 1.0);
        }
        let targets = r.targets(&[1000]);
        assert!(
            !targets.contains("new connections, 1k rules: podwall AF_XDP 200 k vs no-op"),
            "{targets}"
        );
        assert!(
            targets.contains("1k rules: podwall AF_XDP new connections 200 k vs 1000 established"),
            "{targets}"
        );
    }

    #[test]
    fn costs_compare_at_the_common_rate_and_mark_saturated_paths() {
        let mut r = results();
        for ns in [3000.0, 3100.0, 3200.0] {
            r.add_cost(PathKind::NoopXdp, Stream::OneFlow, 1000, 150e3, ns, true);
        }
        r.add_cost(
            PathKind::PodwallXdp,
            Stream::OneFlow,
            1000,
            150e3,
            3300.0,
            true,
        );
        r.add_cost(
            PathKind::IptablesLegacy,
            Stream::OneFlow,
            1000,
            150e3,
            38e3,
            false,
        );
        let tables = r.cost_tables(&[1000]);
        assert!(
            tables.contains("| podwall, AF_XDP | 3.30 µs 1.06× |"),
            "{tables}"
        );
        assert!(
            tables.contains("| iptables-legacy, linear rules | 38.00 µs* 12.26× |"),
            "{tables}"
        );
        assert_eq!(
            r.median_cost(PathKind::IptablesLegacy, Stream::OneFlow, 1000),
            None
        );
        let targets = r.targets(&[1000]);
        assert!(
            targets.contains(
                "podwall AF_XDP costs the path core 3.30 µs per frame vs the \
                 no-op's 3.10 µs = 1.06× (≤ 1.11): **met**"
            ),
            "{targets}"
        );
    }

    #[test]
    fn csv_has_a_row_per_sample() {
        let csv = results().csv();
        assert_eq!(csv.lines().count(), 1 + 5);
        assert!(csv.contains("noop-xdp,flow1,1000,2,310000,620000,330000,1.000\n"));
        assert!(csv.contains("podwall-xdp,flow1,1000,1,290000,580000,,0.970\n"));
    }
}
