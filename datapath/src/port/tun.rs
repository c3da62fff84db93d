//! TUN ports (the `tun` crate): each pod's `eth0` is a TUN device owned by podwall (the caller
//! moves it into the pod's namespace), and podwall routes IP packets between pods by destination
//! address. An optional uplink TUN in the node namespace carries traffic to and from addresses
//! that are not local pods.
//!
//! A packet from pod A to local pod B is judged twice, as A's egress and as B's ingress, exactly
//! as it would be on two separate veth attachments.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{Datapath, Framing, Judge, PollSet, PortDrops, Side, Verdict};

struct TunPort {
    attachment: Option<u32>,
    device: tun::Device,
}

/// Every TUN device of a worker.
pub struct TunDatapath {
    ports: Vec<TunPort>,
    /// Index in `ports` of each attachment's device.
    by_attachment: Vec<Option<usize>>,
    uplink: Option<usize>,
    buffer: Vec<u8>,
    batch: usize,
    drops: PortDrops,
    /// Every device.
    sleep_on: PollSet,
}

#[derive(Debug, thiserror::Error)]
#[error("creating TUN device {name}: {source}")]
pub struct TunError {
    name: String,
    #[source]
    source: tun::Error,
}

fn open(name: &str, mtu: u16) -> Result<tun::Device, TunError> {
    let mut config = tun::Configuration::default();
    config.tun_name(name).layer(tun::Layer::L3).mtu(mtu).up();
    let device = tun::create(&config).map_err(|source| TunError {
        name: name.to_string(),
        source,
    })?;
    device.set_nonblock().map_err(|e| TunError {
        name: name.to_string(),
        source: tun::Error::Io(e),
    })?;
    Ok(device)
}

impl TunDatapath {
    /// Creates one TUN device per attachment (`(attachment, device name)`) and, if named, an
    /// uplink device, all in the calling thread's network namespace.
    pub fn create(
        attachments: &[(u32, String)],
        uplink: Option<&str>,
        mtu: u16,
    ) -> Result<TunDatapath, TunError> {
        let mut ports = Vec::new();
        let mut by_attachment = Vec::new();
        for (attachment, name) in attachments {
            let index = *attachment as usize;
            if by_attachment.len() <= index {
                by_attachment.resize(index + 1, None);
            }
            by_attachment[index] = Some(ports.len());
            ports.push(TunPort {
                attachment: Some(*attachment),
                device: open(name, mtu)?,
            });
        }
        let uplink = match uplink {
            Some(name) => {
                ports.push(TunPort {
                    attachment: None,
                    device: open(name, mtu)?,
                });
                Some(ports.len() - 1)
            }
            None => None,
        };
        let sleep_on = PollSet::new(ports.iter().map(|p| p.device.as_raw_fd()));
        Ok(TunDatapath {
            sleep_on,
            ports,
            by_attachment,
            uplink,
            buffer: vec![0; 65536],
            batch: 64,
            drops: PortDrops::default(),
        })
    }

    fn route(&mut self, from: usize, len: usize, judge: &mut dyn Judge) {
        let packet = &mut self.buffer[..len];
        if let Some(source) = self.ports[from].attachment {
            if judge.judge(source, Side::Pod, Framing::Ip, packet) == Verdict::Drop {
                return;
            }
        }
        let Some(destination) = ip_destination(packet) else {
            self.drops.no_route += 1;
            return;
        };
        let target = match judge.attachment_of(destination) {
            Some(attachment) => {
                let Some(index) = self
                    .by_attachment
                    .get(attachment as usize)
                    .copied()
                    .flatten()
                else {
                    self.drops.no_route += 1;
                    return;
                };
                if judge.judge(attachment, Side::Node, Framing::Ip, packet) == Verdict::Drop {
                    return;
                }
                index
            }
            // Traffic that came in on the uplink for a non-local address has nowhere to go.
            None if self.ports[from].attachment.is_none() => {
                self.drops.no_route += 1;
                return;
            }
            None => match self.uplink {
                Some(index) => index,
                None => {
                    self.drops.no_route += 1;
                    return;
                }
            },
        };
        match self.ports[target].device.send(packet) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drops.tx_full += 1,
            Err(_) => self.drops.tx_error += 1,
        }
    }
}

/// The destination address of a raw IPv4 or IPv6 packet.
fn ip_destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

impl Datapath for TunDatapath {
    fn poll(&mut self, judge: &mut dyn Judge) -> io::Result<usize> {
        let mut handled = 0;
        for from in 0..self.ports.len() {
            for _ in 0..self.batch {
                match self.ports[from].device.recv(&mut self.buffer) {
                    Ok(len) => {
                        handled += 1;
                        self.route(from, len, judge);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(handled)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.sleep_on.wait(timeout)
    }

    fn port_drops(&self) -> PortDrops {
        self.drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_addresses_are_read_from_both_families() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(ip_destination(&v4), Some("10.0.0.7".parse().unwrap()));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[24] = 0xfd;
        v6[39] = 1;
        assert_eq!(ip_destination(&v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(ip_destination(&v4[..10]), None);
        assert_eq!(ip_destination(&[0x15]), None);
    }
}
