//! Decisions taken ahead: a batch's new connections decided together, before the batch is
//! judged, so that the classifier can overlap their memory accesses
//! ([`policy::Classifier::decide_each`]). Policies of tens of thousands of rules outgrow the
//! caches, and a flood of new connections against them then waits on memory once per
//! connection, one after another, unless they are asked as a group.
//!
//! While the port prefetches a batch, the filter reads each plain TCP, UDP or SCTP frame's
//! addresses and ports, asks the flow table which of them will need a decision, and stores the
//! answers here. Judging then takes a stored answer where one was taken for the same
//! [`Asked`], and decides directly otherwise (a frame the flow table answered differently by
//! the time it was judged, say the second packet of a connection the same batch opened, or
//! one the rough read ahead got wrong). A decision depends only on what `Asked` holds, the
//! pods and the classifier, none of which change within a batch, so both ways give the same
//! answer.

use std::net::IpAddr;

use policy::{Classifier, Decision, Direction, Protocol, Query};

use crate::frame::Packet;
use crate::port::Side;

/// What a decision depends on: the attachment, the direction, and what the classifier reads
/// of the packet as its connection's initiator sent it. Two packets alike in these get the
/// same decision, whatever else differs (TCP flags, offsets, a frame read only roughly ahead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    attachment: u32,
    direction: Direction,
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
    port: u16,
    source_port: u16,
}

impl Asked {
    pub fn of(attachment: u32, direction: Direction, packet: &Packet) -> Asked {
        Asked {
            attachment,
            direction,
            src: packet.src,
            dst: packet.dst,
            protocol: packet.protocol,
            port: packet.classifier_port(),
            source_port: packet.classifier_source_port(),
        }
    }
}

/// Connections decided per batch, below which asking ahead is not worth it: one lookup has
/// nothing to overlap with.
const WORTH_IT: usize = 2;

#[derive(Debug, Default)]
pub(crate) struct Ahead {
    /// The frames of the batch being prefetched, read roughly.
    seen: Vec<(u32, Direction, Packet)>,
    asked: Vec<Asked>,
    queries: Vec<Query>,
    answers: Vec<Decision>,
    /// Where the next stored answer is likely to be: frames are judged in the order they were
    /// prefetched.
    next: usize,
    /// Whether the frames of the batch being prefetched are read for decisions ahead.
    collecting: bool,
    /// Whether a batch's prefetch has begun and its decisions ahead are not yet taken.
    batch_open: bool,
    /// Connections decided since the last batch of each source began, by
    /// [`Ahead::source`]: a port's batches alternate between its two sides and its links, and
    /// a flood of new connections on one side is answered by hits on the other.
    decided: Vec<u32>,
    /// Answers taken ahead and used (for tests and diagnostics).
    used: u64,
}

impl Ahead {
    /// Where a batch comes from: its attachment and side, as an index.
    pub fn source(attachment: u32, side: Side) -> usize {
        attachment as usize * 2
            + match side {
                Side::Pod => 0,
                Side::Node => 1,
            }
    }

    /// Whether to read the frame being prefetched, deciding at the first frame of a batch
    /// whether this batch collects: only when `enabled` and the last batch from the same
    /// `source` decided enough connections.
    pub fn collects(&mut self, enabled: bool, source: usize) -> bool {
        if !self.batch_open {
            self.batch_open = true;
            let decided = self.decided.get_mut(source).map_or(0, std::mem::take);
            self.collecting = enabled && decided as usize >= WORTH_IT;
            self.seen.clear();
        }
        self.collecting
    }

    pub fn see(&mut self, attachment: u32, direction: Direction, packet: Packet) {
        self.seen.push((attachment, direction, packet));
    }

    /// Ends the batch's prefetch: hands over the frames seen (to be given back to
    /// [`Ahead::decide`]) and forgets the last batch's answers.
    pub fn take_seen(&mut self) -> Vec<(u32, Direction, Packet)> {
        let seen = std::mem::take(&mut self.seen);
        self.clear();
        seen
    }

    /// Records that `asked` will need the classifier's answer to `query`. A burst of one
    /// connection's packets is asked once.
    pub fn ask(&mut self, asked: Asked, query: Query) {
        if self.asked.last() != Some(&asked) {
            self.asked.push(asked);
            self.queries.push(query);
        }
    }

    /// Answers every query asked, together; `seen` is the buffer [`Ahead::take_seen`] gave.
    pub fn decide(&mut self, classifier: &Classifier, mut seen: Vec<(u32, Direction, Packet)>) {
        seen.clear();
        self.seen = seen;
        if self.queries.len() < WORTH_IT {
            // Decided as judged: one lookup alone gains nothing from a group.
            self.asked.clear();
            self.queries.clear();
            return;
        }
        self.answers
            .resize(self.queries.len(), Decision::NotIsolated);
        classifier.decide_each(&self.queries, &mut self.answers);
    }

    /// The answer taken ahead for `asked`, and the query it answered, if any.
    pub fn answer(&mut self, asked: &Asked) -> Option<(Decision, &Query)> {
        let at = (self.next..self.asked.len())
            .chain(0..self.next.min(self.asked.len()))
            .find(|&i| self.asked[i] == *asked)?;
        self.next = at + 1;
        self.used += 1;
        Some((self.answers[at], &self.queries[at]))
    }

    /// Counts a connection decided, ahead or not, for a frame from `source`: what the next
    /// batch's [`Ahead::collects`] from there goes by.
    pub fn count_decided(&mut self, source: usize) {
        if self.decided.len() <= source {
            self.decided.resize(source + 1, 0);
        }
        self.decided[source] = self.decided[source].saturating_add(1);
    }

    /// Forgets the batch being prefetched and every answer taken (the counts of decisions
    /// stay): at the end of a batch's prefetch, and when the classifier or the pods change.
    pub fn clear(&mut self) {
        self.seen.clear();
        self.asked.clear();
        self.queries.clear();
        self.answers.clear();
        self.next = 0;
        self.batch_open = false;
    }

    pub fn used(&self) -> u64 {
        self.used
    }
}
