//! Host patterns: `all`, a node, a group, a role, a glob (`llm-*`), comma-separated, with
//! `!term` to exclude. Used by plays' `hosts:` and by `--limit`.

use crate::error::did_you_mean;
use crate::spec::inventory::Inventory;

/// Nodes matching a pattern, in inventory order. An unknown non-glob term is an error that
/// says what names exist, because a typo would otherwise silently select nothing.
/// `roles` are the role names the repo defines: a role no node has yet selects nothing
/// rather than being an error.
pub fn select(inv: &Inventory, roles: &[&str], pattern: &str) -> Result<Vec<String>, String> {
    let mut included: Vec<bool> = vec![false; inv.nodes.len()];
    let mut excluded: Vec<bool> = vec![false; inv.nodes.len()];
    let mut any_positive = false;
    for raw in pattern
        .split([',', ':'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let (negate, term) = match raw.strip_prefix('!') {
            Some(t) => (true, t),
            None => (false, raw),
        };
        any_positive |= !negate;
        let hits = matches(inv, roles, term)?;
        let target = if negate { &mut excluded } else { &mut included };
        for i in hits {
            target[i] = true;
        }
    }
    if !any_positive {
        included.iter_mut().for_each(|b| *b = true);
    }
    Ok(inv
        .nodes
        .keys()
        .enumerate()
        .filter(|(i, _)| included[*i] && !excluded[*i])
        .map(|(_, n)| n.clone())
        .collect())
}

fn matches(inv: &Inventory, roles: &[&str], term: &str) -> Result<Vec<usize>, String> {
    if term == "all" || term == "*" {
        return Ok((0..inv.nodes.len()).collect());
    }
    if let Some(i) = inv.nodes.get_index_of(term) {
        return Ok(vec![i]);
    }
    if let Some(g) = inv.groups.get(term) {
        return Ok(g
            .members
            .iter()
            .filter_map(|m| inv.nodes.get_index_of(m.value.as_str()))
            .collect());
    }
    let by_role: Vec<usize> = inv
        .nodes
        .values()
        .enumerate()
        .filter(|(_, n)| n.role.value == term)
        .map(|(i, _)| i)
        .collect();
    if !by_role.is_empty() {
        return Ok(by_role);
    }
    if term.contains(['*', '?']) || roles.contains(&term) {
        return Ok(inv
            .nodes
            .keys()
            .enumerate()
            .filter(|(_, n)| glob_match(term, n))
            .map(|(i, _)| i)
            .collect());
    }
    let known = inv
        .nodes
        .keys()
        .chain(inv.groups.keys())
        .map(String::as_str)
        .chain(["all"]);
    let help = did_you_mean(term, known)
        .map(|s| format!("\n  help: {s}"))
        .unwrap_or_else(|| {
            "\n  help: a pattern names nodes, groups, roles, `all`, or a glob such as `llm-*`"
                .into()
        });
    Err(format!("`{term}` matches no node, group or role{help}"))
}

/// `*` and `?` wildcards over a whole name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("llm-*", "llm-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("m?estro", "maestro"));
        assert!(!glob_match("llm-*", "gpu-1"));
        assert!(glob_match("*o*o", "virtuoso"));
    }
}
