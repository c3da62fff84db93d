//! AF_XDP ports (xsk-rs): each pod attachment is a pair of interfaces, the pod side and the node
//! side, with one AF_XDP socket on each sharing one UMEM. A frame received on one socket is put
//! on the other's TX ring by descriptor, without a userspace copy.
//!
//! Frames cycle through a per-link free list: free → fill ring → RX → (judge) → TX ring of the
//! other side → completion ring → free, or RX → dropped → free. Both fill rings are topped up
//! from the free list on every poll.

use std::ffi::CString;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::time::Duration;

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{Datapath, Framing, Judge, PollSet, PortDrops, Side, Verdict};

/// How an XDP program was attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (veth supports it): the cheapest path.
    Native,
    /// In the generic (skb) path, when native attach fails.
    Generic,
}

/// Sizes of one link's UMEM and rings.
#[derive(Debug, Clone, Copy)]
pub struct XdpConfig {
    pub frames_per_link: u32,
    pub ring_size: u32,
    pub batch: usize,
    /// Try native mode first and fall back to generic (default), or force generic.
    pub force_generic: bool,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            frames_per_link: 4096,
            ring_size: 1024,
            batch: 64,
            force_generic: false,
        }
    }
}

/// The largest frame a 2048-byte UMEM frame carries after the kernel's 256-byte headroom.
pub const MAX_FRAME: usize = 2048 - 256;

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("{interface}: invalid interface name")]
    InterfaceName { interface: String },
    #[error("invalid AF_XDP sizes: {0}")]
    Config(String),
    #[error("creating the UMEM for {interface}: {source}")]
    Umem {
        interface: String,
        #[source]
        source: xsk_rs::umem::UmemCreateError,
    },
    #[error("binding an AF_XDP socket to {interface} (native: {native}; generic: {source})")]
    Socket {
        interface: String,
        native: String,
        #[source]
        source: xsk_rs::socket::SocketCreateError,
    },
    #[error("{interface}: the socket got no fill/completion rings")]
    NoRings { interface: String },
}

struct Endpoint {
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    mode: XdpMode,
}

impl Endpoint {
    fn bind(umem: &Umem, interface: &str, config: &XdpConfig) -> Result<Endpoint, XdpError> {
        let name = CString::new(interface).map_err(|_| XdpError::InterfaceName {
            interface: interface.to_string(),
        })?;
        let ring = QueueSize::new(config.ring_size).map_err(|e| XdpError::Config(e.to_string()))?;
        let attempt = |flags: XdpFlags| {
            let socket_config = SocketConfig::builder()
                .rx_queue_size(ring)
                .tx_queue_size(ring)
                .xdp_flags(flags)
                .libxdp_flags(LibxdpFlags::empty())
                .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: each link binds exactly one socket per (interface, queue 0) pair — the pod
            // side and the node side are different interfaces — and a failed native attempt
            // binds nothing, so the shared-UMEM double-bind case the contract warns about (which
            // would need XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD) never arises.
            unsafe { Socket::new(socket_config, umem, &Interface::new(name.clone()), 0) }
        };
        let native = if config.force_generic {
            Err("not tried (generic forced)".to_string())
        } else {
            attempt(XdpFlags::XDP_FLAGS_DRV_MODE)
                .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
        };
        let (tx, rx, rings, mode) = match native {
            Ok((tx, rx, rings)) => (tx, rx, rings, XdpMode::Native),
            Err(native) => {
                let (tx, rx, rings) =
                    attempt(XdpFlags::XDP_FLAGS_SKB_MODE).map_err(|source| XdpError::Socket {
                        interface: interface.to_string(),
                        native,
                        source,
                    })?;
                (tx, rx, rings, XdpMode::Generic)
            }
        };
        let (fill, comp) = rings.ok_or_else(|| XdpError::NoRings {
            interface: interface.to_string(),
        })?;
        Ok(Endpoint {
            rx,
            tx,
            fill,
            comp,
            mode,
        })
    }
}

/// One pod attachment: the pod-side and node-side sockets over one UMEM.
pub struct XdpLink {
    attachment: u32,
    umem: Umem,
    pod: Endpoint,
    node: Endpoint,
    free: Vec<FrameDesc>,
    received: Vec<FrameDesc>,
    outgoing: Vec<FrameDesc>,
    drops: PortDrops,
}

