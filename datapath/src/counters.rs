//! Per-worker counters: written by the one worker thread that owns them, read (and summed) by
//! anyone — `podwall run` on SIGUSR1 and on exit, `lab` at the end. Relaxed atomics: counters are
//! statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::frame::DropReason;

/// What happened to frames of one attachment (one pod).
#[derive(Debug, Default)]
pub struct AttachmentCounters {
    /// New connections allowed and denied by policy, per direction (ingress, egress).
    pub allowed: [AtomicU64; 2],
    pub denied: [AtomicU64; 2],
    /// Frames forwarded and dropped.
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    /// Frames dropped before policy, by parse reason.
    pub malformed: [AtomicU64; DropReason::ALL.len()],
    /// ICMP errors about no known connection.
    pub icmp_unrelated: AtomicU64,
    /// New connections that met a Calico Log rule (each also logged as a line).
    pub logged: AtomicU64,
}

/// A plain snapshot of [`AttachmentCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub allowed_ingress: u64,
    pub allowed_egress: u64,
    pub denied_ingress: u64,
    pub denied_egress: u64,
    pub forwarded: u64,
    pub dropped: u64,
    pub icmp_unrelated: u64,
    pub logged: u64,
    /// Non-zero parse-drop counts by reason.
    pub malformed: Vec<(&'static str, u64)>,
}

impl Snapshot {
    /// What happened between `before` and this snapshot (of the same counters).
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        let earlier = |reason: &str| {
            before
                .malformed
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n)
        };
        Snapshot {
            allowed_ingress: self.allowed_ingress - before.allowed_ingress,
            allowed_egress: self.allowed_egress - before.allowed_egress,
            denied_ingress: self.denied_ingress - before.denied_ingress,
            denied_egress: self.denied_egress - before.denied_egress,
            forwarded: self.forwarded - before.forwarded,
            dropped: self.dropped - before.dropped,
            icmp_unrelated: self.icmp_unrelated - before.icmp_unrelated,
            logged: self.logged - before.logged,
            malformed: self
                .malformed
                .iter()
                .map(|&(reason, n)| (reason, n - earlier(reason)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    // Single writer: a load and a store avoid the locked read-modify-write of fetch_add.
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}

impl AttachmentCounters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            allowed_ingress: self.allowed[0].load(Relaxed),
            allowed_egress: self.allowed[1].load(Relaxed),
            denied_ingress: self.denied[0].load(Relaxed),
            denied_egress: self.denied[1].load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            icmp_unrelated: self.icmp_unrelated.load(Relaxed),
            logged: self.logged.load(Relaxed),
            malformed: DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.malformed[r.index()].load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}
