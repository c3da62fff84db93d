//! Turns decisions into explanations a person can act on: which policy and rule (file, document,
//! field; tier, order and action) decided a connection, or which policies isolate the pod when
//! no rule did.

use std::fmt;

use serde::Serialize;

use crate::classifier::Classifier;
use crate::decision::{ConnectionDecision, Decision, Party, RuleRef};
use crate::inventory::Inventory;
use crate::netpol::{Action, Direction};
use crate::probe::Connection;

/// A policy, by name and by where it was read.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyOrigin {
    pub kind: &'static str,
    pub policy: String,
    pub tier: String,
    /// `None`: no `order` (evaluated after every ordered policy of its tier).
    pub order: Option<f64>,
    pub file: String,
    pub document: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

impl fmt::Display for PolicyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (tier {}, order ",
            self.kind, self.policy, self.tier
        )?;
        match self.order {
            Some(order) => write!(f, "{order}")?,
            None => write!(f, "none")?,
        }
        write!(f, "; {}, document {}", self.file, self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        write!(f, ")")
    }
}

/// A rule of a policy.
#[derive(Debug, Clone, Serialize)]
pub struct RuleOrigin {
    #[serde(flatten)]
    pub policy: PolicyOrigin,
    /// `spec.ingress[1]`
    pub rule: String,
    pub action: Action,
}

