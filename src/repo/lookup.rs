//! A node's variable as the inventory and its role's defaults set it, without templates:
//! for the commands that need one setting of many nodes (ports, ssh settings, addresses);
//! and the capabilities each role gives.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value as J;

use crate::repo::Repo;
use crate::spec::inventory::NodeSpec;

/// A variable's value for a node by the inventory's precedence (node > groups > fleet > role
/// defaults), without rendering templates: routing needs ports for thousands of nodes fast.
pub struct VarLookup<'a> {
    repo: &'a Repo,
    role_defaults: HashMap<&'a str, Vec<&'a crate::spec::decode::VarMap>>,
    groups_of: HashMap<&'a str, Vec<&'a crate::spec::inventory::Group>>,
}

impl<'a> VarLookup<'a> {
    /// Indexes the repo once.
    pub fn new(repo: &'a Repo) -> Self {
        let mut role_defaults = HashMap::new();
        for name in repo.roles.keys() {
            let spanned =
                crate::spec::decode::Spanned::new(name.clone(), repo.roles[name].loc.clone());
            if let Ok(closure) =
                crate::play::role_order(&repo.roles, std::slice::from_ref(&spanned))
            {
                role_defaults.insert(
                    name.as_str(),
                    closure.iter().rev().map(|r| &r.defaults).collect(),
                );
            }
        }
        let mut groups_of: HashMap<&str, Vec<&crate::spec::inventory::Group>> = HashMap::new();
        for g in repo.inventory.groups.values().rev() {
            for m in &g.members {
                groups_of.entry(m.value.as_str()).or_default().push(g);
            }
        }
        VarLookup {
            repo,
            role_defaults,
            groups_of,
        }
    }

    /// The value, highest precedence first.
    pub fn get(&self, node: &NodeSpec, name: &str) -> Option<J> {
        if let Some(v) = node.vars.get(name) {
            return Some(value_of(v));
        }
        for g in self.groups_of.get(node.name.as_str()).into_iter().flatten() {
            if let Some(v) = g.vars.get(name) {
                return Some(value_of(v));
            }
        }
        if let Some(v) = self.repo.inventory.vars.get(name) {
            return Some(value_of(v));
        }
        for d in self
            .role_defaults
            .get(node.role.value.as_str())
            .into_iter()
            .flatten()
        {
            if let Some(v) = d.get(name) {
                return Some(value_of(v));
            }
        }
        None
    }

    /// A port variable, or the default.
    pub fn port(&self, node: &NodeSpec, name: &str, default: u16) -> u16 {
        match self.get(node, name) {
            Some(J::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(default),
            Some(J::String(s)) => s.parse().unwrap_or(default),
            _ => default,
        }
    }
}

/// A variable's value as written, the value itself for `{ secret: true, value: … }`.
fn value_of(n: &crate::spec::yaml::Node) -> J {
    match crate::inventory::vars::secret_var(n) {
        Some((v, _)) => v.to_json(),
        None => n.to_json(),
    }
}

/// Capabilities by role name (role closure), computed once.
pub fn role_capabilities(repo: &Repo) -> HashMap<String, BTreeSet<String>> {
    repo.roles
        .keys()
        .map(|name| {
            let spanned =
                crate::spec::decode::Spanned::new(name.clone(), repo.roles[name].loc.clone());
            let caps = crate::play::role_order(&repo.roles, std::slice::from_ref(&spanned))
                .map(|c| {
                    c.iter()
                        .flat_map(|r| r.capabilities.iter().cloned())
                        .collect()
                })
                .unwrap_or_default();
            (name.clone(), caps)
        })
        .collect()
}
