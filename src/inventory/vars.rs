//! Per-host variables. Precedence, lowest first: role defaults < fleet `vars` < group vars
//! < node `vars` < play vars < `-e key=value`. Variables may use other variables
//! (`ollama_url: "http://{{ node.host }}:{{ ollama_port }}"`); they are resolved here.

use serde_json::{Value as J, json};

use crate::error::{Diagnostic, Loc};
use crate::inventory::priority::default_priority;
use crate::spec::decode::VarMap;
use crate::spec::inventory::{Inventory, NodeSpec};
use crate::spec::yaml::resolve_plain;
use crate::template::{self, Context};

/// Variables given on the command line with `-e key=value`.
#[derive(Debug, Clone, Default)]
pub struct ExtraVars(pub Vec<(String, J)>);

impl ExtraVars {
    /// Parses `-e` values, in order (a later one wins): `key=value` (the value reads like a
    /// plain YAML scalar: `8080` is a number), `@FILE` (a YAML or JSON mapping in a file) or
    /// an inline mapping (`'{"port": 8080, "tags": [a, b]}'`).
    pub fn parse(pairs: &[String]) -> Result<ExtraVars, String> {
        let mut out = Vec::new();
        for p in pairs {
            let t = p.trim_start();
            if let Some(path) = t.strip_prefix('@') {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("`-e @{path}`: cannot read it: {e}"))?;
                out.extend(mapping(&text, path)?);
                continue;
            }
            if t.starts_with('{') {
                out.extend(mapping(t, "<-e>")?);
                continue;
            }
            let Some((k, v)) = p.split_once('=') else {
                return Err(format!(
                    "`-e {p}`: expected `name=value`, `@FILE` or a mapping (`{{\"name\": value}}`)"
                ));
            };
            let k = k.trim();
            if !crate::spec::decode::is_identifier(k) {
                return Err(format!("`-e {p}`: `{k}` is not a variable name"));
            }
            let value = match resolve_plain(v) {
                crate::spec::yaml::Resolved::Null => J::Null,
                crate::spec::yaml::Resolved::Bool(b) => J::Bool(b),
                crate::spec::yaml::Resolved::Int(i) => J::from(i),
                crate::spec::yaml::Resolved::Float(f) => json!(f),
                crate::spec::yaml::Resolved::Str(s) => J::String(s.to_string()),
            };
            out.push((k.to_string(), value));
        }
        Ok(ExtraVars(out))
    }
}

/// The variables of a YAML/JSON mapping given with `-e` (a file's errors are located in it).
fn mapping(text: &str, file: &str) -> Result<Vec<(String, J)>, String> {
    let node = crate::spec::yaml::parse(&file.into(), text).map_err(|d| d.to_string())?;
    let J::Object(map) = node.to_json() else {
        return Err(format!(
            "`-e` {}: expected a mapping of variable names to values",
            if file == "<-e>" {
                "value".to_string()
            } else {
                format!("file `{file}`")
            }
        ));
    };
    map.into_iter()
        .map(|(k, v)| {
            if crate::spec::decode::is_identifier(&k) {
                Ok((k, v))
            } else {
                Err(format!("`-e` {file}: `{k}` is not a variable name"))
            }
        })
        .collect()
}

