//! The brakes on a runaway rule: caps on the keys a run acts on (deletes or
//! expires; in a dry run, would), per rule (`max_keys` in the rules file) and
//! over all rules (`--max-keys`), shared by every node of the run.
//!
//! When a cap is set, the nodes' calls take turns: each call is granted
//! everything left of the caps, and settles what it acted on before the next
//! call (of any node) is granted. A call that had to leave a key for a cap
//! has therefore reached it, exactly: the run stops after the calls in
//! flight, with a message naming the rule and the cap, and exits 1. The
//! script ends such a call after the capped `SCAN` step and saves, as the
//! checkpoint, the cursor that step started from: the next run (once an
//! operator has looked) starts there, and skips none of the keys left. At
//! the default pace the turns cost little: each node's calls are far apart.
//! Without caps there are no turns.
//!
//! A call whose reply was lost (a dropped connection) may still have acted:
//! it saved the checkpoint with its work. The node's next attempt reads the
//! checkpoint as it takes the lease, before its first call, and charges what
//! the lost calls acted on to the caps ([`Caps::charge_lost`]): to the run's
//! cap, and to every rule's, since the checkpoint says how many keys, not
//! whose. Until then other nodes' calls are granted what is left without
//! them, and a node whose work is not retried (it failed, stopped, or its
//! shard failed over) never charges them: the caps may be exceeded by what
//! those calls did. So may they by each lost call of the declared-keys mode,
//! which saves its checkpoint after a call's reply. A retry that finds
//! another run's work in the checkpoint (it resumed the pass during the
//! backoff) charges that too: the brakes err on stopping early.

use std::sync::OnceLock;

use tokio::sync::{Mutex, MutexGuard};

use crate::rules::Rules;

/// What is left of a run's caps, shared by its nodes.
#[derive(Debug)]
pub struct Caps {
    /// Whether any cap is set: else calls take no turns.
    limited: bool,
    /// `--max-keys`.
    run_max: Option<u64>,
    /// The number of rules.
    rules: usize,
    /// What is left; held by the node whose call has the turn.
    left: Mutex<Left>,
    /// The message of the first cap reached.
    reached: OnceLock<String>,
}

/// What is left of each cap.
#[derive(Debug)]
struct Left {
    /// Of `--max-keys`.
    run: Option<u64>,
    /// Of each rule's `max_keys`, in rule order.
    rules: Vec<Option<u64>>,
    /// The keys calls whose replies were lost acted on, charged to every
    /// cap.
    lost: u64,
}

/// The most keys one call may act on: in all, and per rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Over all rules, or `None` for no cap.
    pub run: Option<u64>,
    /// Per rule, in rule order.
    pub rules: Vec<Option<u64>>,
}

/// One call's turn: its grant, held until the call settles it.
#[derive(Debug)]
pub struct Turn<'a> {
    /// What the call may act on.
    pub grant: Grant,
    /// The turn itself, when a cap is set.
    left: Option<MutexGuard<'a, Left>>,
    caps: &'a Caps,
}

impl Caps {
    /// The caps of `rules` and of the run (`max_keys`), untouched.
    pub fn new(rules: &Rules, max_keys: Option<u64>) -> Caps {
        let rule_caps: Vec<Option<u64>> = rules.rules.iter().map(|rule| rule.max_keys).collect();
        Caps {
            limited: max_keys.is_some() || rule_caps.iter().any(Option::is_some),
            run_max: max_keys,
            rules: rule_caps.len(),
            left: Mutex::new(Left {
                run: max_keys,
                rules: rule_caps,
                lost: 0,
            }),
            reached: OnceLock::new(),
        }
    }

    /// The next call's turn: once the call before it (of any node) settled,
    /// everything left of the caps.
    pub async fn turn(&self) -> Turn<'_> {
        if !self.limited {
            return Turn {
                grant: Grant {
                    run: None,
                    rules: vec![None; self.rules],
                },
                left: None,
                caps: self,
            };
        }
        let left = self.left.lock().await;
        Turn {
            grant: Grant {
                run: left.run,
                rules: left.rules.clone(),
            },
            left: Some(left),
            caps: self,
        }
    }

    /// Charges `keys` that calls whose replies were lost acted on, as their
    /// checkpoint tells: to the run's cap, and to each rule's, which may
    /// have been any of them.
    pub async fn charge_lost(&self, keys: u64) {
        let mut left = self.left.lock().await;
        let left = &mut *left;
        for cap in left.rules.iter_mut().chain([&mut left.run]).flatten() {
            *cap = cap.saturating_sub(keys);
        }
        left.lost += keys;
    }

    /// The message of the first cap reached, once one is.
    pub fn reached(&self) -> Option<String> {
        self.reached.get().cloned()
    }
}

impl Turn<'_> {
    /// Ends the turn of a call that acted on `acted` keys per rule and left
    /// `capped` keys per rule for a cap: takes what it acted on from the
    /// caps, and records the cap it reached, if any. `rules` names them.
    pub fn settle(self, acted: &[u64], capped: &[u64], rules: &Rules) {
        let Some(mut left) = self.left else {
            return;
        };
        let left = &mut *left;
        spend(&mut left.run, &mut left.rules, acted);
        if let Some(r) = capped.iter().position(|&n| n > 0) {
            let message = reached(rules, r, left, self.caps.run_max);
            let _ = self.caps.reached.set(message);
        }
    }
}

