//! A fleet repo on disk: finds its root, reads the inventory (one file or a directory of
//! files), the roles and the templates, and keeps every diagnostic found along the way.

pub mod catalog_files;
pub mod encrypted;
pub mod lookup;
pub mod var_dirs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

use crate::error::{Diagnostic, Diagnostics, Error, Loc, Result};
use crate::spec::decode::Decoder;
use crate::spec::inventory::{ApiKeySource, Inventory, key_file_path};
use crate::spec::playbook::{Playbook, decode_playbook};
use crate::spec::role::{Role, decode_role};
use crate::spec::yaml::{self, Node};

/// A loaded fleet repo.
#[derive(Debug)]
pub struct Repo {
    /// Its root directory (the one holding `inventory/`).
    pub root: PathBuf,
    /// The merged inventory.
    pub inventory: Inventory,
    /// The inventory files that were read, in merge order.
    pub inventory_files: Vec<PathBuf>,
    /// The `group_vars/` and `host_vars/` files read after them.
    pub var_files: Vec<PathBuf>,
    /// Roles by name.
    pub roles: IndexMap<String, Role>,
    /// Templates of the repo's `templates/` directory: name → (shown path, source).
    pub templates: BTreeMap<String, (Arc<str>, String)>,
    /// The files of the worker catalog (`catalog/`) its manifests are rendered from,
    /// repo-relative (`catalog/…`); empty without a catalog.
    pub catalog_files: Vec<String>,
    /// Everything found while reading.
    pub diags: Diagnostics,
}

/// Finds the repo root: `explicit` when given, else the nearest directory from the working
/// directory upwards that holds `inventory/` (or `inventory.yaml`).
pub fn find_root(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_dir() {
            return Err(Error::Usage(format!(
                "`{}` is not a directory; `-i` takes the fleet repo directory (the one holding `inventory/`)",
                p.display()
            )));
        }
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", Path::new("."), e))?;
    for dir in cwd.ancestors() {
        if dir.join("inventory").is_dir() || dir.join("inventory.yaml").is_file() {
            return Ok(dir.to_path_buf());
        }
    }
    Err(Error::Usage(format!(
        "no fleet repo here: neither `{}` nor any parent holds an `inventory/` directory\n  help: run `fleet init` to create one, or pass `-i DIR`",
        cwd.display()
    )))
}

/// How a path is shown in messages: relative to the working directory when below it.
pub fn shown(path: &Path) -> Arc<str> {
    let cwd = std::env::current_dir().ok();
    let rel = cwd
        .as_deref()
        .and_then(|c| path.strip_prefix(c).ok())
        .unwrap_or(path);
    Arc::from(rel.to_string_lossy().as_ref())
}

/// Reads and parses one YAML file, recording problems; `None` when it cannot be used.
pub fn read_yaml(path: &Path, diags: &mut Diagnostics) -> Option<Node> {
    let file = shown(path);
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            diags.push(Diagnostic::error(
                Loc::file_start(&file),
                format!("cannot read this file: {e}"),
            ));
            return None;
        }
    };
    match yaml::parse(&file, &src) {
        Ok(n) => Some(n),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

fn yaml_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every file below `dir`, in name order, that is inside `root` once links are followed; the
/// paths that lead outside it (a link to `/`) are returned apart, unread. A directory is
/// entered once however many links lead to it (`templates/loop -> ..` does not walk forever),
/// and at most 32 levels deep.
fn walk_files(dir: &Path, root: &Path, out: &mut Vec<PathBuf>, outside: &mut Vec<PathBuf>) {
    let Ok(root) = std::fs::canonicalize(root) else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    walk(dir, &root, out, outside, &mut seen, 0);
}

fn walk(
    dir: &Path,
    root: &Path,
    out: &mut Vec<PathBuf>,
    outside: &mut Vec<PathBuf>,
    seen: &mut std::collections::HashSet<PathBuf>,
    depth: u32,
) {
    let Ok(real) = std::fs::canonicalize(dir) else {
        return;
    };
    if !real.starts_with(root) {
        outside.push(dir.to_path_buf());
        return;
    }
    if depth > 32 || !seen.insert(real) {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, root, out, outside, seen, depth + 1);
        } else if p.is_file() {
            match std::fs::canonicalize(&p) {
                Ok(r) if r.starts_with(root) => out.push(p),
                _ => outside.push(p),
            }
        }
    }
}

