//! `docker_container`: a container through the Docker CLI — started, stopped or absent, and
//! recreated when its configuration differs. The wanted configuration (image, command, ports,
//! environment, volumes, restart policy) is written as canonical JSON into the container's
//! `fleet.config` label when fleet creates it, and compared with what `docker inspect` reads
//! back, as Compose does with its config-hash label: check mode asks the same question a real
//! run does. Environment values enter the label only as hashes, so a secret never shows in
//! `docker inspect`. Ports are published on the node's fleet address (`node.bind_address`)
//! unless a port names its own IP: nothing is published that `ports` does not list, and
//! nothing on every interface unless written so.

use serde_json::{Value as J, json};

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Judged, Mode, Module, Reported, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct DockerContainer;

const RESTART: &[&str] = &["no", "always", "unless-stopped", "on-failure"];

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "docker_container",
    summary: "Run a Docker container (started, stopped or absent); recreated when its configuration differs.",
    free_form: None,
    args: &[
        arg("name", ArgKind::Str, true, "the container's name"),
        arg(
            "image",
            ArgKind::Str,
            false,
            "the image (`nginx:1.27`); required unless `state: absent`",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["started", "stopped", "absent"]),
            false,
            "default `started`",
        ),
        arg(
            "command",
            ArgKind::StrList,
            false,
            "the command and its arguments, each word as given",
        ),
        arg(
            "ports",
            ArgKind::StrList,
            false,
            "`HOST:CONTAINER[/udp]` (on the node's fleet address) or `IP:HOST:CONTAINER[/udp]`; nothing else is published",
        ),
        arg(
            "env",
            ArgKind::Map,
            false,
            "environment variables (their values reach the label only as hashes)",
        ),
        arg(
            "volumes",
            ArgKind::StrList,
            false,
            "`SOURCE:/path[:ro]` (a host path or a named volume)",
        ),
        arg(
            "restart_policy",
            ArgKind::OneOf(RESTART),
            false,
            "default `no`",
        ),
        arg(
            "bind_address",
            ArgKind::Str,
            false,
            "the IP for ports that name none (default: `node.bind_address`)",
        ),
    ],
    exactly_one_of: &[],
};

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The host IP it is published on.
    pub ip: String,
    /// The host port.
    pub host: u16,
    /// The container port with its protocol (`80/tcp`).
    pub container: String,
}

impl Port {
    /// As `docker run -p` takes it.
    pub fn spec(&self) -> String {
        format!("{}:{}:{}", self.ip, self.host, self.container)
    }
}

/// Reads a port: `HOST:CONTAINER[/proto]` on `default_ip`, or `IP:HOST:CONTAINER[/proto]`.
pub fn parse_port(s: &str, default_ip: Option<&str>) -> Result<Port, String> {
    let (main, proto) = match s.rsplit_once('/') {
        Some((m, p)) if ["tcp", "udp", "sctp"].contains(&p) => (m, p),
        Some(_) => return Err(format!("`{s}`: the protocol is tcp, udp or sctp")),
        None => (s, "tcp"),
    };
    let parts: Vec<&str> = main.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [h, c] => (
            default_ip
                .ok_or_else(|| {
                    format!("`{s}` names no IP and the node has no fleet IP (`node.bind_address`): write `IP:{main}` or set `bind_address`")
                })?
                .to_string(),
            *h,
            *c,
        ),
        [ip, h, c] => {
            ip.parse::<std::net::Ipv4Addr>()
                .map_err(|_| format!("`{s}`: `{ip}` is not an IPv4 address"))?;
            (ip.to_string(), *h, *c)
        }
        _ => {
            return Err(format!(
                "`{s}` is not `HOST:CONTAINER` or `IP:HOST:CONTAINER`"
            ));
        }
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|n| *n > 0);
    let host = port(host).ok_or_else(|| format!("`{s}`: `{host}` is not a port number"))?;
    let c = port(ctr).ok_or_else(|| format!("`{s}`: `{ctr}` is not a port number"))?;
    Ok(Port {
        ip,
        host,
        container: format!("{c}/{proto}"),
    })
}

