//! Offering the stream and counting what arrives: a generator thread pinned to its own core
//! writing frames with [`datapath::port::packet_sender`], at full speed or paced to a rate, and
//! the sink interface's `rx_packets` (every frame there is dropped by XDP as it arrives).
//!
//! A path's figure is its throughput in the RFC 2544 sense: the highest offered rate it
//! delivers with at most [`LOSS_TOLERANCE`] lost ([`find_rate`]). Offering more than a path can
//! take measures something else: a path whose receive side does work for frames it drops later
//! (AF_XDP copies every frame into the UMEM before finding the RX ring full) delivers less
//! under overload than at its own rate, and by an amount that swings from run to run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use datapath::port::netns::NetnsGuard;
use datapath::port::packet_sender::PacketSender;

use super::frames::{FrameSource, Framing, Stream};

const BATCH: usize = 64;

/// At most this share of the offered frames may be lost at a path's throughput.
pub const LOSS_TOLERANCE: f64 = 0.01;
/// How far below the common cost rate the generator may fall in a cost window.
pub const OFFERED_TOLERANCE: f64 = 0.05;

/// The running generator; stopped on drop.
pub struct Generator {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// Frames per second to offer, as `f64` bits; 0: as fast as the device takes them.
    rate: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Generator {
    /// Starts sending `stream` on `interface` of namespace `netns`, from core `cpu`.
    pub fn start(
        netns: &str,
        interface: &str,
        stream: Stream,
        framing: Framing,
        cpu: usize,
    ) -> Result<Generator> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let rate = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = {
            let (stop, sent, rate) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&rate));
            let (netns, interface) = (netns.to_string(), interface.to_string());
            std::thread::Builder::new()
                .name("pw-generator".into())
                .spawn(move || -> Result<()> {
                    let opened = (|| -> Result<PacketSender> {
                        datapath::port::cpu::pin_current_thread(cpu)?;
                        let _inside = NetnsGuard::enter(&netns)
                            .with_context(|| format!("entering {netns}"))?;
                        PacketSender::open(&interface)
                            .with_context(|| format!("opening a packet socket on {interface}"))
                    })();
                    let mut sender = match opened {
                        Ok(sender) => {
                            let _ = ready_tx.send(Ok(()));
                            sender
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let mut source = FrameSource::new(stream, framing);
                    let mut frames = source.buffers(BATCH);
                    let mut pace = Pace::new(0.0);
                    while !stop.load(Ordering::Relaxed) {
                        let wanted = f64::from_bits(rate.load(Ordering::Relaxed));
                        if wanted != pace.rate {
                            pace = Pace::new(wanted);
                        }
                        if !pace.may_send() {
                            std::hint::spin_loop();
                            continue;
                        }
                        source.fill(&mut frames);
                        let refs: [&[u8]; BATCH] = std::array::from_fn(|i| frames[i].as_slice());
                        let n = sender
                            .send(&refs)
                            .with_context(|| format!("sending on {}", sender.interface()))?;
                        pace.sent += n as u64;
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Ok(())
                })
                .context("spawning the generator thread")?
        };
        let generator = Generator {
            stop,
            sent,
            rate,
            thread: Some(thread),
        };
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the generator thread ended before it was ready"))??;
        Ok(generator)
    }

    /// Offer `pps` frames per second from now on; `None`: as many as the device takes.
    pub fn set_rate(&self, pps: Option<f64>) {
        let bits = pps.filter(|r| *r > 0.0).unwrap_or(0.0).to_bits();
        self.rate.store(bits, Ordering::Relaxed);
    }

    /// Frames the device has taken so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops it; reports a send error it met.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the generator thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps the frames sent since `start` at `rate` per second (0: no limit).
struct Pace {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Pace {
    fn new(rate: f64) -> Pace {
        Pace {
            rate,
            start: Instant::now(),
            sent: 0,
        }
    }

    fn may_send(&self) -> bool {
        self.rate == 0.0 || (self.sent as f64) < self.rate * self.start.elapsed().as_secs_f64()
    }
}

/// The `rx_packets` counter of `interface` in namespace `netns`, from `/proc/net/dev` as a
/// thread inside that namespace sees it.
pub fn rx_packets(netns: &str, interface: &str) -> Result<u64> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<u64> {
                let _inside =
                    NetnsGuard::enter(netns).with_context(|| format!("entering {netns}"))?;
                let table = std::fs::read_to_string("/proc/thread-self/net/dev")
                    .context("reading /proc/thread-self/net/dev")?;
                parse_rx_packets(&table, interface)
                    .ok_or_else(|| anyhow!("no interface {interface} in {netns}'s /proc/net/dev"))
            })
            .join()
            .map_err(|_| anyhow!("the counter thread panicked"))?
    })
}

