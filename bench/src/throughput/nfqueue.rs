//! The userspace peer: a verdict program on an NFQUEUE, the architecture of
//! kube-network-policies (the kernel queues each packet that conntrack does not know as
//! established; a program decides it and returns a verdict). Kept minimal: it reads the source
//! address, protocol and destination port and scans the rules in order, as a program that
//! evaluates policies one by one does, without caching.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use arc_swap::ArcSwap;
use datapath::port::netns::NetnsGuard;

use super::paths::Cores;
use super::rules::RuleSet;

pub const QUEUE: u16 = 0;
/// Packets the kernel holds for the program before it drops new ones.
const QUEUE_LENGTH: u32 = 4096;
/// The program only needs the headers.
const COPY_BYTES: u16 = 64;

/// The verdict thread; stopped on drop.
pub struct VerdictProgram {
    rules: Arc<ArcSwap<RuleSet>>,
    stop: Arc<AtomicBool>,
    verdicts: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl VerdictProgram {
    /// Binds queue [`QUEUE`] in namespace `netns` and serves it from the path core, at the
    /// runner's real-time priority if it has one.
    pub fn start(netns: &str, cores: Cores, rules: RuleSet) -> Result<VerdictProgram> {
        let rules = Arc::new(ArcSwap::from_pointee(rules));
        let stop = Arc::new(AtomicBool::new(false));
        let verdicts = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = {
            let (rules, stop, verdicts) =
                (Arc::clone(&rules), Arc::clone(&stop), Arc::clone(&verdicts));
            let netns = netns.to_string();
            std::thread::Builder::new()
                .name("pw-nfqueue".into())
                .spawn(move || -> Result<()> {
                    let opened = (|| -> Result<nfq::Queue> {
                        datapath::port::cpu::pin_current_thread(cores.path)?;
                        if let Some(priority) = cores.priority {
                            datapath::port::cpu::set_realtime_priority(priority)?;
                        }
                        let _inside = NetnsGuard::enter(&netns)
                            .with_context(|| format!("entering {netns}"))?;
                        let mut queue = nfq::Queue::open().context("opening an NFQUEUE socket")?;
                        queue.bind(QUEUE).context("binding queue 0")?;
                        queue.set_queue_max_len(QUEUE, QUEUE_LENGTH)?;
                        queue.set_copy_range(QUEUE, COPY_BYTES)?;
                        queue.set_fail_open(QUEUE, false)?;
                        queue.set_nonblocking(true);
                        Ok(queue)
                    })();
                    let mut queue = match opened {
                        Ok(queue) => {
                            let _ = ready_tx.send(Ok(()));
                            queue
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let mut message = match queue.recv() {
                            Ok(message) => message,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                // Idle (the runner keeps every path built while it measures
                                // another): wake rarely. Under load the queue is never empty.
                                std::thread::sleep(Duration::from_millis(1));
                                continue;
                            }
                            Err(e) => return Err(e).context("reading the queue"),
                        };
                        let allowed = decide(&rules.load(), message.get_payload());
                        message.set_verdict(if allowed {
                            nfq::Verdict::Accept
                        } else {
                            nfq::Verdict::Drop
                        });
                        queue.verdict(message).context("sending a verdict")?;
                        verdicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
                .context("spawning the verdict thread")?
        };
        let program = VerdictProgram {
            rules,
            stop,
            verdicts,
            thread: Some(thread),
        };
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the verdict thread ended before it was ready"))??;
        Ok(program)
    }

    pub fn set_rules(&self, rules: RuleSet) {
        self.rules.store(Arc::new(rules));
    }

    pub fn verdicts(&self) -> u64 {
        self.verdicts.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the verdict thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for VerdictProgram {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accept when an IPv4 packet's (source, protocol, destination port) matches a rule.
fn decide(rules: &RuleSet, packet: &[u8]) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let header = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header < 20 || packet.len() < header + 4 {
        return false;
    }
    let protocol = packet[9];
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let port = u16::from_be_bytes([packet[header + 2], packet[header + 3]]);
    rules.first_match(source, protocol, port).is_some()
}

#[cfg(test)]
mod tests {
    use super::super::frames::{FrameSource, Framing, Stream};
    use super::*;

    #[test]
    fn decides_the_stream_by_its_headers() {
        let mut source = FrameSource::new(Stream::OneFlow, Framing::Ip);
        let mut packets = source.buffers(1);
        source.fill(&mut packets);
        assert!(decide(&RuleSet::generate(100), &packets[0]));
        let mut other_port = packets[0].clone();
        other_port[23] ^= 1;
        assert!(!decide(&RuleSet::generate(100), &other_port));
        assert!(!decide(&RuleSet::generate(100), &packets[0][..22]));
        assert!(!decide(&RuleSet::generate(100), &[]));
    }
}
