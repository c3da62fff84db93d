//! A running filter: the worker thread with its ports, filter and counters, started from a
//! [`NodeConfig`] and stopped on request. `podwall run` and `podwall lab` both start one.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use policy::Published;

use crate::counters::AttachmentCounters;
use crate::filter::{Filter, FilterConfig};
use crate::port::netns::NetnsGuard;
use crate::port::tun::TunDatapath;
use crate::port::xdp::{XdpConfig, XdpDatapath, XdpLink, XdpMode};
use crate::port::{Datapath, PortDrops};
use crate::worker::ForwardAll;

/// Which ports carry the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathKind {
    Xdp,
    Tun,
}

/// Where one local pod is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// A veth pair end towards the pod and one towards the node, with podwall between them.
    Veth {
        pod: String,
        pod_interface: String,
        node_interface: String,
    },
    /// A TUN device that is (or will be moved into the pod as) the pod's interface.
    Tun { pod: String, device: String },
}

impl Attachment {
    pub fn pod(&self) -> &str {
        match self {
            Attachment::Veth { pod, .. } | Attachment::Tun { pod, .. } => pod,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub datapath: DatapathKind,
    /// Network namespace (as `ip netns` names it) holding the interfaces; `None`: this one.
    pub netns: Option<String>,
    pub attachments: Vec<Attachment>,
    /// TUN only: a device in the node namespace for traffic to non-local addresses.
    pub uplink: Option<String>,
    pub tun_mtu: u16,
    pub xdp: XdpConfig,
    pub filter: FilterConfig,
    /// Who decides the frames: the policy filter, or nobody (a benchmark's reference).
    pub judging: Judging,
    /// Pin the worker thread to this core.
    pub worker_cpu: Option<usize>,
    /// Run the worker thread under `SCHED_FIFO` at this priority (1–99). With the kernel's
    /// packet thread on the same core (threaded NAPI pinned beside the worker), the scheduler
    /// otherwise shares the core in slices of milliseconds and keeps the worker waiting while
    /// frames arrive: at 150 k frames/s a 1,024-entry ring fills in 7 ms, and AF_XDP drops.
    pub worker_priority: Option<u8>,
}

/// Who decides the frames the ports receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Judging {
    /// The policy filter: classifier, flow table, counters. What `podwall run` uses.
    #[default]
    Policy,
    /// Forward everything untouched (`worker::ForwardAll`): the same ports and loop with no
    /// policy and no flow table, the limit the filter is measured against.
    ForwardAll,
}

/// What the ports turned out to be, for reports.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub description: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("entering network namespace {name}: {source}")]
    Netns { name: String, source: io::Error },
    #[error("{0}")]
    Xdp(#[from] crate::port::xdp::XdpError),
    #[error("{0}")]
    Tun(#[from] crate::port::tun::TunError),
    #[error("the {kind:?} datapath cannot use attachment {attachment:?}")]
    WrongAttachment {
        kind: DatapathKind,
        attachment: Attachment,
    },
    #[error("flow table: {0}")]
    FlowTable(crate::flow_table::ConfigError),
    #[error("the worker thread ended before it was ready")]
    WorkerGone,
    #[error("{0}")]
    Pin(io::Error),
    #[error("{0}")]
    Priority(io::Error),
    #[error("spawning the worker thread: {0}")]
    Spawn(io::Error),
}

/// A filter running on its own thread.
pub struct RunningNode {
    stop: Arc<AtomicBool>,
    /// The policy generation the worker is enforcing now.
    active: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<PortDrops>>>,
    counters: Arc<[AttachmentCounters]>,
    attachments: Vec<Attachment>,
    pub ports: PortInfo,
}

fn open_ports(config: &NodeConfig) -> Result<(Box<dyn Datapath>, PortInfo), NodeError> {
    let _inside = match &config.netns {
        Some(name) => Some(NetnsGuard::enter(name).map_err(|source| NodeError::Netns {
            name: name.clone(),
            source,
        })?),
        None => None,
    };
    match config.datapath {
        DatapathKind::Xdp => {
            let mut links = Vec::new();
            let mut description = Vec::new();
            for (i, attachment) in config.attachments.iter().enumerate() {
                let Attachment::Veth {
                    pod,
                    pod_interface,
                    node_interface,
                } = attachment
                else {
                    return Err(NodeError::WrongAttachment {
                        kind: config.datapath,
                        attachment: attachment.clone(),
                    });
                };
                let link = XdpLink::open(i as u32, pod_interface, node_interface, &config.xdp)?;
                let (a, b) = link.modes();
                let mode = |m| match m {
                    XdpMode::Native => "native",
                    XdpMode::Generic => "generic",
                };
                description.push(format!(
                    "{pod}: AF_XDP {pod_interface} ({}) <-> {node_interface} ({}), copy mode",
                    mode(a),
                    mode(b)
                ));
                links.push(link);
            }
            Ok((Box::new(XdpDatapath::new(links)), PortInfo { description }))
        }
        DatapathKind::Tun => {
            let mut devices = Vec::new();
            for (i, attachment) in config.attachments.iter().enumerate() {
                let Attachment::Tun { device, .. } = attachment else {
                    return Err(NodeError::WrongAttachment {
                        kind: config.datapath,
                        attachment: attachment.clone(),
                    });
                };
                devices.push((i as u32, device.clone()));
            }
            let tun = TunDatapath::create(&devices, config.uplink.as_deref(), config.tun_mtu)?;
            let description = config
                .attachments
                .iter()
                .map(|a| match a {
                    Attachment::Tun { pod, device } => format!("{pod}: TUN {device}"),
                    Attachment::Veth { .. } => unreachable!("checked above"),
                })
                .chain(config.uplink.iter().map(|u| format!("uplink: TUN {u}")))
                .collect();
            Ok((Box::new(tun), PortInfo { description }))
        }
    }
}

impl RunningNode {
    /// Opens the ports and starts forwarding with whatever classifier `published` holds (it
    /// may be replaced at any time; the filter picks the new one up between batches).
    pub fn start(config: NodeConfig, published: Arc<Published>) -> Result<RunningNode, NodeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicU64::new(published.load().number));
        let counters: Arc<[AttachmentCounters]> = (0..config.attachments.len())
            .map(|_| AttachmentCounters::default())
            .collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            let active = Arc::clone(&active);
            let counters = Arc::clone(&counters);
            let config = config.clone();
            std::thread::Builder::new()
                .name("podwall-worker".into())
                .spawn(move || -> io::Result<PortDrops> {
                    if let Some(cpu) = config.worker_cpu {
                        if let Err(e) = crate::port::cpu::pin_current_thread(cpu) {
                            let _ = ready_tx.send(Err(NodeError::Pin(e)));
                            return Ok(PortDrops::default());
                        }
                    }
                    if let Some(priority) = config.worker_priority {
                        if let Err(e) = crate::port::cpu::set_realtime_priority(priority) {
                            let _ = ready_tx.send(Err(NodeError::Priority(e)));
                            return Ok(PortDrops::default());
                        }
                    }
                    let (mut datapath, info) = match open_ports(&config) {
                        Ok(opened) => opened,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(PortDrops::default());
                        }
                    };
                    let pods = config
                        .attachments
                        .iter()
                        .map(|a| a.pod().to_string())
                        .collect();
                    let mut filter = match Filter::new(published, pods, counters, config.filter) {
                        Ok(filter) => filter,
                        Err(e) => {
                            let _ = ready_tx.send(Err(NodeError::FlowTable(e)));
                            return Ok(PortDrops::default());
                        }
                    };
                    let _ = ready_tx.send(Ok(info));
                    match config.judging {
                        Judging::Policy => {
                            crate::worker::run(datapath.as_mut(), &mut filter, &stop, &active)?
                        }
                        Judging::ForwardAll => {
                            let mut forward = ForwardAll::new(filter.generation());
                            crate::worker::run(datapath.as_mut(), &mut forward, &stop, &active)?
                        }
                    }
                    Ok(datapath.port_drops())
                })
                .map_err(NodeError::Spawn)?
        };
        match ready_rx.recv() {
            Ok(Ok(ports)) => Ok(RunningNode {
                stop,
                active,
                thread: Some(thread),
                counters,
                attachments: config.attachments,
                ports,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(NodeError::WorkerGone)
            }
        }
    }

    /// The policy generation the worker enforces now (it adopts a newly published one between
    /// batches).
    pub fn active_generation(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until the worker enforces `generation` (or a later one); false on timeout.
    pub fn wait_for_generation(&self, generation: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.active_generation() < generation {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Counters per attachment, in attachment order.
    pub fn counters(&self) -> &[AttachmentCounters] {
        &self.counters
    }

    /// Stops the worker and returns what the ports dropped on their own.
    pub fn stop(mut self) -> io::Result<PortDrops> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<PortDrops> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the worker thread panicked"))),
            None => Ok(PortDrops::default()),
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
