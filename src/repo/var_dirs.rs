//! `group_vars/` and `host_vars/` next to the inventory (Ansible's layout): a file (or a
//! directory of files) per group or node holding its variables. `group_vars/all.yaml` is the
//! fleet's `vars`. A file's variables override the same names written in the inventory file
//! itself; a file for a group or node the inventory does not have is an error. A file named
//! `NAME.yaml.age` is encrypted: read in memory, its values secret (see `repo::encrypted`).

use std::path::{Path, PathBuf};

use crate::error::{Diagnostic, Diagnostics, Loc, did_you_mean};
use crate::repo::{read_yaml, shown};
use crate::spec::decode::{Decoder, VarMap};
use crate::spec::inventory::Inventory;

/// A YAML file, or an encrypted one (`NAME.yaml.age`).
fn is_yaml(p: &Path) -> bool {
    let p = crate::vault::plain_name(p);
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// `(name, files)` for each entry of `dir`: `NAME.yaml`, or `NAME/` with YAML files inside.
fn entries(dir: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let name = |p: &Path| {
            crate::vault::plain_name(p)
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.is_file() && is_yaml(f))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((n, files));
        } else if p.is_file() && is_yaml(&p) {
            out.push((name(&p), vec![p]));
        }
    }
    out
}

fn read_vars(file: &Path, d: &mut Decoder, diags: &mut Diagnostics) -> VarMap {
    if crate::vault::is_encrypted(file) {
        return crate::repo::encrypted::read_vars(file, d, diags);
    }
    match read_yaml(file, diags) {
        Some(n) => d.vars(&n, &format!("variables file `{}`", shown(file))),
        None => VarMap::new(),
    }
}

/// Reads `group_vars/` and `host_vars/` of `inv_dir` into `inv`; returns the files read.
pub fn load(
    inv_dir: &Path,
    inv: &mut Inventory,
    d: &mut Decoder,
    diags: &mut Diagnostics,
) -> Vec<PathBuf> {
    let mut read = Vec::new();
    for (group, files) in entries(&inv_dir.join("group_vars")) {
        for f in files {
            let vars = read_vars(&f, d, diags);
            let target = if group == "all" {
                Some(&mut inv.vars)
            } else {
                inv.groups.get_mut(&group).map(|g| &mut g.vars)
            };
            match target {
                Some(t) => t.extend(vars),
                None => {
                    let known: Vec<String> = inv.groups.keys().cloned().collect();
                    let help = did_you_mean(&group, known.iter().map(String::as_str))
                        .unwrap_or_else(|| {
                            "name the file after a group of the inventory, or `all`".to_string()
                        });
                    diags.push(
                        Diagnostic::error(
                            Loc::file_start(&shown(&f)),
                            format!(
                                "group_vars for `{group}`, which is not a group of the inventory"
                            ),
                        )
                        .with_help(help),
                    );
                }
            }
            read.push(f);
        }
    }
    for (node, files) in entries(&inv_dir.join("host_vars")) {
        for f in files {
            let vars = read_vars(&f, d, diags);
            match inv.nodes.get_mut(&node) {
                Some(n) => n.vars.extend(vars),
                None => {
                    let known: Vec<String> = inv.nodes.keys().cloned().collect();
                    let help = did_you_mean(&node, known.iter().map(String::as_str))
                        .unwrap_or_else(|| {
                            "name the file after a node of the inventory".to_string()
                        });
                    diags.push(
                        Diagnostic::error(
                            Loc::file_start(&shown(&f)),
                            format!("host_vars for `{node}`, which is not a node of the inventory"),
                        )
                        .with_help(help),
                    );
                }
            }
            read.push(f);
        }
    }
    read
}