/// Reads every file below `dir` as a template named `prefix` + its relative path.
fn read_templates(
    dir: &Path,
    root: &Path,
    prefix: &str,
    out: &mut BTreeMap<String, (Arc<str>, String)>,
    diags: &mut Diagnostics,
) {
    let mut files = Vec::new();
    let mut outside = Vec::new();
    walk_files(dir, root, &mut files, &mut outside);
    for p in outside {
        diags.push(
            Diagnostic::warning(
                Loc::file_start(&shown(&p)),
                "this link leads outside the repo: it is not read as a template",
            )
            .with_help("copy the template into the repo, or remove the link"),
        );
    }
    for f in files {
        let Ok(rel) = f.strip_prefix(dir) else {
            continue;
        };
        let name = format!("{prefix}{}", rel.to_string_lossy().replace('\\', "/"));
        match std::fs::read_to_string(&f) {
            Ok(src) => {
                out.insert(name, (shown(&f), src));
            }
            Err(e) => diags.push(Diagnostic::error(
                Loc::file_start(&shown(&f)),
                format!("cannot read this template: {e}"),
            )),
        }
    }
}

impl Repo {
    /// Loads a repo; problems are kept in `diags`, not returned as errors, so validation can
    /// report all of them.
    pub fn load(root: &Path) -> Repo {
        let mut diags = Diagnostics::default();
        let mut d = Decoder::with_modules(crate::modules::SPECS);
        let mut inventory = Inventory::default();
        let inv_dir = root.join("inventory");
        let inventory_files = if inv_dir.is_dir() {
            yaml_files_in(&inv_dir)
        } else if root.join("inventory.yaml").is_file() {
            vec![root.join("inventory.yaml")]
        } else {
            Vec::new()
        };
        if inventory_files.is_empty() {
            diags.push(
                Diagnostic::error(None, format!("no inventory in `{}`", shown(root)))
                    .with_help("create `inventory/fleet.yaml` (or run `fleet init`)"),
            );
        }
        for f in &inventory_files {
            if let Some(n) = read_yaml(f, &mut diags) {
                inventory.merge_file(&mut d, &n);
            }
        }
        let var_files = if inv_dir.is_dir() {
            var_dirs::load(&inv_dir, &mut inventory, &mut d, &mut diags)
        } else {
            Vec::new()
        };
        // `secrets/NAME.age`: the `secrets` variable of every host.
        if let Some((name, node)) = encrypted::secrets_dir(root, &mut diags) {
            inventory.vars.insert(name, node);
        }

        let mut roles = IndexMap::new();
        let roles_dir = root.join("roles");
        if let Ok(rd) = std::fs::read_dir(&roles_dir) {
            let mut dirs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            for dir in dirs {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let file = dir.join("role.yaml");
                if !file.is_file() {
                    diags.push(
                        Diagnostic::error(
                            Loc::file_start(&shown(&dir)),
                            format!("role `{name}` has no `role.yaml`"),
                        )
                        .with_help(format!(
                            "create `roles/{name}/role.yaml` or remove the directory"
                        )),
                    );
                    continue;
                }
                if let Some(n) = read_yaml(&file, &mut diags)
                    && let Some(role) = decode_role(&mut d, &name, dir.clone(), &n)
                {
                    roles.insert(name, role);
                }
            }
        }

        let mut templates = BTreeMap::new();
        read_templates(
            &root.join("templates"),
            root,
            "",
            &mut templates,
            &mut diags,
        );
        for role in roles.values() {
            let prefix = role_template_name(&role.name, "");
            // A role's templates stay inside the role (which may itself be a link to a
            // shared checkout).
            read_templates(
                &role.dir.join("templates"),
                &role.dir,
                &prefix,
                &mut templates,
                &mut diags,
            );
        }

        diags.extend(d.diags);
        // The API keys the cloud fallback names are secrets every printer masks.
        for c in &inventory.routing.cloud_fallback {
            let key = match &c.key {
                ApiKeySource::Env(name) => std::env::var(name).ok(),
                ApiKeySource::File(path) => std::fs::read_to_string(key_file_path(root, path)).ok(),
            };
            if let Some(k) = key {
                crate::secret::remember(k.trim());
            }
        }
        let catalog_files = catalog_files::source_files(&root.join("catalog"))
            .into_iter()
            .map(|p| format!("catalog/{}", p.to_string_lossy().replace('\\', "/")))
            .collect();
        Repo {
            root: root.to_path_buf(),
            inventory,
            inventory_files,
            var_files,
            roles,
            templates,
            catalog_files,
            diags,
        }
    }

