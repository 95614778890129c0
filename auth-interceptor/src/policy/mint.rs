//! What the issuer asks of a target's policy before it mints: a token
//! whose scopes no rule uses, or that no rule would accept, is over-broad
//! or useless, so it is not minted. Verifiers never need this.

use std::collections::BTreeSet;

use super::{Effect, MethodPolicy, Rule};
use crate::token::Claims;

/// Why a token would be over-broad or useless for a service, so it is not minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintRefusal {
    /// No rule that applies to this caller asks for these scopes.
    UnusedScopes(Vec<String>),
    /// No enforced rule would let this token call any method.
    NoRule,
}

impl MethodPolicy {
    /// The scopes that some allow rule applying to this caller (by `sub` and
    /// claim conditions; dry-run rules included, so a rule being rolled out
    /// can be tried) requires: the only scopes worth putting in its token.
    pub fn scopes_used_for(&self, claims: &Claims) -> BTreeSet<&str> {
        self.rules
            .iter()
            .filter(|rule| rule.effect == Effect::Allow && rule.applies_to(claims))
            .flat_map(|rule| rule.scopes.iter().map(String::as_str))
            .collect()
    }

    /// Whether a token with `claims` is worth minting for this service:
    /// every scope in it is asked for by a rule that applies to the caller,
    /// and some enforced allow rule accepts it for at least one method that no
    /// enforced deny rule takes away from it. Returns that rule's name.
    ///
    /// # Errors
    /// [`MintRefusal`] saying what makes the token over-broad or useless.
    pub fn admits(&self, claims: &Claims) -> Result<String, MintRefusal> {
        let used = self.scopes_used_for(claims);
        let unused: Vec<String> = claims
            .scopes()
            .filter(|scope| !used.contains(scope))
            .map(str::to_owned)
            .collect();
        if !unused.is_empty() {
            return Err(MintRefusal::UnusedScopes(unused));
        }
        let enforced = |rule: &&Rule, effect| {
            rule.effect == effect
                && !rule.dry_run
                && rule.applies_to(claims)
                && rule.missing_scopes(claims).is_empty()
        };
        let denies: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| enforced(r, Effect::Deny))
            .collect();
        self.rules
            .iter()
            .filter(|r| enforced(r, Effect::Allow))
            .find(|allow| {
                allow.methods.iter().any(|method| {
                    !denies
                        .iter()
                        .any(|deny| deny.methods.iter().any(|d| d.includes(method)))
                })
            })
            .map(|rule| rule.name.to_string())
            .ok_or(MintRefusal::NoRule)
    }
}
