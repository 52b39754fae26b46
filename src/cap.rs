//! The brakes on a runaway rule: caps on the keys a run acts on (deletes or
//! expires; in a dry run, would), per rule (`max_keys` in the rules file) and
//! over all rules (`--max-keys`), shared by every node of the run.
//!
//! Before each call a node takes a grant from what is left of each cap, no
//! more than the call could act on; the script acts within the grant and
//! leaves every key beyond it as it is, counted as capped. After the call
//! the unused rest goes back. A call that had to leave a key for a cap
//! reaches it: the run stops after the calls in flight, with a message
//! naming the rule and the cap, and exits 1. Each call saved its
//! checkpoint, so the next run continues from there.

use std::sync::Mutex;

use crate::rules::Rules;

/// What is left of a run's caps, shared by its nodes.
#[derive(Debug)]
pub struct Caps {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `--max-keys`, or `None`.
    run_max: Option<u64>,
    /// Left of `--max-keys`.
    run: Option<u64>,
    /// Left of each rule's `max_keys`, in rule order.
    rules: Vec<Option<u64>>,
    /// The message of the first cap reached.
    reached: Option<String>,
}

/// The most keys one call may act on: in all, and per rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Over all rules, or `None` for no cap.
    pub run: Option<u64>,
    /// Per rule, in rule order.
    pub rules: Vec<Option<u64>>,
}

impl Caps {
    /// The caps of `rules` and of the run (`max_keys`), untouched.
    pub fn new(rules: &Rules, max_keys: Option<u64>) -> Caps {
        Caps {
            state: Mutex::new(State {
                run_max: max_keys,
                run: max_keys,
                rules: rules.rules.iter().map(|rule| rule.max_keys).collect(),
                reached: None,
            }),
        }
    }

    /// Takes, for one call that may act on at most `most` keys, up to that
    /// much of what is left of each cap.
    pub fn grant(&self, most: u64) -> Grant {
        let mut state = self.lock();
        let take = |left: &mut Option<u64>| {
            left.as_mut().map(|left| {
                let taken = most.min(*left);
                *left -= taken;
                taken
            })
        };
        Grant {
            run: take(&mut state.run),
            rules: state.rules.iter_mut().map(take).collect(),
        }
    }

    /// Settles `grant` after its call acted on `acted` keys per rule and
    /// left `capped` keys per rule for a cap: gives back what the call did
    /// not use, and records the cap it reached, if any. `rules` names them.
    pub fn settle(&self, grant: &Grant, acted: &[u64], capped: &[u64], rules: &Rules) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let total: u64 = acted.iter().sum();
        if let (Some(left), Some(granted)) = (state.run.as_mut(), grant.run) {
            *left += granted.saturating_sub(total);
        }
        for (r, granted) in grant.rules.iter().enumerate() {
            if let (Some(left), Some(granted)) = (state.rules[r].as_mut(), granted) {
                *left += granted.saturating_sub(acted[r]);
            }
        }
        let Some(r) = capped.iter().position(|&n| n > 0) else {
            return;
        };
        if state.reached.is_some() {
            return;
        }
        let rule = &rules.rules[r];
        let message = match rule.max_keys {
            Some(max) if state.rules[r] == Some(0) => format!(
                "rule {:?} reached its cap, max_keys = {max}: it selects far more keys than \
                 allowed, and the run stopped; the keys beyond were left as they were. Check \
                 the rule (a dry run lists sample keys), then raise the cap or run again",
                rule.name
            ),
            _ => format!(
                "the run reached its cap, --max-keys {}, at rule {:?}: the run stopped, and \
                 the keys beyond were left as they were. Check the rules (a dry run lists \
                 sample keys), then raise the cap or run again",
                state.run_max.unwrap_or_default(),
                rule.name
            ),
        };
        state.reached = Some(message);
    }

    /// The message of the first cap reached, once one is.
    pub fn reached(&self) -> Option<String> {
        self.lock().reached.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A node that panicked holding the lock left counts that are still
        // whole: every update is one statement.
        self.state.lock().unwrap_or_else(|err| err.into_inner())
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

    #[test]
    fn grants_come_out_of_the_caps_and_the_unused_rest_goes_back() {
        let rules = rules();
        let caps = Caps::new(&rules, Some(25));
        let first = caps.grant(8);
        assert_eq!(
            first,
            Grant {
                run: Some(8),
                rules: vec![Some(8), None]
            }
        );
        // While the first call is in flight, a second node gets the rest.
        let second = caps.grant(8);
        assert_eq!(
            second,
            Grant {
                run: Some(8),
                rules: vec![Some(2), None]
            }
        );
        caps.settle(&first, &[3, 4], &[0, 0], &rules);
        caps.settle(&second, &[2, 0], &[0, 0], &rules);
        assert_eq!(caps.reached(), None);
        // Left: run 25 - 9 = 16, rule a 10 - 5 = 5.
        assert_eq!(
            caps.grant(100),
            Grant {
                run: Some(16),
                rules: vec![Some(5), None]
            }
        );
    }

    #[test]
    fn a_key_left_for_a_cap_names_the_rule_and_the_cap() {
        let rules = rules();
        let caps = Caps::new(&rules, None);
        let grant = caps.grant(100);
        caps.settle(&grant, &[10, 50], &[4, 0], &rules);
        let message = caps.reached().unwrap();
        assert!(
            message.starts_with("rule \"a\" reached its cap, max_keys = 10"),
            "{message}"
        );

        let caps = Caps::new(&rules, Some(30));
        let grant = caps.grant(100);
        caps.settle(&grant, &[10, 20], &[0, 7], &rules);
        let message = caps.reached().unwrap();
        assert!(
            message.starts_with("the run reached its cap, --max-keys 30, at rule \"b\""),
            "{message}"
        );
        // The first cap reached is the one reported.
        caps.settle(&grant, &[0, 0], &[1, 0], &rules);
        assert_eq!(caps.reached().unwrap(), message);
    }

    #[test]
    fn without_caps_nothing_is_ever_reached() {
        let rules = rules();
        let caps = Caps::new(&rules, None);
        let grant = caps.grant(1000);
        assert_eq!(
            grant,
            Grant {
                run: None,
                rules: vec![Some(10), None]
            }
        );
        caps.settle(&grant, &[0, 1000], &[0, 0], &rules);
        assert_eq!(caps.reached(), None);
    }
}
