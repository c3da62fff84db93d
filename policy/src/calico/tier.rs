//! Calico tiers: ordered groups of policies. Within a tier the first Allow or Deny decides and
//! Pass moves on to the next tier; a tier that has policies for an endpoint but decides nothing
//! applies its default action.

use crate::error::Location;
use crate::netpol::DEFAULT_TIER;

/// The order Calico gives the `default` tier.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// What a tier does with traffic that its policies select but none of its rules decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TierDefault {
    Deny,
    Pass,
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    /// Lower first; `None` after every ordered tier.
    pub order: Option<f64>,
    pub default_action: TierDefault,
    /// `None` for the implicit `default` tier.
    pub origin: Option<Location>,
}

impl Tier {
    /// The tier every Kubernetes NetworkPolicy and every tierless Calico policy is in, when no
    /// Tier object named `default` was loaded.
    pub fn implicit_default() -> Tier {
        Tier {
            name: DEFAULT_TIER.to_string(),
            order: Some(DEFAULT_TIER_ORDER),
            default_action: TierDefault::Deny,
            origin: None,
        }
    }
}

/// Sorts by Calico's evaluation order: `order` ascending with missing orders last, then name.
/// Used for tiers and for the policies of a tier.
pub fn by_order<T>(items: &mut [T], key: impl Fn(&T) -> (Option<f64>, String)) {
    items.sort_by(|a, b| {
        let (order_a, name_a) = key(a);
        let (order_b, name_b) = key(b);
        let order_a = order_a.unwrap_or(f64::INFINITY);
        let order_b = order_b.unwrap_or(f64::INFINITY);
        order_a
            .total_cmp(&order_b)
            .then_with(|| name_a.cmp(&name_b))
    });
}