/// Takes what a call acted on, `acted` keys per rule, from what is left of
/// the run's cap and of each rule's (`None`: no cap).
pub fn spend(run: &mut Option<u64>, rules: &mut [Option<u64>], acted: &[u64]) {
    if let Some(run) = run.as_mut() {
        *run = run.saturating_sub(acted.iter().sum());
    }
    for (rule, acted) in rules.iter_mut().zip(acted) {
        if let Some(rule) = rule.as_mut() {
            *rule = rule.saturating_sub(*acted);
        }
    }
}

/// The message for the cap that left a key of rule `r`: the rule's own when
/// it is spent, else the run's.
fn reached(rules: &Rules, r: usize, left: &Left, run_max: Option<u64>) -> String {
    let message = cap_message(rules, r, left, run_max);
    match left.lost {
        0 => message,
        lost => format!(
            "{message} (the caps count {lost} keys that calls whose replies were lost acted \
             on, as their checkpoint says, against every cap: it does not say whose)"
        ),
    }
}

/// The message for the cap that left a key of rule `r`, without the lost
/// calls' part.
fn cap_message(rules: &Rules, r: usize, left: &Left, run_max: Option<u64>) -> String {
    let rule = &rules.rules[r];
    match (rule.max_keys, left.rules[r], run_max) {
        (Some(max), Some(0), _) | (Some(max), _, None) => format!(
            "rule {:?} reached its cap, max_keys = {max}: it selects far more keys than \
             allowed, and the run stopped; the keys beyond were left as they were. Check \
             the rule (a dry run lists sample keys), then raise the cap or run again",
            rule.name
        ),
        (_, _, Some(max)) => format!(
            "the run reached its cap, --max-keys {max}, at rule {:?}: the run stopped, and \
             the keys beyond were left as they were. Check the rules (a dry run lists \
             sample keys), then raise the cap or run again",
            rule.name
        ),
        (None, _, None) => format!(
            "rule {:?} left keys for a cap that is not set: the script and the job disagree",
            rule.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::parse(
            "caps",
            "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\nmax_keys = 10\n\
             [[rule]]\nname = \"b\"\npattern = \"b:*\"\naction = \"delete\"\n",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn each_call_is_granted_what_is_left_after_the_calls_before() {
        let rules = rules();
        let caps = Caps::new(&rules, Some(25));
        let first = caps.turn().await;
        assert_eq!(
            first.grant,
            Grant {
                run: Some(25),
                rules: vec![Some(10), None]
            }
        );
        // The next call waits for the first one's turn to end.
        assert!(caps.left.try_lock().is_err());
        first.settle(&[3, 4], &[0, 0], &rules);
        let second = caps.turn().await;
        assert_eq!(
            second.grant,
            Grant {
                run: Some(18),
                rules: vec![Some(7), None]
            }
        );
        second.settle(&[2, 0], &[0, 0], &rules);
        assert_eq!(caps.reached(), None);
        let third = caps.turn().await;
        assert_eq!(
            third.grant,
            Grant {
                run: Some(16),
                rules: vec![Some(5), None]
            }
        );
    }

    #[tokio::test]
    async fn a_key_left_for_a_cap_names_the_cap_that_was_spent() {
        let rules = rules();
        let caps = Caps::new(&rules, None);
        caps.turn().await.settle(&[10, 50], &[4, 0], &rules);
        let message = caps.reached().unwrap();
        assert!(
            message.starts_with("rule \"a\" reached its cap, max_keys = 10"),
            "{message}"
        );

        let caps = Caps::new(&rules, Some(30));
        caps.turn().await.settle(&[10, 20], &[0, 7], &rules);
        let message = caps.reached().unwrap();
        assert!(
            message.starts_with("the run reached its cap, --max-keys 30, at rule \"b\""),
            "{message}"
        );
        // The first cap reached is the one reported.
        caps.turn().await.settle(&[0, 0], &[1, 0], &rules);
        assert_eq!(caps.reached().unwrap(), message);

        // Rule a's own cap is not spent, the run's is: the run's is named.
        let caps = Caps::new(&rules, Some(5));
        caps.turn().await.settle(&[5, 0], &[3, 0], &rules);
        let message = caps.reached().unwrap();
        assert!(
            message.starts_with("the run reached its cap, --max-keys 5, at rule \"a\""),
            "{message}"
        );
    }

    #[tokio::test]
    async fn keys_lost_calls_acted_on_are_charged_to_every_cap_and_named() {
        let rules = rules();
        let caps = Caps::new(&rules, Some(25));
        caps.charge_lost(4).await;
        let turn = caps.turn().await;
        assert_eq!(
            turn.grant,
            Grant {
                run: Some(21),
                rules: vec![Some(6), None]
            }
        );
        turn.settle(&[6, 0], &[1, 0], &rules);
        let message = caps.reached().unwrap();
        assert!(
            message.starts_with("rule \"a\" reached its cap"),
            "{message}"
        );
        assert!(
            message.contains("count 4 keys that calls whose replies were lost"),
            "{message}"
        );
        // Without caps there is nothing to charge.
        let free = Caps::new(&Rules::builtin(), None);
        free.charge_lost(4).await;
        assert_eq!(free.turn().await.grant.run, None);
    }

    #[tokio::test]
    async fn without_caps_calls_take_no_turns_and_nothing_is_reached() {
        let rules = Rules::builtin();
        let caps = Caps::new(&rules, None);
        let one = caps.turn().await;
        let two = caps.turn().await;
        assert_eq!(
            one.grant,
            Grant {
                run: None,
                rules: vec![None; 3]
            }
        );
        one.settle(&[1000, 0, 0], &[0, 0, 0], &rules);
        two.settle(&[1000, 0, 0], &[0, 0, 0], &rules);
        assert_eq!(caps.reached(), None);
    }
}