/// Why `v` cannot be a volume: `SOURCE:/path` or `SOURCE:/path:ro|rw`.
pub fn volume_problem(v: &str) -> Option<&'static str> {
    let parts: Vec<&str> = v.split(':').collect();
    let ok = match parts.as_slice() {
        [src, dst] => !src.is_empty() && dst.starts_with('/'),
        [src, dst, opt] => !src.is_empty() && dst.starts_with('/') && ["ro", "rw"].contains(opt),
        _ => false,
    };
    if !ok || v.starts_with('-') || v.chars().any(char::is_control) {
        return Some("`SOURCE:/path` or `SOURCE:/path:ro`");
    }
    None
}

/// The canonical configuration fleet labels a container with: ports and volumes sorted,
/// environment values as the first 16 hex digits of their sha256.
pub fn config_label(
    image: &str,
    command: &[String],
    ports: &[Port],
    env: &[(String, String)],
    volumes: &[String],
    restart: &str,
) -> String {
    let mut p: Vec<String> = ports.iter().map(Port::spec).collect();
    p.sort();
    let mut v = volumes.to_vec();
    v.sort();
    let mut e: Vec<(&String, String)> = env
        .iter()
        .map(|(k, val)| (k, crate::util::sha256_hex(val.as_bytes())[..16].to_string()))
        .collect();
    e.sort();
    let env: serde_json::Map<String, J> = e
        .into_iter()
        .map(|(k, h)| (k.clone(), J::String(h)))
        .collect();
    json!({
        "image": image,
        "command": command,
        "ports": p,
        "env": env,
        "volumes": v,
        "restart": restart,
    })
    .to_string()
}

/// What differs between the label a container has and the one wanted, one phrase each.
pub fn config_diff(have: &str, want: &str) -> Vec<String> {
    let (Ok(h), Ok(w)) = (
        serde_json::from_str::<J>(have),
        serde_json::from_str::<J>(want),
    ) else {
        return vec!["the container was not made by fleet".to_string()];
    };
    let mut out = Vec::new();
    for key in ["image", "command", "ports", "volumes", "restart"] {
        if h.get(key) != w.get(key) {
            let show = |v: Option<&J>| match v {
                Some(J::String(s)) => s.clone(),
                Some(J::Array(a)) if a.is_empty() => "none".to_string(),
                Some(J::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => "-".to_string(),
            };
            out.push(format!("{key} {} → {}", show(h.get(key)), show(w.get(key))));
        }
    }
    let (he, we) = (&h["env"], &w["env"]);
    let mut names: Vec<&String> = he
        .as_object()
        .into_iter()
        .chain(we.as_object())
        .flat_map(|m| m.keys())
        .collect();
    names.sort();
    names.dedup();
    for n in names {
        match (he.get(n), we.get(n)) {
            (Some(a), Some(b)) if a != b => out.push(format!("env {n} changed")),
            (None, Some(_)) => out.push(format!("env {n} added")),
            (Some(_), None) => out.push(format!("env {n} removed")),
            _ => {}
        }
    }
    out
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    name: String,
    state: &'static str,
    /// `docker run` / `docker create` arguments after the verb.
    run: Vec<String>,
    label: String,
}

/// A container name as Docker takes it.
fn is_container_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && s.len() > 1
        && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
}

/// An image reference (`registry:5000/team/app:1.2@sha256:…`).
fn is_image(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/:@-".contains(c))
}