/// The `node` variable: what templates and conditions know about the host.
pub fn node_json(inv: &Inventory, node: &NodeSpec, facts: Option<&J>) -> J {
    let hw = &node.hardware;
    let fact = |k: &str| {
        facts
            .and_then(|f| f.get(k))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let os = fact("os").unwrap_or_else(|| json!(hw.os));
    // Facts and the inventory both say `aarch64` for what macOS calls `arm64`.
    let arch = fact("arch")
        .map(
            |a| match a.as_str().and_then(crate::spec::inventory::canonical_arch) {
                Some(c) => json!(c),
                None => a,
            },
        )
        .unwrap_or_else(|| json!(hw.arch));
    let groups: Vec<&str> = inv
        .groups
        .values()
        .filter(|g| g.members.iter().any(|m| m.value == node.name))
        .map(|g| g.name.as_str())
        .collect();
    json!({
        "name": node.name,
        "host": node.host,
        // Where other machines reach it: `address`, else `host` (which may be an ssh alias);
        // on a Tailscale fleet, its tailnet address (`address`, else `<node>.<tailnet>`).
        "address": fleet_address(inv, node, facts),
        // The IP its services listen on (`null` when the inventory does not say): see
        // [`bind_address`].
        "bind_address": bind_address(inv, node, facts),
        "role": node.role.value,
        "hardware": hw,
        "os": os,
        "arch": arch,
        "models": node.models.iter().map(|m| m.value.as_str()).collect::<Vec<_>>(),
        "priority": node.priority.unwrap_or_else(|| default_priority(hw)),
        "max_concurrent": node.max_concurrent,
        "labels": node.labels,
        "capabilities": node.capabilities,
        "groups": groups,
    })
}

/// Where other machines reach `node`: its `address`, else (on a Tailscale fleet) its MagicDNS
/// name `<node>.<tailnet>` or its gathered Tailscale IP, else its `host`.
pub fn fleet_address(inv: &Inventory, node: &NodeSpec, facts: Option<&J>) -> String {
    if let Some(a) = &node.address {
        return a.value.clone();
    }
    if inv.fleet.tailscale() {
        if let Some(t) = &inv.fleet.tailnet {
            return format!("{}.{}", node.name, t.value.trim_end_matches('.'));
        }
        if let Some(ip) = facts
            .and_then(|f| f.get("tailscale_ip"))
            .and_then(J::as_str)
        {
            return ip.to_string();
        }
    }
    node.host.clone()
}

/// The address `node`'s services listen on: its fleet IP. On a Tailscale fleet its `address`
/// when that is an IP, else its gathered Tailscale IP; otherwise its `address`, else its
/// `host`, when that is an IP. A DNS name or an ssh alias is not something a server can bind
/// to, and "every interface" is never a default: `None` when none of these is known.
pub fn bind_address(inv: &Inventory, node: &NodeSpec, facts: Option<&J>) -> Option<String> {
    let ip = |s: &str| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .filter(|a| !a.is_unspecified())
            .map(|a| a.to_string())
    };
    let written = node.address.as_ref().map(|a| a.value.as_str());
    if inv.fleet.tailscale() {
        return written.and_then(ip).or_else(|| {
            facts
                .and_then(|f| f.get("tailscale_ip"))
                .and_then(J::as_str)
                .and_then(ip)
        });
    }
    ip(written.unwrap_or(&node.host))
}

/// The `fleet` variable.
pub fn fleet_json(inv: &Inventory) -> J {
    let hq = inv.fleet.hq.as_ref().map(|h| h.value.clone());
    let hq_host = hq
        .as_ref()
        .and_then(|h| inv.nodes.get(h))
        .map(|n| n.host.clone());
    json!({
        "name": inv.fleet.name,
        "hq": hq,
        "hq_url": inv.fleet.hq_url.as_ref().map(|u| u.value.clone()),
        "hq_host": hq_host,
        "network": if inv.fleet.tailscale() { "tailscale" } else { "lan" },
        "tailnet": inv.fleet.tailnet.as_ref().map(|t| t.value.clone()),
    })
}

/// Layers for one host, lowest precedence first.
#[derive(Debug, Default)]
pub struct Layers<'a> {
    /// Defaults of the roles applied, in application order.
    pub role_defaults: Vec<&'a VarMap>,
    /// Play variables.
    pub play: Option<&'a VarMap>,
    /// `-e` variables.
    pub extra: Option<&'a ExtraVars>,
}

/// `nodes`: every node of the fleet (same shape as `node`), as one template value converted
/// entry by entry on use. Made once and set as a global of the environments that render
/// hosts' templates ([`with_nodes`]), so no host's context carries the whole fleet.
pub fn nodes_value(inv: &Inventory) -> minijinja::Value {
    template::lazy_map(
        inv.nodes
            .values()
            .map(|n| (n.name.clone(), node_json(inv, n, None)))
            .collect(),
    )
}

/// `env` with the `nodes` global.
pub fn with_nodes(
    mut env: minijinja::Environment<'static>,
    nodes: minijinja::Value,
) -> minijinja::Environment<'static> {
    env.add_global("nodes", nodes);
    env
}

/// A variable as a layer sets it.
struct RawVar {
    name: String,
    value: J,
    /// Where it was defined (`None` for `-e`).
    loc: Option<Loc>,
    /// Written `{ secret: true, value: … }`.
    secret: bool,
}