fn parse_rx_packets(table: &str, interface: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != interface {
            return None;
        }
        // bytes, packets, errs, drop, …
        counters.split_whitespace().nth(1)?.parse().ok()
    })
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Frames per second that reached the sink.
    pub delivered: f64,
    /// Frames per second the generator's device took.
    pub offered: f64,
}

impl Sample {
    /// Whether at most [`LOSS_TOLERANCE`] of what was offered was lost.
    pub fn loss_free(&self) -> bool {
        self.delivered >= (1.0 - LOSS_TOLERANCE) * self.offered
    }
}

/// Runs `generator` for `warmup`, then counts over `window`.
pub fn measure(
    generator: &Generator,
    sink_netns: &str,
    sink_interface: &str,
    warmup: Duration,
    window: Duration,
) -> Result<Sample> {
    std::thread::sleep(warmup);
    let rx0 = rx_packets(sink_netns, sink_interface)?;
    let sent0 = generator.sent();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let rx1 = rx_packets(sink_netns, sink_interface)?;
    let sent1 = generator.sent();
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Sample {
        delivered: rx1.saturating_sub(rx0) as f64 / seconds,
        offered: sent1.saturating_sub(sent0) as f64 / seconds,
    })
}

/// How long core `core` has been idle so far, in nanoseconds, as exactly as the kernel keeps
/// it. A cost is the busy share of one core over a window of a few seconds, and `/proc/stat`'s
/// busy fields cannot give that: with tick accounting they are samples, one per tick
/// (250 Hz here), so a core 30 % busy over 2 s is about 150 samples, an error of ±7 %, as large
/// as the differences between paths being measured. Idle time is exact: the cpuidle driver
/// keeps each idle state's residency in microseconds, and a NO_HZ kernel accounts
/// `/proc/stat`'s idle at idle entry and exit (in its 10 ms units), the fallback.
fn idle_ns(core: usize) -> Result<u64> {
    let states = format!("/sys/devices/system/cpu/cpu{core}/cpuidle");
    if let Ok(entries) = std::fs::read_dir(&states) {
        let mut micros = 0u64;
        let mut found = false;
        for entry in entries {
            let path = entry.context("listing cpuidle states")?.path().join("time");
            if let Ok(text) = std::fs::read_to_string(&path) {
                micros += text
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("reading {}", path.display()))?;
                found = true;
            }
        }
        if found {
            return Ok(micros * 1000);
        }
    }
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    proc_stat_idle_ns(&stat, core).ok_or_else(|| anyhow!("/proc/stat has no cpu{core} line"))
}

/// Idle and iowait of `cpu<core>` in a `/proc/stat` text, in nanoseconds (its fields count
/// USER_HZ units, 100 per second on every Linux ABI).
fn proc_stat_idle_ns(stat: &str, core: usize) -> Option<u64> {
    let name = format!("cpu{core}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some((fields.get(3)? + fields.get(4)?) * 10_000_000)
}

/// What a path costs at a rate it can carry: the path core's busy time per delivered frame.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub sample: Sample,
    /// Share of the path core that was busy over the window.
    pub busy: f64,
}

impl Cost {
    /// Nanoseconds of path-core time per delivered frame.
    pub fn per_frame_ns(&self) -> f64 {
        self.busy * 1e9 / self.sample.delivered
    }

    /// Whether the path delivered what was offered (within [`LOSS_TOLERANCE`]) at about `rate`
    /// (within [`OFFERED_TOLERANCE`]). A generator a little short of the rate in one window says
    /// nothing against the path: it kept up, at nearly the same rate.
    pub fn carried(&self, rate: f64) -> bool {
        self.generator_kept_up(rate) && self.sample.loss_free()
    }

    /// Whether the generator offered about `rate` (within [`OFFERED_TOLERANCE`]).
    pub fn generator_kept_up(&self, rate: f64) -> bool {
        self.sample.offered >= (1.0 - OFFERED_TOLERANCE) * rate
    }
}