/// libxdp and libbpf print to stderr by default, for instance that there is no bpffs and libxdp
/// falls back to a single program without a dispatcher, or that an ELF section was skipped —
/// expected on these hosts. Failures still reach us as error values from socket creation.
fn silence_libxdp() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: both calls only store a function pointer (here: none, meaning do not print)
        // in a library global; `Once` runs them once, before this process binds any AF_XDP
        // socket, so no libxdp or libbpf call can be reading those globals concurrently.
        unsafe {
            libxdp_sys::libxdp_set_print(None);
            libbpf_sys::libbpf_set_print(None);
        }
    });
}

impl XdpLink {
    /// Binds sockets on `pod_interface` and `node_interface` (in the calling thread's network
    /// namespace) for attachment number `attachment`.
    pub fn open(
        attachment: u32,
        pod_interface: &str,
        node_interface: &str,
        config: &XdpConfig,
    ) -> Result<XdpLink, XdpError> {
        silence_libxdp();
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(2048).map_err(|e| XdpError::Config(e.to_string()))?)
            .fill_queue_size(
                QueueSize::new(config.ring_size).map_err(|e| XdpError::Config(e.to_string()))?,
            )
            .comp_queue_size(
                QueueSize::new(config.ring_size).map_err(|e| XdpError::Config(e.to_string()))?,
            )
            .build()
            .map_err(|e| XdpError::Config(e.to_string()))?;
        let frames = NonZeroU32::new(config.frames_per_link)
            .ok_or_else(|| XdpError::Config("frames_per_link must be positive".into()))?;
        let (umem, free) =
            Umem::new(umem_config, frames, false).map_err(|source| XdpError::Umem {
                interface: pod_interface.to_string(),
                source,
            })?;
        let pod = Endpoint::bind(&umem, pod_interface, config)?;
        let node = Endpoint::bind(&umem, node_interface, config)?;
        let mut link = XdpLink {
            attachment,
            umem,
            pod,
            node,
            free,
            received: vec![FrameDesc::default(); config.batch],
            outgoing: Vec::with_capacity(config.batch),
            drops: PortDrops::default(),
        };
        link.refill();
        Ok(link)
    }

    /// The XDP modes of the pod-side and node-side sockets.
    pub fn modes(&self) -> (XdpMode, XdpMode) {
        (self.pod.mode, self.node.mode)
    }

    /// Returns completed TX frames to the free list and tops up both fill rings.
    fn refill(&mut self) {
        for endpoint in [&mut self.pod, &mut self.node] {
            let mut done = [FrameDesc::default(); 64];
            loop {
                // SAFETY: the completion ring belongs to `self.umem` and only ever returns
                // descriptors of frames this link put on a TX ring of the same UMEM.
                let n = unsafe { endpoint.comp.consume(&mut done) };
                self.free.extend_from_slice(&done[..n]);
                if n < done.len() {
                    break;
                }
            }
        }
        // The pod side gets at most half of what is free, so the node side is never starved.
        for (endpoint, share) in [(&mut self.pod, 2), (&mut self.node, 1)] {
            let room = endpoint.fill.nb_free(self.free.len() as u32) as usize;
            let give = room.min(self.free.len().div_ceil(share));
            if give == 0 {
                continue;
            }
            let start = self.free.len() - give;
            // SAFETY: every descriptor in `free` describes a frame of `self.umem` that is on no
            // ring and referenced nowhere else; after `produce` they belong to the kernel until
            // they come back on an RX ring.
            let n = unsafe { endpoint.fill.produce(&self.free[start..]) };
            if n > 0 {
                self.free.truncate(start);
            }
        }
    }

    /// Receives one batch on `from`'s RX ring and forwards or drops each frame.
    fn pass(&mut self, from: Side, judge: &mut dyn Judge) -> io::Result<usize> {
        let (source, target) = match from {
            Side::Pod => (&mut self.pod, &mut self.node),
            Side::Node => (&mut self.node, &mut self.pod),
        };
        // SAFETY: the RX ring belongs to `self.umem`; the descriptors it yields are frames of
        // that UMEM handed back to us by the kernel, referenced nowhere else.
        let n = unsafe { source.rx.consume(&mut self.received) };
        if n == 0 {
            if source.fill.needs_wakeup() {
                source.fill.wakeup(source.rx.fd_mut(), 0)?;
            }
            return Ok(0);
        }
        self.outgoing.clear();
        for desc in self.received[..n].iter() {
            // SAFETY: as below; the frame is only read here.
            let data = unsafe { self.umem.data(desc) };
            judge.prefetch(self.attachment, from, Framing::Ethernet, data.contents());
        }
        judge.prefetch_batch();
        for desc in self.received[..n].iter_mut() {
            // SAFETY: `desc` came from this UMEM's RX ring and is on no ring now, so neither the
            // kernel nor any other reference touches the frame while we hold its data.
            let mut data = unsafe { self.umem.data_mut(desc) };
            let verdict = judge.judge(
                self.attachment,
                from,
                Framing::Ethernet,
                data.contents_mut(),
            );
            match verdict {
                Verdict::Forward => self.outgoing.push(*desc),
                Verdict::Drop => self.free.push(*desc),
            }
        }
        if !self.outgoing.is_empty() {
            let room = target.tx.nb_free(self.outgoing.len() as u32) as usize;
            let sent = if room >= self.outgoing.len() {
                // SAFETY: the descriptors are frames of `self.umem`, which both sockets share,
                // and are on no other ring; they return through the completion ring.
                unsafe { target.tx.produce_and_wakeup(&self.outgoing)? }
            } else {
                0
            };
            // In copy mode the kernel sends TX frames only inside a kick, and at most 32 per
            // kick: kick until the whole batch has had its turn, or its tail stays in the ring
            // until some later kick (frames forwarded now arrive seconds later, and under load
            // the ring fills and drops).
            for _ in 0..sent.div_ceil(TX_FRAMES_PER_KICK) {
                target.tx.wakeup()?;
            }
            if sent < self.outgoing.len() {
                self.drops.tx_full += (self.outgoing.len() - sent) as u64;
                self.free.extend_from_slice(&self.outgoing[sent..]);
            }
        }
        Ok(n)
    }
}

