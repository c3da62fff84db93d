//! Pinning a thread to one core, so a measurement puts the generator and the path under test on
//! cores of their own (and a deployment can keep the worker off the cores of other work), and
//! giving it a real-time priority, so that it is not kept waiting behind the kernel's own
//! packet threads on that core.

use std::io;

/// Restricts the calling thread to core `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core {cpu} is beyond what a cpu set holds"),
        ));
    }
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live, initialised cpu set and its size is passed with it; pid 0 names
    // the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    os_result(rc, || format!("pinning to core {cpu}"))
}

/// A libc call's return code as a result: on failure, the OS error with what was being done.
fn os_result(rc: libc::c_int, doing: impl FnOnce() -> String) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(io::Error::new(e.kind(), format!("{}: {e}", doing())))
}

/// The real-time priorities `SCHED_FIFO` offers on Linux.
pub const REALTIME_PRIORITIES: std::ops::RangeInclusive<u8> = 1..=99;

/// Runs the calling thread under `SCHED_FIFO` at `priority` (1–99): whenever it is runnable it
/// preempts every normally scheduled thread of its core. Fit only for a thread that sleeps
/// whenever it has no work, as the forwarding loop does; the kernel's real-time throttling
/// still leaves the core 5 % to others if it ever does not.
pub fn set_realtime_priority(priority: u8) -> io::Result<()> {
    if !REALTIME_PRIORITIES.contains(&priority) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("real-time priority {priority} is outside 1–99"),
        ));
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a live, initialised `sched_param` read only during the call; pid 0
    // names the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    os_result(rc, || {
        format!("setting real-time priority {priority} (SCHED_FIFO)")
    })
}
