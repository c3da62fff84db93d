//! The forwarding loop: poll the ports, let the judge decide every frame, wait when idle, do a
//! little housekeeping between batches. One loop for every kind of port and every judge.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::filter::Filter;
use crate::port::{Datapath, Framing, Judge, Side, Verdict};

/// What the loop needs of a judge besides the verdicts: housekeeping between batches and the
/// policy generation in force.
pub trait Worker: Judge {
    /// Between batches; `handled`: frames the last batch moved.
    fn tick(&mut self, handled: usize);
    fn generation(&self) -> u64;
}

impl Worker for Filter {
    fn tick(&mut self, handled: usize) {
        Filter::tick(self, handled)
    }

    fn generation(&self) -> u64 {
        Filter::generation(self)
    }
}

/// Forwards every frame untouched: the ports and the loop with no policy, no parsing and no
/// flow table. The throughput runner measures it as the limit of a datapath, next to the
/// filter on the same ports.
#[derive(Debug)]
pub struct ForwardAll {
    generation: u64,
}

impl ForwardAll {
    pub fn new(generation: u64) -> ForwardAll {
        ForwardAll { generation }
    }
}

impl Judge for ForwardAll {
    fn judge(&mut self, _: u32, _: Side, _: Framing, _: &mut [u8]) -> Verdict {
        Verdict::Forward
    }

    fn attachment_of(&self, _: IpAddr) -> Option<u32> {
        None
    }
}

impl Worker for ForwardAll {
    fn tick(&mut self, _: usize) {}

    fn generation(&self) -> u64 {
        self.generation
    }
}

/// Runs until `stop` is set, publishing the policy generation in force to `active`. Returns the
/// first I/O error of a port.
pub fn run<W: Worker>(
    datapath: &mut dyn Datapath,
    worker: &mut W,
    stop: &AtomicBool,
    active: &AtomicU64,
) -> io::Result<()> {
    let mut handled = 0;
    while !stop.load(Ordering::Relaxed) {
        worker.tick(handled);
        active.store(worker.generation(), Ordering::Release);
        handled = datapath.poll(worker)?;
        if handled == 0 {
            // Short enough that a stop request or a policy swap is seen promptly.
            datapath.wait(Duration::from_millis(20))?;
        }
    }
    Ok(())
}
