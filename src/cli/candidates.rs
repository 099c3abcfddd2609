//! Values the shell completes from the fleet repo itself (nodes, groups, roles, playbooks,
//! task types), asked for at completion time (`COMPLETE=bash fleet -- …`, registered by
//! `fleet completions SHELL`). A repo that cannot be read completes nothing: completion must
//! never print an error into the user's command line.

use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

use crate::repo::Repo;

/// The repo the command line would use: `-i` is not parsed yet at completion time, so
/// `FLEET_REPO`, else the nearest parent holding `inventory/`.
fn repo() -> Option<Repo> {
    let explicit = std::env::var_os("FLEET_REPO").map(std::path::PathBuf::from);
    let root = crate::repo::find_root(explicit.as_deref()).ok()?;
    Some(Repo::load(&root))
}

fn candidates(
    values: impl IntoIterator<Item = (String, Option<String>)>,
) -> Vec<CompletionCandidate> {
    values
        .into_iter()
        .map(|(v, help)| CompletionCandidate::new(v).help(help.map(Into::into)))
        .collect()
}

/// Node names.
pub fn nodes() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        repo().map_or_else(Vec::new, |r| {
            candidates(r.inventory.nodes.values().map(|n| {
                (
                    n.name.clone(),
                    Some(format!("{} ({})", n.role.value, n.host)),
                )
            }))
        })
    })
}

/// Host patterns: nodes, groups and roles.
pub fn patterns() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        repo().map_or_else(Vec::new, |r| {
            let nodes = r
                .inventory
                .nodes
                .values()
                .map(|n| (n.name.clone(), Some(format!("node, {}", n.role.value))));
            let groups = r.inventory.groups.values().map(|g| {
                (
                    g.name.clone(),
                    Some(format!("group of {}", g.members.len())),
                )
            });
            let roles = r
                .roles
                .keys()
                .map(|k| (k.clone(), Some("role".to_string())));
            candidates(nodes.chain(groups).chain(roles))
        })
    })
}

/// Role names.
pub fn roles() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        repo().map_or_else(Vec::new, |r| {
            candidates(r.roles.values().map(|x| {
                (
                    x.name.clone(),
                    Some(x.description.clone()).filter(|d| !d.is_empty()),
                )
            }))
        })
    })
}

/// Playbooks of the repo, as paths relative to it.
pub fn playbooks() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        repo().map_or_else(Vec::new, |r| {
            candidates(r.playbook_paths().into_iter().filter_map(|p| {
                p.strip_prefix(&r.root)
                    .ok()
                    .map(|rel| (rel.to_string_lossy().into_owned(), None))
            }))
        })
    })
}

/// Task types of the routing rules.
pub fn tasks() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        repo().map_or_else(Vec::new, |r| {
            candidates(r.inventory.routing.rules.iter().map(|x| {
                let via = x
                    .model
                    .as_ref()
                    .map(|m| m.value.clone())
                    .or_else(|| x.capability.as_ref().map(|c| c.value.clone()));
                (x.task.value.clone(), via)
            }))
        })
    })
}
