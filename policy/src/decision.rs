//! What a lookup answers: for one endpoint and direction, allowed by which rule or denied; for a
//! connection, both ends together.

use std::net::IpAddr;

use crate::inventory::PodId;
use crate::netpol::Direction;

/// A rule of a policy: `policies[policy].{ingress,egress}[rule]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RuleRef {
    /// Index into [`crate::Cluster::policies`].
    pub policy: u32,
    pub direction: Direction,
    pub rule: u32,
}

/// The verdict for one endpoint in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No policy selects the endpoint for this direction: everything is allowed.
    NotIsolated,
    /// This rule (the first Allow, Deny or Pass in evaluation order) allows the traffic.
    Allowed(RuleRef),
    /// This Deny rule (a Calico rule) denies the traffic.
    DeniedBy(RuleRef),
    /// Tier `tier` (an index into [`crate::Cluster::tiers`]) has policies for the endpoint in
    /// this direction, none of their rules decided, and the tier's default action is Deny. For
    /// Kubernetes policies: isolated, and no rule allows the traffic.
    Denied { tier: u32 },
    /// Every tier with policies for the endpoint passed the traffic on, the last one by this
    /// Pass rule (`None`: by its default action Pass); the namespace's profile allows it, as in
    /// Calico.
    Passed(Option<RuleRef>),
}

impl Decision {
    pub fn allows(self) -> bool {
        !matches!(self, Decision::Denied { .. } | Decision::DeniedBy(_))
    }

    /// The rule that decided, if a rule did.
    pub fn rule(self) -> Option<RuleRef> {
        match self {
            Decision::Allowed(rule) | Decision::DeniedBy(rule) | Decision::Passed(Some(rule)) => {
                Some(rule)
            }
            _ => None,
        }
    }
}

/// One end of a connection: a pod the cluster knows, or any other address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Pod { pod: PodId, address: IpAddr },
    External(IpAddr),
}

impl Party {
    pub fn address(self) -> IpAddr {
        match self {
            Party::Pod { address, .. } | Party::External(address) => address,
        }
    }

    pub fn pod(self) -> Option<PodId> {
        match self {
            Party::Pod { pod, .. } => Some(pod),
            Party::External(_) => None,
        }
    }
}

/// Both ends of a connection: the source's egress and the destination's ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionDecision {
    /// `None` when the source is not a pod (only the pod side applies).
    pub egress: Option<Decision>,
    /// `None` when the destination is not a pod.
    pub ingress: Option<Decision>,
    /// A pod talking to itself is always allowed.
    pub same_pod: bool,
}

impl ConnectionDecision {
    pub fn allowed(&self) -> bool {
        self.same_pod
            || (self.egress.is_none_or(Decision::allows)
                && self.ingress.is_none_or(Decision::allows))
    }

    pub fn get(&self, direction: Direction) -> Option<Decision> {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}