/// A variable written `{ secret: true, value: … }`: its value, marked secret.
pub fn secret_var(node: &crate::spec::yaml::Node) -> Option<(&crate::spec::yaml::Node, bool)> {
    let entries = node.as_map()?;
    if entries.len() != 2 {
        return None;
    }
    let secret = node.get("secret")?;
    let value = node.get("value")?;
    match secret.resolve() {
        Some(crate::spec::yaml::Resolved::Bool(b)) => Some((value, b)),
        _ => None,
    }
}

/// The template context for a host: its layered variables (resolved with `env`, which holds
/// the `nodes` global), plus `node` and `fleet`. A variable written `{ secret: true, value: … }`
/// is secret, and so is every variable whose value read a secret (`env()`, another secret).
pub fn host_context(
    inv: &Inventory,
    node: &NodeSpec,
    layers: &Layers<'_>,
    facts: Option<&J>,
    env: &minijinja::Environment<'_>,
) -> Result<Context, Diagnostic> {
    // Later layers replace earlier ones.
    let mut raw: Vec<RawVar> = Vec::new();
    let mut set = |v: RawVar| {
        if let Some(slot) = raw.iter_mut().find(|r| r.name == v.name) {
            *slot = v;
        } else {
            raw.push(v);
        }
    };
    let add_map = |m: &VarMap, set: &mut dyn FnMut(RawVar)| {
        for (k, v) in m {
            let (value, secret) = secret_var(v).unwrap_or((v, false));
            set(RawVar {
                name: k.clone(),
                value: value.to_json(),
                loc: Some(value.loc.clone()),
                secret,
            });
        }
    };
    for d in &layers.role_defaults {
        add_map(d, &mut set);
    }
    add_map(&inv.vars, &mut set);
    for g in inv.groups.values() {
        if g.members.iter().any(|m| m.value == node.name) {
            add_map(&g.vars, &mut set);
        }
    }
    add_map(&node.vars, &mut set);
    if let Some(p) = layers.play {
        add_map(p, &mut set);
    }
    if let Some(e) = layers.extra {
        for (k, v) in &e.0 {
            set(RawVar {
                name: k.clone(),
                value: v.clone(),
                loc: None,
                secret: false,
            });
        }
    }

    let mut ctx = Context::default();
    for r in &raw {
        if r.secret {
            remember_strings(&r.value);
        }
        ctx.insert(&r.name, r.value.clone(), r.secret);
    }
    ctx.insert("node", node_json(inv, node, facts), false);
    ctx.insert("fleet", fleet_json(inv), false);
    if let Some(f) = facts {
        ctx.insert("facts", f.clone(), false);
    }

    // Variables that are templates are rendered once each, from their own text, after the
    // variables they use: a rendered value is data, never rendered again (a value that holds
    // `{{ … }}`, from `env()` or a literal, stays as it is). A cycle is an error.
    let templated: Vec<&RawVar> = raw
        .iter()
        .filter(|r| {
            r.value
                .as_str()
                .is_some_and(|t| t.contains("{{") || t.contains("{%"))
        })
        .collect();
    let names: std::collections::BTreeSet<&str> =
        templated.iter().map(|r| r.name.as_str()).collect();
    let uses = |r: &RawVar| -> Vec<String> {
        let text = r.value.as_str().unwrap_or_default();
        crate::panic::catch(|| {
            env.template_from_str(text)
                .map(|t| t.undeclared_variables(false))
        })
        .ok()
        .and_then(Result::ok)
        .map(|set| {
            set.into_iter()
                .filter(|n| names.contains(n.as_str()))
                .collect()
        })
        .unwrap_or_default()
    };
    let mut order: Vec<&RawVar> = Vec::new();
    // 0 = not seen, 1 = being visited, 2 = done.
    let mut state: std::collections::HashMap<&str, u8> = std::collections::HashMap::new();
    for start in &templated {
        if state.get(start.name.as_str()).copied().unwrap_or(0) == 2 {
            continue;
        }
        // Depth-first with an explicit stack: (variable, its uses not yet visited).
        let mut stack: Vec<(&RawVar, Vec<String>)> = vec![(start, uses(start))];
        state.insert(&start.name, 1);
        while let Some((var, pending)) = stack.last_mut() {
            let var: &RawVar = var;
            match pending.pop() {
                Some(dep) => {
                    match state.get(dep.as_str()).copied().unwrap_or(0) {
                        0 => {
                            let Some(d) = templated.iter().find(|r| r.name == dep) else {
                                continue;
                            };
                            state.insert(&d.name, 1);
                            stack.push((d, uses(d)));
                        }
                        1 => {
                            // The cycle: from `dep` on the stack to here, and back to `dep`.
                            let from = stack.iter().position(|(v, _)| v.name == dep).unwrap_or(0);
                            let mut path: Vec<&str> =
                                stack[from..].iter().map(|(v, _)| v.name.as_str()).collect();
                            path.push(&dep);
                            let at = stack[from].0;
                            return Err(Diagnostic::error(
                            at.loc.clone(),
                            format!(
                                "variable `{dep}` refers to itself through other variables ({})",
                                path.join(" → ")
                            ),
                        )
                        .with_help("break the cycle: one of the variables must have a plain value"));
                        }
                        _ => {}
                    }
                }
                None => {
                    state.insert(&var.name, 2);
                    order.push(var);
                    stack.pop();
                }
            }
        }
    }
    for r in order {
        let text = r.value.as_str().unwrap_or_default();
        let here = r
            .loc
            .clone()
            .unwrap_or_else(|| Loc::file_start(&"<-e>".into()));
        let rendered = template::render_value(
            env,
            text,
            &ctx,
            &here,
            &format!("in variable `{}` for host `{}`", r.name, node.name),
        )?;
        let secret = rendered.is_secret() || ctx.is_secret(&r.name);
        if secret {
            remember_strings(&rendered.value);
        }
        ctx.insert(&r.name, rendered.value, secret);
    }
    Ok(ctx)
}