/// Why one end decided as it did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    /// No policy selects the pod for this direction.
    NotIsolated,
    AllowedByRule {
        by: RuleOrigin,
    },
    DeniedByRule {
        by: RuleOrigin,
    },
    /// Isolated by these policies of tier `tier`, and none of their rules decided.
    NoRuleMatched {
        tier: String,
        isolated_by: Vec<PolicyOrigin>,
    },
    /// Every tier with policies for the pod passed the traffic on (the last by this rule, or by
    /// its default action); the namespace's profile allows it.
    Passed {
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<RuleOrigin>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct SideExplanation {
    pub direction: Direction,
    pub pod: String,
    pub allowed: bool,
    #[serde(flatten)]
    pub reason: Reason,
    /// The first Log rule the traffic met on the way, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logged_by: Option<RuleOrigin>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub from: String,
    pub to: String,
    pub from_address: String,
    pub to_address: String,
    pub protocol: String,
    /// The destination port; for ICMP the type and code as `type << 8 | code`.
    pub port: u16,
    /// The source port (0 for protocols without ports).
    pub source_port: u16,
    /// Whether some rule looks at the source port, so that the answer may depend on it.
    pub source_port_matters: bool,
    /// `TCP/80`, `ICMP type 8 code 0`.
    pub packet: String,
    pub allowed: bool,
    pub same_pod: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<SideExplanation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<SideExplanation>,
}

impl Explanation {
    /// The names of the policies that decided either side (for compact reports).
    pub fn deciding_policies(&self) -> Vec<String> {
        [&self.egress, &self.ingress]
            .into_iter()
            .flatten()
            .flat_map(|side| match &side.reason {
                Reason::NotIsolated | Reason::Passed { by: None } => vec![],
                Reason::AllowedByRule { by }
                | Reason::DeniedByRule { by }
                | Reason::Passed { by: Some(by) } => vec![by.policy.policy.clone()],
                Reason::NoRuleMatched { isolated_by, .. } => {
                    isolated_by.iter().map(|p| p.policy.clone()).collect()
                }
            })
            .collect()
    }
}

pub fn party_name(inventory: &Inventory, party: Party) -> String {
    match party {
        Party::Pod { pod, .. } => inventory.pod(pod).key(),
        Party::External(ip) => ip.to_string(),
    }
}

pub fn policy_origin(classifier: &Classifier, policy: u32) -> PolicyOrigin {
    let p = &classifier.cluster().policies[policy as usize];
    PolicyOrigin {
        kind: p.kind.name(),
        policy: p.key(),
        tier: p.tier.clone(),
        order: p.order,
        file: p.origin.file.clone(),
        document: p.origin.document,
        item: p.origin.item,
    }
}

pub fn rule_origin(classifier: &Classifier, rule: RuleRef) -> RuleOrigin {
    let policy = &classifier.cluster().policies[rule.policy as usize];
    RuleOrigin {
        policy: policy_origin(classifier, rule.policy),
        rule: format!("spec.{}[{}]", rule.direction.field(), rule.rule),
        action: policy.rules(rule.direction)[rule.rule as usize].action,
    }
}

fn side(
    classifier: &Classifier,
    connection: &Connection,
    direction: Direction,
    decision: Decision,
) -> SideExplanation {
    let cluster = classifier.cluster();
    let (party, peer) = match direction {
        Direction::Egress => (connection.from, connection.to),
        Direction::Ingress => (connection.to, connection.from),
    };
    let pod = party.pod().expect("sides are explained for pods only");
    let reason = match decision {
        Decision::NotIsolated => Reason::NotIsolated,
        Decision::Allowed(rule) => Reason::AllowedByRule {
            by: rule_origin(classifier, rule),
        },
        Decision::DeniedBy(rule) => Reason::DeniedByRule {
            by: rule_origin(classifier, rule),
        },
        Decision::Denied { tier } => {
            let tier = &cluster.tiers[tier as usize].name;
            Reason::NoRuleMatched {
                tier: tier.clone(),
                isolated_by: classifier
                    .selecting_policies(pod, direction)
                    .iter()
                    .filter(|&&p| &cluster.policies[p as usize].tier == tier)
                    .map(|&p| policy_origin(classifier, p))
                    .collect(),
            }
        }
        Decision::Passed(rule) => Reason::Passed {
            by: rule.map(|rule| rule_origin(classifier, rule)),
        },
    };
    let logged_by = classifier
        .logged(
            pod,
            direction,
            peer.address(),
            connection.protocol,
            connection.port,
            connection.source_port,
        )
        .map(|rule| rule_origin(classifier, rule));
    SideExplanation {
        direction,
        pod: party_name(&cluster.inventory, party),
        allowed: decision.allows(),
        reason,
        logged_by,
    }
}

pub fn explain(
    classifier: &Classifier,
    connection: &Connection,
    decision: &ConnectionDecision,
) -> Explanation {
    let inventory = &classifier.cluster().inventory;
    Explanation {
        from: party_name(inventory, connection.from),
        to: party_name(inventory, connection.to),
        from_address: connection.from.address().to_string(),
        to_address: connection.to.address().to_string(),
        protocol: connection.protocol.to_string(),
        packet: crate::probe::packet_label(connection.protocol, connection.port),
        port: connection.port,
        source_port: connection.source_port,
        source_port_matters: classifier.matches_source_ports(),
        allowed: decision.allowed(),
        same_pod: decision.same_pod,
        egress: decision
            .egress
            .map(|d| side(classifier, connection, Direction::Egress, d)),
        ingress: decision
            .ingress
            .map(|d| side(classifier, connection, Direction::Ingress, d)),
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "ALLOWED"
    } else {
        "DENIED"
    }
}

impl fmt::Display for SideExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {}: {}",
            self.direction,
            self.pod,
            verdict(self.allowed).to_lowercase()
        )?;
        match &self.reason {
            Reason::NotIsolated => write!(
                f,
                " — not isolated for {}: no policy selects it for {}",
                self.direction, self.direction
            ),
            Reason::AllowedByRule { by } | Reason::DeniedByRule { by } => {
                write!(f, " by {} rule {} ({})", by.policy, by.rule, by.action)
            }
            Reason::NoRuleMatched { tier, isolated_by } => {
                write!(f, " — isolated for {} by ", self.direction)?;
                for (i, p) in isolated_by.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{p}")?;
                }
                write!(
                    f,
                    "; none of their {} rules decides, and tier {tier} denies what it does not decide",
                    self.direction
                )
            }
            Reason::Passed { by } => {
                match by {
                    Some(by) => write!(f, " — passed by {} rule {} (Pass)", by.policy, by.rule)?,
                    None => write!(f, " — passed by its tier's default action")?,
                }
                write!(
                    f,
                    "; no later tier has a policy for it, so its namespace's profile allows it"
                )
            }
        }?;
        if let Some(log) = &self.logged_by {
            write!(f, "; logged by {} rule {} (Log)", log.policy, log.rule)?;
        }
        Ok(())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source_port = if self.source_port_matters && self.source_port != 0 {
            format!(" from port {}", self.source_port)
        } else {
            String::new()
        };
        writeln!(
            f,
            "{} ({}) -> {} ({}) {}{source_port}: {}",
            self.from,
            self.from_address,
            self.to,
            self.to_address,
            self.packet,
            verdict(self.allowed)
        )?;
        if self.same_pod {
            writeln!(f, "  a pod can always reach itself")?;
        }
        match &self.egress {
            Some(s) => writeln!(f, "  {s}")?,
            None => writeln!(
                f,
                "  egress: {} is not a pod in the manifests; only the destination's policies apply",
                self.from
            )?,
        }
        match &self.ingress {
            Some(s) => write!(f, "  {s}"),
            None => write!(
                f,
                "  ingress: {} is not a pod in the manifests; only the source's policies apply",
                self.to
            ),
        }
    }
}
