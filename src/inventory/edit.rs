//! Adds a node to an inventory file as text, so the user's comments, order and formatting
//! stay exactly as they were; the result is parsed again before it is written.

use std::sync::Arc;

use crate::spec::inventory::Hardware;

fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./@".contains(c))
        && matches!(
            crate::spec::yaml::resolve_plain(s),
            crate::spec::yaml::Resolved::Str(_)
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// The hardware line for a new node, from what facts found.
pub fn hardware_flow(hw: &Hardware) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("cpu", &hw.cpu),
        ("chip", &hw.chip),
        ("os", &hw.os),
        ("arch", &hw.arch),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}: {}", yaml_scalar(v)));
        }
    }
    if let Some(r) = hw.ram_gb {
        parts.push(format!("ram_gb: {}", num(r)));
    }
    if let Some(c) = hw.cores {
        parts.push(format!("cores: {c}"));
    }
    if let Some(g) = &hw.gpu {
        parts.push(format!(
            "gpu: {{ vendor: {}, vram_gb: {} }}",
            yaml_scalar(&g.vendor),
            num(g.vram_gb)
        ));
    }
    format!("{{ {} }}", parts.join(", "))
}

/// The inventory text with a new node appended to `nodes:` (with node variables `vars`, e.g.
/// the `ssh_user` and `ssh_port` a joined machine reported).
pub fn add_node(
    text: &str,
    name: &str,
    host: &str,
    role: &str,
    hw: &Hardware,
    vars: &[(&str, String)],
) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let top = |l: &str| !l.is_empty() && !l.starts_with([' ', '\t', '#']);
    let nodes_at = lines.iter().position(|l| {
        let l = l.split('#').next().unwrap_or("").trim_end();
        l == "nodes:"
    });
    if lines.iter().any(|l| {
        l.starts_with("nodes:") && !l.split('#').next().unwrap_or("").trim_end().ends_with(':')
    }) {
        return Err("`nodes:` is written in flow style on one line; add the node by hand".into());
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let (insert_at, indent) = match nodes_at {
        Some(i) => {
            let end = lines
                .iter()
                .enumerate()
                .skip(i + 1)
                .find(|(_, l)| top(l))
                .map_or(lines.len(), |(j, _)| j);
            // Comments and blank lines right before the next top-level key belong to it.
            let mut at = end;
            while at > i + 1
                && (lines[at - 1].trim().is_empty() || lines[at - 1].trim_start().starts_with('#'))
                && lines[at - 1]
                    .chars()
                    .next()
                    .is_none_or(|c| c != ' ' || lines[at - 1].trim().is_empty())
            {
                at -= 1;
            }
            let indent = lines[i + 1..end]
                .iter()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map_or(2, |l| l.len() - l.trim_start().len());
            (at, indent)
        }
        None => {
            out.push(String::new());
            out.push("nodes:".into());
            (out.len(), 2)
        }
    };
    let pad = " ".repeat(indent);
    let mut block = vec![
        String::new(),
        format!("{pad}{name}:"),
        format!("{pad}{pad}host: {}", yaml_scalar(host)),
        format!("{pad}{pad}role: {}", yaml_scalar(role)),
    ];
    if *hw != Hardware::default() {
        block.push(format!(
            "{pad}{pad}hardware: {}   # gathered by fleet provision",
            hardware_flow(hw)
        ));
    }
    if !vars.is_empty() {
        let v: Vec<String> = vars
            .iter()
            // A port is written as the number it is.
            .map(|(k, v)| match v.parse::<u64>() {
                Ok(n) => format!("{k}: {n}"),
                Err(_) => format!("{k}: {}", yaml_scalar(v)),
            })
            .collect();
        block.push(format!("{pad}{pad}vars: {{ {} }}", v.join(", ")));
    }
    if nodes_at.is_none()
        || (insert_at > 0 && out.get(insert_at - 1).is_some_and(|l| l.trim().is_empty()))
    {
        block.remove(0);
    }
    for (k, l) in block.into_iter().enumerate() {
        out.insert(insert_at + k, l);
    }
    let mut result = out.join("\n");
    if text.ends_with('\n') || !text.is_empty() {
        result.push('\n');
    }
    // The edit must still parse, and must define the node.
    let node = crate::spec::yaml::parse(&Arc::from("inventory"), &result)
        .map_err(|d| format!("the edited inventory would not parse: {}", d.message))?;
    if node.get("nodes").and_then(|n| n.get(name)).is_none() {
        return Err("the edited inventory does not define the node; add it by hand".into());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "# my fleet\nfleet: { name: s, hq: bob }\n\nnodes:\n  # the HQ\n  bob:\n    host: bob.local   # keep me\n    role: hq\n\n# routing below\nrouting:\n  rules: []\n";

    #[test]
    fn appends_to_nodes_keeping_everything_else() {
        let hw = Hardware {
            os: Some("linux".into()),
            arch: Some("x86_64".into()),
            ram_gb: Some(24.0),
            cores: Some(8),
            ..Hardware::default()
        };
        let out = add_node(INV, "virtuoso", "10.0.0.7", "full_worker", &hw, &[]).expect("edits");
        assert_eq!(
            out,
            "# my fleet\nfleet: { name: s, hq: bob }\n\nnodes:\n  # the HQ\n  bob:\n    host: bob.local   # keep me\n    role: hq\n\n  virtuoso:\n    host: 10.0.0.7\n    role: full_worker\n    hardware: { os: linux, arch: x86_64, ram_gb: 24, cores: 8 }   # gathered by fleet provision\n\n# routing below\nrouting:\n  rules: []\n"
        );
    }

    #[test]
    fn quotes_what_yaml_would_misread_and_creates_nodes() {
        let out = add_node(
            "fleet: { name: s }\n",
            "n1",
            "host: x",
            "hq",
            &Hardware::default(),
            &[
                ("ssh_user", "admin".to_string()),
                ("ssh_port", "2222".to_string()),
            ],
        )
        .expect("edits");
        assert!(
            out.ends_with("nodes:\n  n1:\n    host: \"host: x\"\n    role: hq\n    vars: { ssh_user: admin, ssh_port: 2222 }\n"),
            "{out}"
        );
        assert!(
            add_node(
                "nodes: { a: { role: hq } }\n",
                "n",
                "h",
                "hq",
                &Hardware::default(),
                &[]
            )
            .is_err()
        );
    }
}
