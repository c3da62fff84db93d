//! The forwarding loop: poll the ports, let the filter judge every frame, wait when idle, do a
//! little housekeeping between batches. One loop for every kind of port.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::filter::Filter;
use crate::port::Datapath;

/// Runs until `stop` is set, publishing the policy generation in force to `active`. Returns the
/// first I/O error of a port.
pub fn run(
    datapath: &mut dyn Datapath,
    filter: &mut Filter,
    stop: &AtomicBool,
    active: &AtomicU64,
) -> io::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        filter.tick();
        active.store(filter.generation(), Ordering::Release);
        let handled = datapath.poll(filter)?;
        if handled == 0 {
            // Short enough that a stop request or a policy swap is seen promptly.
            datapath.wait(Duration::from_millis(20))?;
        }
    }
    Ok(())
}
