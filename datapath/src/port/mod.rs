//! Ports: where frames enter and leave podwall. Every `unsafe` block of the project lives in
//! this module tree (AF_XDP rings and UMEM, TUN ioctls, `setns`), each with its `SAFETY:`
//! invariant; what is above it sees neither raw pointers nor file descriptors.

pub mod cpu;
pub mod netns;
pub mod packet_sender;
pub mod tun;
pub mod xdp;
pub mod xdp_drop;

use std::io;
use std::time::Duration;

/// Which side of a pod's attachment a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// From the pod: the pod's egress.
    Pod,
    /// From the node (bridge, other pods, outside): the pod's ingress.
    Node,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
}

/// How a frame starts: with an Ethernet header (veth, AF_XDP) or with the IP header (TUN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Ethernet,
    Ip,
}

/// Decides each frame. The filter implements it; ports call it for every frame they receive,
/// and may change the frame in place (checksum completion).
pub trait Judge {
    fn judge(&mut self, attachment: u32, side: Side, framing: Framing, frame: &mut [u8])
        -> Verdict;

    /// For routed ports (TUN): the local attachment that owns `address`, if any.
    fn attachment_of(&self, address: std::net::IpAddr) -> Option<u32>;

    /// A frame that [`Judge::judge`] will see soon, in this batch: start loading what judging
    /// it will read. Ports call it for every frame of a batch, then [`Judge::prefetch_batch`],
    /// then `judge` for each. The default does nothing.
    fn prefetch(&mut self, _attachment: u32, _side: Side, _framing: Framing, _frame: &[u8]) {}

    /// After `prefetch` for the whole batch: the second step of loading (what the first step's
    /// memory points to).
    fn prefetch_batch(&mut self) {}
}

/// A set of ports the forwarding loop drives.
pub trait Datapath {
    /// Moves what is ready through `judge`, at most one batch per queue; returns the number of
    /// frames handled (forwarded or dropped).
    fn poll(&mut self, judge: &mut dyn Judge) -> io::Result<usize>;

    /// Blocks until some queue may have work, or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;

    /// Frames the port itself had to drop (TX ring full, write errors), by reason.
    fn port_drops(&self) -> PortDrops;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortDrops {
    pub tx_full: u64,
    pub tx_error: u64,
    pub no_route: u64,
    /// Frames the kernel could not hand to an AF_XDP socket because its RX ring was full (the
    /// worker fell behind), and because its fill ring had no free frame (frames were slow to
    /// come back), from the sockets' `XDP_STATISTICS`. Always 0 for TUN.
    pub rx_ring_full: u64,
    pub rx_fill_empty: u64,
}

impl std::ops::Add for PortDrops {
    type Output = PortDrops;

    fn add(self, other: PortDrops) -> PortDrops {
        PortDrops {
            tx_full: self.tx_full + other.tx_full,
            tx_error: self.tx_error + other.tx_error,
            no_route: self.no_route + other.no_route,
            rx_ring_full: self.rx_ring_full + other.rx_ring_full,
            rx_fill_empty: self.rx_fill_empty + other.rx_fill_empty,
        }
    }
}

impl std::fmt::Display for PortDrops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tx ring full {}, tx errors {}, no route {}, rx ring full {}, fill ring empty {}",
            self.tx_full, self.tx_error, self.no_route, self.rx_ring_full, self.rx_fill_empty
        )
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub(crate) fn interface_index(name: &str) -> io::Result<u32> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c_name` is a NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}: {}", io::Error::last_os_error()),
        ));
    }
    Ok(index)
}

/// Asks the CPU to start loading `value`'s cache lines, without waiting for them: a batch of
/// frames can have its flow-table lookups' memory in flight at once instead of one after another.
#[inline]
pub fn prefetch<T>(value: &T) {
    const LINE: usize = 64;
    let start = (value as *const T).cast::<i8>();
    for offset in (0..std::mem::size_of::<T>()).step_by(LINE) {
        let line = start.wrapping_add(offset);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it never faults and changes no memory, and `line` lies
        // inside `value`. SSE (which `_mm_prefetch` needs) is part of x86_64.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(line);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }
}

/// The descriptors a datapath sleeps on, as `poll` wants them: built once when the ports open,
/// so that going to sleep allocates nothing.
pub(crate) struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    pub(crate) fn new(fds: impl IntoIterator<Item = std::os::fd::RawFd>) -> PollSet {
        PollSet {
            fds: fds
                .into_iter()
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        }
    }

    /// Blocks until one of the descriptors is readable or `timeout` passes (a signal ends the
    /// wait early, as a timeout would).
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `self.fds` is a live, correctly sized array of `pollfd` for the whole call;
        // the kernel writes only `revents` inside it. The descriptors belong to sockets and
        // devices owned by the datapath that owns this set, which outlive it.
        let rc = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                millis,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}