impl Module for DockerContainer {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Args, ArgError> {
        let name = a.req("name")?;
        if !is_container_name(&name) {
            return Err(a.invalid("name", "a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"));
        }
        let state = a
            .one_of("state", &["started", "stopped", "absent"])?
            .unwrap_or("started");
        let image = a.str("image")?;
        if state == "absent" {
            return Ok(Args {
                name,
                state,
                run: Vec::new(),
                label: String::new(),
            });
        }
        let image = image.ok_or_else(|| {
            ArgError::arg(
                "image",
                "module `docker_container`: a container that is not absent needs `image`",
            )
        })?;
        if !is_image(&image) {
            return Err(a.invalid("image", "an image reference such as `nginx:1.27`"));
        }
        let bind = match values::host(a, "bind_address")? {
            Some(b) => Some(b),
            None => inputs.files.var("node").and_then(|n| {
                n.get("bind_address")
                    .and_then(J::as_str)
                    .map(str::to_string)
            }),
        };
        let ports = a
            .str_list("ports")?
            .iter()
            .map(|p| parse_port(p, bind.as_deref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| {
                ArgError::arg(
                    "ports",
                    format!("module `docker_container`: `ports`: {why}"),
                )
            })?;
        let env = a.str_map("env")?;
        for (k, _) in &env {
            values::env_name(a, "env", k)?;
        }
        let volumes = a.str_list("volumes")?;
        for v in &volumes {
            if let Some(why) = volume_problem(v) {
                return Err(ArgError::arg(
                    "volumes",
                    format!("module `docker_container`: `volumes`: `{v}` is not {why}"),
                ));
            }
        }
        let restart = a.one_of("restart_policy", RESTART)?.unwrap_or("no");
        let command = a.str_list("command")?;
        let label = config_label(&image, &command, &ports, &env, &volumes, restart);
        let mut run = vec![
            "--name".to_string(),
            name.clone(),
            "--label".to_string(),
            format!("fleet.config={label}"),
            "--restart".to_string(),
            restart.to_string(),
        ];
        for p in &ports {
            run.extend(["-p".to_string(), p.spec()]);
        }
        for (k, v) in &env {
            run.extend(["-e".to_string(), format!("{k}={v}")]);
        }
        for v in &volumes {
            run.extend(["-v".to_string(), v.clone()]);
        }
        run.push(image);
        run.extend(command);
        Ok(Args {
            name,
            state,
            run,
            label,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("N", a.name.as_str())
            .set("WANT", a.state)
            .set("CFG", a.label.as_str())
            .args(a.run.iter())
            .code(concat!(
                "command -v docker >/dev/null || fail \"docker is not installed on the host\"\n",
                "if out=$(docker inspect --type container --format '{{.State.Running}} {{index .Config.Labels \"fleet.config\"}}' \"$N\" 2>&1); then exists=1; running=${out%% *}; have=${out#* }\n",
                "else case $out in *'No such container'*|*'No such object'*) exists=0;; *) fail \"docker inspect $N failed: $out\";; esac; fi\n",
                "if [ \"$WANT\" = absent ]; then\n",
                "  [ \"$exists\" = 1 ] || finish 0\n",
                "  changed=1; [ \"$CHECK\" = 1 ] && finish 0\n",
                "  out=$(docker rm -f \"$N\" 2>&1) || fail \"docker rm $N failed: $out\"; finish 0\n",
                "fi\n",
                "if [ \"$exists\" = 1 ] && [ \"$have\" = \"$CFG\" ]; then\n",
                "  if [ \"$WANT\" = started ] && [ \"$running\" != true ]; then changed=1; [ \"$CHECK\" = 1 ] || { out=$(docker start \"$N\" 2>&1) || fail \"docker start $N failed: $out\"; }; fi\n",
                "  if [ \"$WANT\" = stopped ] && [ \"$running\" = true ]; then changed=1; [ \"$CHECK\" = 1 ] || { out=$(docker stop \"$N\" 2>&1) || fail \"docker stop $N failed: $out\"; }; fi\n",
                "  finish 0\n",
                "fi\n",
                "changed=1\n",
                // The old configuration, for the judge to say what differs.
                "[ \"$exists\" = 1 ] && printf 'recreate: %s\\n' \"$have\"\n",
                "[ \"$CHECK\" = 1 ] && finish 0\n",
                "if [ \"$exists\" = 1 ]; then out=$(docker rm -f \"$N\" 2>&1) || fail \"docker rm $N failed: $out\"; fi\n",
                "if [ \"$WANT\" = started ]; then out=$(docker run -d \"$@\" 2>&1); else out=$(docker create \"$@\" 2>&1); fi || fail \"docker could not create $N: $out\"\n",
                "finish 0\n",
            ));
        Ok(Step::of(s))
    }

    fn batchable(&self, _: &Args) -> bool {
        // Creating a container may pull its image: an exec of its own.
        false
    }

    fn judge(&self, a: &Args, r: &Reported, _mode: Mode) -> Judged {
        let note = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("recreate: "))
            .map(|have| format!("recreated: {}", config_diff(have, &a.label).join("; ")));
        Judged {
            changed: r.changed,
            failed: None,
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_bind_to_the_fleet_address_unless_they_name_one() {
        let p = parse_port("8080:80", Some("10.0.0.5")).expect("port");
        assert_eq!(p.spec(), "10.0.0.5:8080:80/tcp");
        assert_eq!(
            parse_port("127.0.0.1:53:53/udp", None).expect("ip").spec(),
            "127.0.0.1:53:53/udp"
        );
        assert!(
            parse_port("8080:80", None)
                .expect_err("an error")
                .contains("no fleet IP")
        );
        assert!(
            parse_port("80", Some("10.0.0.5")).is_err(),
            "a random host port"
        );
        assert!(
            parse_port("x:8080:80", None)
                .expect_err("an error")
                .contains("not an IPv4")
        );
        assert!(parse_port("8080:80/icmp", Some("1.2.3.4")).is_err());
        assert!(parse_port("70000:80", Some("1.2.3.4")).is_err());
    }

    #[test]
    fn volumes() {
        assert_eq!(volume_problem("/srv/data:/data"), None);
        assert_eq!(volume_problem("pgdata:/var/lib/postgresql/data:ro"), None);
        for bad in ["/data", "a:b", "/x:/y:rx", "-v:/x", ":/x"] {
            assert!(volume_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn labels_are_canonical_and_diffs_say_what_changed() {
        let p = |s: &str| parse_port(s, Some("10.0.0.5")).expect("port");
        let env = |v: &str| {
            vec![
                ("B".to_string(), "2".to_string()),
                ("A".to_string(), v.to_string()),
            ]
        };
        let one = config_label(
            "nginx:1.26",
            &[],
            &[p("8080:80"), p("8443:443")],
            &env("secret-1"),
            &["/a:/a".into()],
            "no",
        );
        let same = config_label(
            "nginx:1.26",
            &[],
            &[p("8443:443"), p("8080:80")],
            &[env("secret-1")[1].clone(), env("secret-1")[0].clone()],
            &["/a:/a".into()],
            "no",
        );
        assert_eq!(one, same, "order does not matter");
        assert!(
            !one.contains("secret-1"),
            "env values only as hashes: {one}"
        );
        let two = config_label(
            "nginx:1.27",
            &[],
            &[p("9090:80")],
            &env("secret-2"),
            &[],
            "always",
        );
        assert_eq!(
            config_diff(&one, &two),
            vec![
                "image nginx:1.26 → nginx:1.27",
                "ports 10.0.0.5:8080:80/tcp 10.0.0.5:8443:443/tcp → 10.0.0.5:9090:80/tcp",
                "volumes /a:/a → none",
                "restart no → always",
                "env A changed",
            ]
        );
        assert_eq!(
            config_diff("", &two),
            vec!["the container was not made by fleet"]
        );
        assert!(config_diff(&one, &same).is_empty());
    }
}