/// Remembers every string inside a secret value, so printers mask it wherever it shows.
pub fn remember_strings(v: &J) {
    match v {
        J::String(s) => crate::secret::remember(s),
        J::Array(a) => a.iter().for_each(remember_strings),
        J::Object(m) => m.values().for_each(remember_strings),
        J::Number(n) => crate::secret::remember(&n.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_vars_from_pairs_files_and_mappings() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("vars.yaml");
        std::fs::write(&f, "port: 8080\ntags: [a, b]\nname: from-file\n").expect("w");
        let e = ExtraVars::parse(&[
            "name=first".into(),
            format!("@{}", f.display()),
            r#"{"name": "inline", "nested": {"k": true}}"#.into(),
        ])
        .expect("parses");
        let get = |k: &str| {
            e.0.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("port"), Some(json!(8080)));
        assert_eq!(get("tags"), Some(json!(["a", "b"])));
        assert_eq!(get("name"), Some(json!("inline")), "a later -e wins");
        assert_eq!(get("nested"), Some(json!({"k": true})));
        for bad in [
            "@/no/such/file",
            "{x: [}",
            "[1, 2]",
            "{\"not a name\": 1}",
            "novalue",
        ] {
            assert!(ExtraVars::parse(&[bad.into()]).is_err(), "{bad}");
        }
        std::fs::write(&f, "- 1\n").expect("w");
        let err = ExtraVars::parse(&[format!("@{}", f.display())]).expect_err("a list");
        assert!(err.contains("expected a mapping"), "{err}");
    }
    use crate::spec::decode::Decoder;
    use crate::spec::yaml::parse;
    use std::sync::Arc;

    fn inventory(src: &str) -> Inventory {
        let n = parse(&Arc::from("i.yaml"), src).expect("yaml");
        let mut d = Decoder::default();
        let mut inv = Inventory::default();
        inv.merge_file(&mut d, &n);
        assert!(!d.diags.has_errors(), "{:?}", d.diags);
        inv
    }

    #[test]
    fn precedence_and_references() {
        let inv = inventory(
            "vars: { port: 1, url: \"http://{{ node.host }}:{{ port }}\", who: fleet }\ngroups:\n  g: { nodes: [a], vars: { port: 2, who: group } }\nnodes:\n  a: { host: a.lan, role: hq, vars: { who: node } }\n",
        );
        let defaults = parse(&Arc::from("d.yaml"), "port: 0\nonly_default: 7\n").expect("yaml");
        let mut d = Decoder::default();
        let defaults = d.vars(&defaults, "defaults");
        let extra = ExtraVars::parse(&["port=3".to_string()]).expect("extra");
        let node = &inv.nodes["a"];
        let layers = Layers {
            role_defaults: vec![&defaults],
            play: None,
            extra: Some(&extra),
        };
        let ctx = host_context(&inv, node, &layers, None, &template::base_environment())
            .expect("ctx")
            .to_json();
        assert_eq!(ctx["port"], json!(3));
        assert_eq!(ctx["who"], json!("node"));
        assert_eq!(ctx["only_default"], json!(7));
        assert_eq!(ctx["url"], json!("http://a.lan:3"));
        assert_eq!(ctx["node"]["groups"], json!(["g"]));
    }

    #[test]
    fn cycles_are_reported() {
        let inv =
            inventory("vars: { a: \"{{ b }}\", b: \"{{ a }}\" }\nnodes:\n  n: { role: hq }\n");
        let err = host_context(
            &inv,
            &inv.nodes["n"],
            &Layers::default(),
            None,
            &template::base_environment(),
        )
        .expect_err("cycle");
        assert!(err.message.contains("refers to itself"), "{}", err.message);
    }

    #[test]
    fn secret_variables_and_what_reads_them_are_secret() {
        let inv = inventory(
            "vars:\n  pw: { secret: true, value: hunter22 }\n  url: \"http://u:{{ pw }}@h\"\n  plain: x\n  notsecret: { secret: false, value: y }\n  both: { secret: true, value: 1, other: 2 }\nnodes:\n  n: { role: hq }\n",
        );
        let ctx = host_context(
            &inv,
            &inv.nodes["n"],
            &Layers::default(),
            None,
            &template::base_environment(),
        )
        .expect("ctx");
        assert!(ctx.is_secret("pw") && ctx.is_secret("url"));
        assert!(!ctx.is_secret("plain") && !ctx.is_secret("notsecret"));
        assert_eq!(ctx.get("url"), Some(&json!("http://u:hunter22@h")));
        assert_eq!(ctx.get("notsecret"), Some(&json!("y")));
        // Any other mapping is an ordinary value.
        assert_eq!(
            ctx.get("both"),
            Some(&json!({"secret": true, "value": 1, "other": 2}))
        );
        assert_eq!(crate::secret::mask("x hunter22 y"), "x *** y");
    }

    #[test]
    fn a_rendered_value_is_never_rendered_again() {
        let inv = inventory(
            "vars:\n  a: \"{{ '{{ 7 * 7 }}' }}\"\n  b: \"x{{ a }}\"\n  c: \"{{ b }}-{{ d }}\"\n  d: plain\nnodes:\n  n: { role: hq }\n",
        );
        let ctx = host_context(
            &inv,
            &inv.nodes["n"],
            &Layers::default(),
            None,
            &template::base_environment(),
        )
        .expect("ctx");
        assert_eq!(ctx.get("a"), Some(&json!("{{ 7 * 7 }}")));
        assert_eq!(ctx.get("b"), Some(&json!("x{{ 7 * 7 }}")));
        assert_eq!(ctx.get("c"), Some(&json!("x{{ 7 * 7 }}-plain")));
    }

    #[test]
    fn every_node_is_a_global_read_on_demand() {
        let inv = inventory(
            "vars: { hq_addr: \"{{ nodes.b.host }}\" }\nnodes:\n  a: { host: a.lan, role: hq }\n  b: { host: 10.0.0.2, role: hq, hardware: { ram_gb: 64 } }\n",
        );
        let env = with_nodes(template::base_environment(), nodes_value(&inv));
        let ctx = host_context(&inv, &inv.nodes["a"], &Layers::default(), None, &env).expect("ctx");
        // Variables and templates see every node; a host's context does not carry them.
        assert_eq!(ctx.get("hq_addr"), Some(&json!("10.0.0.2")));
        assert!(ctx.get("nodes").is_none());
        let loc = Loc::file_start(&"t".into());
        let v = template::render_value(&env, "{{ nodes.b.hardware.ram_gb }}", &ctx, &loc, "in t")
            .expect("renders");
        assert_eq!(v.value, json!(64.0));
        let names = template::render_value(&env, "{{ nodes | list }}", &ctx, &loc, "in t")
            .expect("renders");
        assert_eq!(names.value, json!(["a", "b"]));
        // A node that does not exist is named in the error.
        let err = template::render_value(&env, "{{ nodes.c.host }}", &ctx, &loc, "in t")
            .expect_err("undefined");
        assert!(err.to_string().contains("nodes.c.host"), "{err}");
    }
}
