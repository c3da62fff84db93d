//! Slot → the rule it came from and what that rule does, in a quarter of a byte per slot.
//!
//! Every `decide` that matches a slot reads its action (to know whether it decides) and its
//! rule (for the answer). As `(RuleRef, Action)` pairs that was 16 bytes per slot: 1.6 MB at
//! 100k rules, a load after the table lookup's that missed the caches for most decisions.
//! Here an action takes two bits (25 KB at 100k rules), and rule numbers are kept as *runs*:
//! stretches of one policy's slots whose rule numbers count up by one (a policy's rules each
//! give one slot, unless a rule has several peers or is skipped for the endpoint). A table of
//! few runs (every ClassBench list is one) computes the rule from its run; any other keeps
//! each slot's policy and rule.

use crate::decision::RuleRef;
use crate::netpol::{Action, Direction};

/// Past this many runs, each slot keeps its own policy and rule.
const MAX_RUNS: usize = 16;

/// The actions by their two-bit code.
const ACTIONS: [Action; 4] = [Action::Allow, Action::Deny, Action::Log, Action::Pass];

fn code_of(action: Action) -> u8 {
    match action {
        Action::Allow => 0,
        Action::Deny => 1,
        Action::Log => 2,
        Action::Pass => 3,
    }
}

/// The rule and action of each slot of a table, all of one direction.
#[derive(Debug)]
pub(crate) struct SlotRules {
    direction: Direction,
    /// Each slot's [`ACTIONS`] index in two bits, four slots per byte.
    actions: Box<[u8]>,
    rules: RuleNumbers,
    len: usize,
}

/// Slots from `first_slot` up to the next run's, of `policy`: slot `first_slot + i` comes from
/// rule `first_rule + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first_slot: u32,
    policy: u32,
    first_rule: u32,
}

#[derive(Debug)]
enum RuleNumbers {
    /// At most [`MAX_RUNS`], the first from slot 0.
    Runs(Box<[Run]>),
    /// Each slot's policy and rule.
    Each(Box<[(u32, u32)]>),
}

impl SlotRules {
    /// The slots' rules and actions, in slot order; every rule of one direction.
    pub(crate) fn new(slots: &[(RuleRef, Action)]) -> SlotRules {
        let direction = slots
            .first()
            .map_or(Direction::Ingress, |(r, _)| r.direction);
        assert!(
            slots.iter().all(|(rule, _)| rule.direction == direction),
            "a table's slots are of one direction"
        );
        let mut runs: Vec<Run> = Vec::new();
        for (slot, (rule, _)) in slots.iter().enumerate() {
            let continues = runs.last().is_some_and(|run| {
                run.policy == rule.policy
                    && u64::from(run.first_rule) + (slot as u64 - u64::from(run.first_slot))
                        == u64::from(rule.rule)
            });
            if !continues {
                runs.push(Run {
                    first_slot: slot as u32,
                    policy: rule.policy,
                    first_rule: rule.rule,
                });
            }
        }
        let rules = if runs.len() <= MAX_RUNS {
            RuleNumbers::Runs(runs.into())
        } else {
            RuleNumbers::Each(slots.iter().map(|(r, _)| (r.policy, r.rule)).collect())
        };
        SlotRules {
            direction,
            actions: slots
                .chunks(4)
                .map(|four| {
                    four.iter()
                        .enumerate()
                        .fold(0u8, |byte, (i, &(_, a))| byte | code_of(a) << (2 * i))
                })
                .collect(),
            len: slots.len(),
            rules,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn action(&self, slot: u32) -> Action {
        ACTIONS[usize::from(self.actions[slot as usize / 4] >> (2 * (slot % 4)) & 3)]
    }

    #[inline]
    pub(crate) fn rule(&self, slot: u32) -> RuleRef {
        let (policy, rule) = match &self.rules {
            RuleNumbers::Runs(runs) => {
                // Run 0 starts at slot 0, so at least one run starts at or below any slot.
                let run = runs[runs.partition_point(|r| r.first_slot <= slot) - 1];
                (run.policy, run.first_rule + (slot - run.first_slot))
            }
            RuleNumbers::Each(each) => each[slot as usize],
        };
        RuleRef {
            policy,
            direction: self.direction,
            rule,
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.actions.len()
            + match &self.rules {
                RuleNumbers::Runs(runs) => std::mem::size_of_val(&**runs),
                RuleNumbers::Each(each) => std::mem::size_of_val(&**each),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Slots of policies in order, each policy's rules in order: `steps` says, per slot,
    /// whether it starts a new policy and how far its rule is from the slot before's.
    fn slots_of(steps: &[(bool, u32, usize)]) -> Vec<(RuleRef, Action)> {
        let (mut policy, mut rule) = (0u32, 0u32);
        let mut slots = Vec::new();
        for (i, &(new_policy, rule_step, action)) in steps.iter().enumerate() {
            if i > 0 && new_policy {
                policy += 1;
                rule = rule_step;
            } else if i > 0 {
                rule += rule_step;
            }
            let rule = RuleRef {
                policy,
                direction: Direction::Egress,
                rule,
            };
            slots.push((rule, ACTIONS[action]));
        }
        slots
    }

    fn runs_of(rules: &SlotRules) -> Option<usize> {
        match &rules.rules {
            RuleNumbers::Runs(runs) => Some(runs.len()),
            RuleNumbers::Each(_) => None,
        }
    }

    proptest! {
        #[test]
        fn every_slot_answers_its_own_rule_and_action(
            steps in prop::collection::vec(
                (prop::bool::weighted(0.05), 0u32..3, 0usize..4),
                1..400,
            ),
        ) {
            let slots = slots_of(&steps);
            let rules = SlotRules::new(&slots);
            prop_assert_eq!(rules.len(), slots.len());
            for (slot, &(rule, action)) in slots.iter().enumerate() {
                prop_assert_eq!(rules.rule(slot as u32), rule);
                prop_assert_eq!(rules.action(slot as u32), action);
            }
        }
    }

    #[test]
    fn rules_counting_up_in_few_policies_are_runs_and_others_each_their_own() {
        // Three policies of consecutive rules: three runs.
        let steps: Vec<_> = (0..3000)
            .map(|i| (i % 1000 == 0, if i % 1000 == 0 { 7 } else { 1 }, i % 4))
            .collect();
        let rules = SlotRules::new(&slots_of(&steps));
        assert_eq!(runs_of(&rules), Some(3));
        assert_eq!(rules.rule(2999).rule, 7 + 999);
        assert_eq!(rules.rule(2999).policy, 2);
        assert_eq!(rules.heap_bytes(), 3000 / 4 + 3 * 12);

        // Every rule twice (two peers each): a run per slot, too many.
        let steps: Vec<_> = (0..100).map(|i| (false, (i % 2) as u32, 0)).collect();
        let rules = SlotRules::new(&slots_of(&steps));
        assert_eq!(runs_of(&rules), None);
        assert_eq!(rules.rule(99).rule, 50);
    }
}