    /// Loads a playbook by path (relative to the working directory, or to the repo root).
    pub fn load_playbook(&self, path: &Path) -> Result<(Playbook, Diagnostics)> {
        // The repo's own playbook wins over a same-named file in the working directory.
        let full = if self.root.join(path).is_file() {
            self.root.join(path)
        } else if path.is_file() {
            path.to_path_buf()
        } else {
            let known: Vec<String> = yaml_files_in(&self.root.join("playbooks"))
                .iter()
                .map(|p| shown(p).to_string())
                .collect();
            return Err(Error::Usage(format!(
                "no playbook at `{}`\n  help: playbooks here: {}",
                path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        let mut diags = Diagnostics::default();
        let mut d = Decoder::with_modules(crate::modules::SPECS);
        let mut pb = match read_yaml(&full, &mut diags) {
            Some(n) => decode_playbook(&mut d, shown(&full), &n),
            None => Playbook {
                file: shown(&full),
                plays: Vec::new(),
            },
        };
        // `vars_files`, relative to the playbook's directory; their variables over `vars`.
        let base = full.parent().map(Path::to_path_buf).unwrap_or_default();
        for play in &mut pb.plays {
            for vf in play.vars_files.clone() {
                let path = base.join(&vf.value);
                if !path.is_file() {
                    diags.push(
                        Diagnostic::error(
                            vf.loc.clone(),
                            format!("`vars_files`: no file `{}`", shown(&path)),
                        )
                        .with_help("paths are relative to the playbook's directory"),
                    );
                    continue;
                }
                if crate::vault::is_encrypted(&path) {
                    let vars = encrypted::read_vars(&path, &mut d, &mut diags);
                    play.vars.extend(vars);
                } else if let Some(n) = read_yaml(&path, &mut diags) {
                    let vars = d.vars(&n, &format!("variables file `{}`", shown(&path)));
                    play.vars.extend(vars);
                }
            }
        }
        diags.extend(d.diags);
        Ok((pb, diags))
    }

    /// Every playbook under `playbooks/`.
    pub fn playbook_paths(&self) -> Vec<PathBuf> {
        yaml_files_in(&self.root.join("playbooks"))
    }
}

/// Library name of a role-local template.
pub fn role_template_name(role: &str, src: &str) -> String {
    format!("@{role}/{src}")
}

/// What the `fleet` variable says about the repo itself: its inventory files and roles
/// (relative paths), so a role can ship them (the hq role does, for `fleet serve`).
pub fn add_repo_facts(ctx: &mut crate::template::Context, repo: &Repo) {
    // The variable files too: HQ's copy of the inventory must say what the controller's does.
    // Not the encrypted ones: HQ holds no identity, and serves nothing that needs a secret.
    let files: Vec<String> = repo
        .inventory_files
        .iter()
        .chain(
            repo.var_files
                .iter()
                .filter(|f| !crate::vault::is_encrypted(f)),
        )
        .filter_map(|f| f.strip_prefix(&repo.root).ok())
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .collect();
    let roles: Vec<&str> = repo.roles.keys().map(String::as_str).collect();
    ctx.set_field("fleet", "inventory_files", serde_json::json!(files));
    ctx.set_field("fleet", "roles", serde_json::json!(roles));
    // The repo's own templates (a role's live in the role), repo-relative: what HQ's copy of
    // the repo needs to render exactly what `fleet render` does.
    let templates: Vec<String> = repo
        .templates
        .keys()
        .filter(|k| !k.starts_with('@'))
        .map(|k| format!("templates/{k}"))
        .collect();
    ctx.set_field("fleet", "template_files", serde_json::json!(templates));
    ctx.set_field(
        "fleet",
        "catalog_files",
        serde_json::json!(repo.catalog_files),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_linked_into_itself_is_walked_once() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(d.path().join("t/sub")).expect("mkdir");
        std::fs::write(d.path().join("t/sub/x.j2"), "x").expect("write");
        std::os::unix::fs::symlink(".", d.path().join("t/a")).expect("link");
        std::os::unix::fs::symlink("..", d.path().join("t/sub/up")).expect("link");
        std::os::unix::fs::symlink("/", d.path().join("t/root")).expect("link");
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("t/host.j2")).expect("link");
        let (mut out, mut outside) = (Vec::new(), Vec::new());
        walk_files(&d.path().join("t"), d.path(), &mut out, &mut outside);
        assert_eq!(out, vec![d.path().join("t/sub/x.j2")]);
        assert_eq!(
            outside,
            vec![d.path().join("t/host.j2"), d.path().join("t/root")]
        );
    }
}