impl XdpLink {
    /// The port's own drops, and the kernel's receive drops of both sockets. A socket whose
    /// statistics cannot be read (it never fails on a bound socket) adds none.
    fn port_drops(&self) -> PortDrops {
        [&self.pod, &self.node]
            .into_iter()
            .filter_map(|endpoint| endpoint.rx.fd().xdp_statistics().ok())
            .fold(self.drops, |acc, stats| {
                acc + PortDrops {
                    rx_ring_full: stats.rx_ring_full(),
                    rx_fill_empty: stats.rx_fill_ring_empty_descs(),
                    ..PortDrops::default()
                }
            })
    }
}

/// Frames the kernel sends per TX kick in copy mode (`TX_BATCH_SIZE` in net/xdp/xsk.c).
const TX_FRAMES_PER_KICK: usize = 32;

/// Every AF_XDP link of a worker.
pub struct XdpDatapath {
    links: Vec<XdpLink>,
    /// Both RX sockets of every link.
    sleep_on: PollSet,
}

impl XdpDatapath {
    pub fn new(links: Vec<XdpLink>) -> Self {
        let sleep_on = PollSet::new(
            links
                .iter()
                .flat_map(|l| [l.pod.rx.fd().as_raw_fd(), l.node.rx.fd().as_raw_fd()]),
        );
        XdpDatapath { links, sleep_on }
    }
}

impl Datapath for XdpDatapath {
    fn poll(&mut self, judge: &mut dyn Judge) -> io::Result<usize> {
        let mut handled = 0;
        for link in &mut self.links {
            handled += link.pass(Side::Pod, judge)?;
            handled += link.pass(Side::Node, judge)?;
            link.refill();
        }
        Ok(handled)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.sleep_on.wait(timeout)
    }

    fn port_drops(&self) -> PortDrops {
        self.links
            .iter()
            .fold(PortDrops::default(), |acc, l| acc + l.port_drops())
    }
}