/// Like [`measure`], also reading how busy core `path_core` was: wall time minus its exact
/// idle time (see [`idle_ns`]). At a rate below every compared path's throughput this is a
/// steadier comparison than the throughputs themselves: it does not depend on where each path
/// happens to start losing frames.
pub fn measure_cost(
    generator: &Generator,
    sink_netns: &str,
    sink_interface: &str,
    path_core: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Cost> {
    std::thread::sleep(warmup);
    let (idle0, t0) = (idle_ns(path_core)?, Instant::now());
    let sample = measure(
        generator,
        sink_netns,
        sink_interface,
        Duration::ZERO,
        window,
    )?;
    let (idle1, wall) = (idle_ns(path_core)?, t0.elapsed().as_nanos() as f64);
    let idle = idle1.saturating_sub(idle0) as f64;
    Ok(Cost {
        sample,
        busy: (1.0 - idle / wall.max(1.0)).clamp(0.0, 1.0),
    })
}

/// The highest rate (frames/s) the path delivers with at most [`LOSS_TOLERANCE`] lost, or
/// `None` when it takes all the generator offers at full speed. A bisection between what the
/// path delivered under full load and what the generator offered, in `steps` steps of one or
/// two measurements of `window` each; the answer is always a rate that was measured to pass.
/// If none did, the lower bound is halved until one does (a path that cannot carry even
/// 1/64 of what it delivered under full load is an error). Leaves the generator at the rate
/// found.
pub fn find_rate(
    generator: &Generator,
    sink_netns: &str,
    sink_interface: &str,
    window: Duration,
    steps: u32,
) -> Result<Option<f64>> {
    let settle = Duration::from_millis(200);
    generator.set_rate(None);
    let full = measure(generator, sink_netns, sink_interface, settle, window)?;
    if full.loss_free() {
        return Ok(None);
    }
    let keeps_up = |rate: f64| -> Result<bool> {
        generator.set_rate(Some(rate));
        let sample = measure(generator, sink_netns, sink_interface, settle, window)?;
        Ok(sample.loss_free())
    };
    // Under overload a path can deliver less than it carries at its own rate (see the module
    // documentation), so the search starts from half of it.
    let (mut low, mut high) = (full.delivered / 2.0, full.offered);
    let mut passed: Option<f64> = None;
    for _ in 0..steps {
        let rate = (low + high) / 2.0;
        // A loss can be a moment of other work on the machine: a rate fails only twice over.
        if keeps_up(rate)? || keeps_up(rate)? {
            low = rate;
            passed = Some(rate);
        } else {
            high = rate;
        }
    }
    let mut rate = low;
    while passed.is_none() {
        if rate < full.delivered / 64.0 || rate < 1.0 {
            bail!(
                "no rate down to {rate:.0} frames/s arrives with at most {:.0} % loss (under \
                 full load {:.0} of {:.0} frames/s arrived)",
                LOSS_TOLERANCE * 100.0,
                full.delivered,
                full.offered
            );
        }
        if keeps_up(rate)? || keeps_up(rate)? {
            passed = Some(rate);
        } else {
            rate /= 2.0;
        }
    }
    generator.set_rate(passed);
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rx_packets_of_the_named_interface() {
        let table = "Inter-|   Receive                            |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
             lo:       0       0    0    0    0     0          0         0        0\n  \
             k123: 6400000  100000    0    0    0     0          0         0        0\n";
        assert_eq!(parse_rx_packets(table, "k123"), Some(100_000));
        assert_eq!(parse_rx_packets(table, "lo"), Some(0));
        assert_eq!(parse_rx_packets(table, "k12"), None);
    }

    #[test]
    fn reads_idle_and_iowait_of_the_named_core_from_proc_stat() {
        let stat = "cpu  10 0 5 700 3 0 1 0 0 0\n\
                    cpu0 5 0 2 350 1 0 0 0 0 0\n\
                    cpu1 5 0 3 350 2 0 1 0 0 0\n\
                    intr 1234\n";
        assert_eq!(proc_stat_idle_ns(stat, 1), Some(352 * 10_000_000));
        assert_eq!(proc_stat_idle_ns(stat, 0), Some(351 * 10_000_000));
        assert_eq!(proc_stat_idle_ns(stat, 2), None);
    }

    #[test]
    fn a_cost_window_carried_the_rate_only_if_offered_and_delivered() {
        let cost = |offered, delivered| Cost {
            sample: Sample { delivered, offered },
            busy: 0.3,
        };
        assert!(cost(150_000.0, 149_000.0).carried(150_000.0));
        assert!(!cost(150_000.0, 147_000.0).carried(150_000.0));
        // The generator a little short, the path keeping up: carried.
        assert!(cost(148_000.0, 147_900.0).carried(150_000.0));
        // Far short: not a measurement at the rate.
        assert!(!cost(130_000.0, 130_000.0).carried(150_000.0));
    }
}
