//! `fleet_agent`: the fleet agent on a node: its binary (uploaded only when its sha256
//! differs, in a second exec, checked before it replaces the old one), the node's token
//! (0600, owned by the account the agent runs as), its log directory, the systemd unit or
//! launchd plist from the `services/` templates, and the service running, restarted when any
//! of those changed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::facts::Facts;
use crate::modules::agent_binary::{Choice, Pick};
use crate::modules::attrs::Attrs;
use crate::modules::place::Placement;
use crate::modules::{ArgError, ArgReader, FileContent, Inputs, Module, Reported, Step, values};
use crate::script::Script;
use crate::secret::Secret;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct FleetAgent;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "fleet_agent",
    summary: "Install the fleet agent with its token (0600) and service unit, and start it.",
    free_form: None,
    args: &[
        arg(
            "hq_url",
            ArgKind::Str,
            true,
            "HQ registry URL the agent reports to",
        ),
        arg(
            "token_file",
            ArgKind::Str,
            false,
            "where the node's token is placed (default /etc/fleet/agent.token)",
        ),
        arg(
            "interval",
            ArgKind::Str,
            false,
            "heartbeat interval (default 60s)",
        ),
        arg(
            "binary",
            ArgKind::Str,
            false,
            "where the agent binary goes (default /usr/local/bin/fleet)",
        ),
        arg(
            "source",
            ArgKind::Str,
            false,
            "the fleet binary to install, built for the node's OS and arch (default: this controller's own, when they match; empty means the default)",
        ),
        arg(
            "dist",
            ArgKind::Str,
            false,
            "a directory of release binaries named fleet-<os>-<arch> on the controller (default dist/ in the repo), used for a node whose platform has one",
        ),
        arg(
            "url",
            ArgKind::Str,
            false,
            "a release download URL, `{os}` and `{arch}` standing for the node's (linux|macos, x86_64|aarch64): downloaded on the node, checked against `sha256`, installed atomically",
        ),
        arg(
            "sha256",
            ArgKind::Any,
            false,
            "for `url`: a mapping `<os>-<arch>: <sha256>`, or the path of the release's SHA256SUMS file on the controller",
        ),
        arg(
            "token_source",
            ArgKind::Str,
            false,
            "the node's token on the controller (default .fleet/tokens/NODE.token)",
        ),
        arg(
            "user",
            ArgKind::Str,
            false,
            "the account the agent runs as, owner of its token and log directory (default: the `fleet_user` variable, else root)",
        ),
        arg(
            "ca_source",
            ArgKind::Str,
            false,
            "for an https:// `hq_url`: the fleet CA on the controller (default tls/ca.pem), placed at /etc/fleet/ca.pem; the agent trusts only it",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    binary: String,
    /// Where the binary comes from.
    choice: Choice,
    /// The repo's root, which relative paths are under.
    root: PathBuf,
    token_file: String,
    token: Option<Secret<String>>,
    token_source: PathBuf,
    user: String,
    unit_systemd: String,
    unit_launchd: String,
    /// For an https:// HQ: the fleet CA's file on the controller and its content (when read).
    ca: Option<(PathBuf, Option<String>)>,
}

const LOG_DIR: &str = "/var/log/fleet";

/// An absolute path that can stand in a unit file and a plist as it is.
fn plain_path(a: &ArgReader<'_>, key: &'static str, default: &str) -> Result<String, ArgError> {
    let p = a.str(key)?.unwrap_or_else(|| default.to_string());
    let ok = p.starts_with('/')
        && p.len() > 1
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/@+-".contains(c));
    if ok {
        Ok(p)
    } else {
        Err(a.invalid(key, "an absolute path of letters, digits and `._/@+-`"))
    }
}

/// `fleet_put`: places `$C` at `$P` with mode `$M` and owner `$O` (when not empty); `put=1`
/// when it changed something (or would). `fleet_dir DIR OWNER`: a 0755 directory.
pub(crate) const HELPERS: &str = concat!(
    "fleet_put() { put=0\n",
    "  case \"$P\" in */*) D=${P%/*}; D=${D:-/};; *) D=.;; esac\n",
    "  if [ ! -d \"$D\" ]; then [ \"$CHECK\" = 1 ] && { put=1; return 0; }; fail \"directory $D does not exist\"; fi\n",
    "  [ -d \"$P\" ] && fail \"$P is a directory\"\n",
    "  if [ -e \"$P\" ] && printf '%s' \"$C\" | cmp -s - \"$P\"; then\n",
    "    fleet_stat \"$P\"; set -- $st\n",
    "    if [ \"$1\" != \"$M\" ] || { [ -n \"$O\" ] && [ \"$2\" != \"$O\" ] && [ \"$4\" != \"$O\" ]; }; then put=1\n",
    "      [ \"$CHECK\" = 1 ] || { chmod -- \"$M\" \"$P\" && { [ -z \"$O\" ] || chown -- \"$O\" \"$P\"; }; } || fail \"cannot set the mode and owner of $P\"; fi\n",
    "    return 0\n",
    "  fi\n",
    "  put=1; [ \"$CHECK\" = 1 ] && return 0\n",
    "  t=\"$D/.fleet.$FN.$FU\"; fleet_tmp_trap\n",
    "  (umask 077; set -C; printf '%s' \"$C\" > \"$t\") || fail \"cannot write in $D\"\n",
    "  { chmod -- \"$M\" \"$t\" && { [ -z \"$O\" ] || chown -- \"$O\" \"$t\"; }; } || fail \"cannot set the mode and owner of $t\"\n",
    "  mv -f -- \"$t\" \"$P\" || fail \"cannot replace $P\"; trap - EXIT\n",
    "}\n",
    "fleet_fetch() { BD=${BIN%/*}; BD=${BD:-/}\n",
    "  [ -d \"$BD\" ] || mkdir -p -- \"$BD\" || fail \"cannot create $BD\"; [ -d \"$BIN\" ] && fail \"$BIN is a directory\"\n",
    "  t=\"$BD/.fleet.$FN.$FU\"; fleet_tmp_trap; rm -f -- \"$t\"\n",
    "  if command -v curl >/dev/null 2>&1; then curl -fsSL -g --proto '=http,https' --retry 2 --connect-timeout 30 --speed-time 60 --speed-limit 1024 -o \"$t\" \"$DL\" || fail \"cannot download $DL\"\n",
    "  elif command -v wget >/dev/null 2>&1; then wget -q -t 2 -T 60 -O \"$t\" \"$DL\" || fail \"cannot download $DL\"\n",
    "  else fail \"neither curl nor wget on this node to download $DL\"; fi\n",
    // A byte to the controller: when the run was stopped meanwhile, the write fails and the
    // shell ends here (SIGPIPE), the partial file removed, instead of installing unattended.
    "  printf '\\n' || exit 1\n",
    "  fleet_sum \"$t\"; [ \"$sum\" = \"$SUM\" ] || fail \"$DL has sha256 $sum, not the expected $SUM: not installed\"\n",
    "  chmod 755 \"$t\" || fail \"cannot set the mode of $t\"; mv -f -- \"$t\" \"$BIN\" || fail \"cannot replace $BIN\"; trap - EXIT\n",
    "}\n",
    "fleet_dir() {\n",
    "  if [ ! -d \"$1\" ]; then changed=1; [ \"$CHECK\" = 1 ] && return 0\n",
    "    mkdir -p -m 755 -- \"$1\" || fail \"cannot create $1\"; [ -z \"$2\" ] || chown -- \"$2\" \"$1\" || fail \"cannot change the owner of $1\"; return 0; fi\n",
    "  fleet_stat \"$1\"; set -- \"$1\" \"$2\" $st\n",
    "  if [ \"$3\" != 755 ]; then changed=1; [ \"$CHECK\" = 1 ] || chmod -- 755 \"$1\" || fail \"cannot set the mode of $1\"; fi\n",
    "  if [ -n \"$2\" ] && [ \"$4\" != \"$2\" ] && [ \"$6\" != \"$2\" ]; then changed=1; [ \"$CHECK\" = 1 ] || chown -- \"$2\" \"$1\" || fail \"cannot change the owner of $1\"; fi\n",
    "}\n",
);

const PLACE_ALL: &str = concat!(
    "[ \"$HCA\" = 2 ] && [ \"$CHECK\" != 1 ] && fail \"no fleet CA at $CASRC on the controller, and HQ is https: run \\`fleet tls init\\` there (agents trust only the fleet CA)\"\n",
    "[ \"$HT\" = 1 ] || [ \"$CHECK\" = 1 ] || fail \"no token for this node at $TSRC on the controller: issue one with \\`fleet token issue NODE --out $TSRC\\` against HQ's store (fleet provision does it when HQ's store is local)\"\n",
    "bin=0; if [ -f \"$BIN\" ]; then fleet_sum \"$BIN\"; [ \"$sum\" = \"$SUM\" ] || bin=1; else bin=1; fi\n",
    "[ \"$bin\" = 1 ] && changed=1\n",
    // A release download comes first: when it fails (or the run is stopped) nothing else of
    // the agent has changed, so the next run still sees every change and restarts for it.
    "if [ \"$bin\" = 1 ] && [ \"$CHECK\" != 1 ] && [ -n \"$DL\" ]; then fleet_fetch; fi\n",
    "TD=${TF%/*}; fleet_dir \"${TD:-/}\" \"\"\n",
    "fleet_dir \"$LOGD\" \"$U\"\n",
    "UD=${UF%/*}; if [ ! -d \"${UD:-/}\" ]; then changed=1; [ \"$CHECK\" = 1 ] || mkdir -p -- \"${UD:-/}\" || fail \"cannot create ${UD:-/}\"; fi\n",
    "tok=1; if [ \"$HT\" = 1 ]; then P=$TF; C=$TOK; M=600; O=$U; fleet_put; tok=$put; fi\n",
    "[ \"$tok\" = 1 ] && changed=1\n",
    "ca=0; if [ \"$HCA\" = 1 ]; then CAD=${CAF%/*}; [ \"${CAD:-/}\" = \"${TD:-/}\" ] || fleet_dir \"${CAD:-/}\" \"\"; P=$CAF; C=$CA; M=644; O=; fleet_put; ca=$put; elif [ \"$HCA\" = 2 ]; then ca=1; fi\n",
    "[ \"$ca\" = 1 ] && changed=1\n",
    "P=$UF; C=$UC; M=644; O=; fleet_put; unit=$put; [ \"$unit\" = 1 ] && changed=1\n",
    "if [ \"$bin\" = 1 ] && [ \"$CHECK\" != 1 ] && [ -z \"$DL\" ]; then more=1; finish 0; fi\n",
    "restart=0; { [ \"$bin\" = 1 ] || [ \"$tok\" = 1 ] || [ \"$unit\" = 1 ] || [ \"$ca\" = 1 ]; } && restart=1\n",
);

const SYSTEMD: &str = concat!(
    "if [ \"$unit\" = 1 ] && [ \"$CHECK\" != 1 ]; then systemctl daemon-reload || fail \"systemctl daemon-reload failed\"; fi\n",
    "if [ \"$restart\" = 1 ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl restart -- \"$SVC\" || fail \"systemctl restart $SVC failed\"\n",
    "elif [ \"$(systemctl is-active -- \"$SVC\" 2>/dev/null)\" != active ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl start -- \"$SVC\" || fail \"systemctl start $SVC failed\"; fi\n",
    "if [ \"$(systemctl is-enabled -- \"$SVC\" 2>/dev/null)\" != enabled ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl enable -- \"$SVC\" >/dev/null 2>&1 || fail \"systemctl enable $SVC failed\"; fi\n",
    "finish 0\n",
);

const LAUNCHD: &str = concat!(
    "loaded=0; launchctl print \"system/$SVC\" >/dev/null 2>&1 && loaded=1\n",
    "if [ \"$restart\" = 1 ]; then changed=1; if [ \"$CHECK\" != 1 ]; then\n",
    "  if [ \"$loaded\" = 1 ] && [ \"$unit\" = 1 ]; then launchctl bootout \"system/$SVC\" 2>/dev/null; loaded=0; fi\n",
    "  if [ \"$loaded\" = 1 ]; then launchctl kickstart -k \"system/$SVC\"; else launchctl bootstrap system \"$UF\"; fi || fail \"restarting $SVC failed\"; fi\n",
    "elif [ \"$loaded\" = 0 ]; then changed=1; [ \"$CHECK\" = 1 ] || launchctl bootstrap system \"$UF\" || fail \"launchctl bootstrap $UF failed\"; fi\n",
    "if launchctl print-disabled system 2>/dev/null | grep -Fq \"\\\"$SVC\\\" => disabled\"; then changed=1; [ \"$CHECK\" = 1 ] || launchctl enable \"system/$SVC\" || fail \"launchctl enable $SVC failed\"; fi\n",
    "finish 0\n",
);

/// A binary on the controller with its sha256, read once per run (it is large, and every
/// host of a play may install it).
type Loaded = Arc<(Arc<[u8]>, String)>;

fn load_binary(path: &std::path::Path) -> std::io::Result<Loaded> {
    static CACHE: Mutex<Vec<(PathBuf, std::time::SystemTime, Loaded)>> = Mutex::new(Vec::new());
    let modified = std::fs::metadata(path)?.modified()?;
    if let Ok(c) = CACHE.lock()
        && let Some((_, _, l)) = c.iter().find(|(p, m, _)| p == path && *m == modified)
    {
        return Ok(Arc::clone(l));
    }
    let bytes: Arc<[u8]> = Arc::from(std::fs::read(path)?);
    let sum = crate::util::sha256_hex(&bytes);
    let loaded = Arc::new((bytes, sum));
    if let Ok(mut c) = CACHE.lock() {
        c.retain(|(p, _, _)| p != path);
        c.push((path.to_path_buf(), modified, Arc::clone(&loaded)));
    }
    Ok(loaded)
}

impl FleetAgent {
    /// The node's binary, from its facts: see `agent_binary`.
    fn pick(a: &Args, facts: &Facts) -> Result<Pick, ArgError> {
        let (os, arch) = (facts.os.as_deref(), facts.arch.as_deref());
        let picked = a.choice.pick(os, arch).ok_or_else(|| {
            ArgError::task(format!(
                "cannot tell which fleet binary this node needs: its facts say os {} and arch {}",
                os.unwrap_or("?"),
                arch.unwrap_or("?")
            ))
        })?;
        picked.map_err(|m| {
            let m = m.relative_to(&a.root);
            ArgError::arg("source", m.to_string()).help(m.help())
        })
    }

    /// A binary on the controller (not a download), read once per run.
    fn local(pick: &Pick) -> Result<Option<Loaded>, ArgError> {
        let path = match pick {
            Pick::Download { .. } => return Ok(None),
            Pick::File(p) => p.clone(),
            Pick::Controller => std::env::current_exe()
                .map_err(|e| ArgError::task(format!("cannot find fleet's own binary: {e}")))?,
        };
        load_binary(&path)
            .map(Some)
            .map_err(|e| ArgError::arg("source", format!("cannot read {}: {e}", path.display())))
    }

    fn bind_service(s: &mut Script, a: &Args, facts: &Facts) {
        if facts.os.as_deref() == Some("macos") {
            s.set("SVC", "com.fleet.agent")
                .set("UF", "/Library/LaunchDaemons/com.fleet.agent.plist")
                .set("UC", a.unit_launchd.as_str());
        } else {
            s.set("SVC", "fleet-agent")
                .set("UF", "/etc/systemd/system/fleet-agent.service")
                .set("UC", a.unit_systemd.as_str());
        }
    }

    fn service_code(facts: &Facts) -> &'static str {
        if facts.os.as_deref() == Some("macos") {
            LAUNCHD
        } else {
            SYSTEMD
        }
    }
}

impl Module for FleetAgent {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Args, ArgError> {
        let hq_url = values::url(a, "hq_url")?;
        let token_file = plain_path(a, "token_file", "/etc/fleet/agent.token")?;
        let binary = plain_path(a, "binary", "/usr/local/bin/fleet")?;
        let interval = a.str("interval")?.unwrap_or_else(|| "60s".into());
        if crate::spec::task::parse_duration_secs(&interval).is_none_or(|s| s == 0) {
            return Err(a.invalid("interval", "a duration such as `60s`"));
        }
        let user = match a.str("user")? {
            Some(u) => u,
            None => inputs
                .files
                .var("fleet_user")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "root".into()),
        };
        if !crate::spec::task::is_account_name(&user) {
            return Err(a.invalid("user", "an account name"));
        }
        let root = inputs.files.repo_root();
        let choice = Choice::from_values(
            a.any("source"),
            a.any("dist"),
            a.any("url"),
            a.any("sha256"),
            root,
        )
        .map_err(|(key, why)| a.invalid(key, &why))?;
        let token_source = a
            .str("token_source")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                inputs
                    .files
                    .repo_root()
                    .join(".fleet/tokens")
                    .join(format!("{}.token", inputs.node))
            });
        // A check run before `fleet provision` issued the token: placing it is a change.
        let token = std::fs::read_to_string(&token_source).ok().map(|t| {
            let t = t.trim().to_string();
            crate::secret::remember(&t);
            Secret::new(format!("{t}\n"))
        });
        // An https:// HQ: the agent pins the fleet CA, placed next to its token.
        let ca_source = a.str("ca_source")?.filter(|s| !s.is_empty());
        let ca = hq_url.starts_with("https://").then(|| {
            let src = ca_source.map_or_else(
                || inputs.files.repo_root().join(crate::hq::tls::CA_CERT),
                PathBuf::from,
            );
            let text = std::fs::read_to_string(&src).ok();
            (src, text)
        });
        let mut fleet = inputs
            .files
            .var("fleet")
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(f) = fleet.as_object_mut() {
            f.insert("hq_url".into(), serde_json::Value::String(hq_url.clone()));
        }
        let extra = [
            ("agent_binary", serde_json::Value::String(binary.clone())),
            (
                "agent_token_file",
                serde_json::Value::String(token_file.clone()),
            ),
            ("agent_interval", serde_json::Value::String(interval)),
            ("fleet_user", serde_json::Value::String(user.clone())),
            ("fleet", fleet),
        ];
        let text = |src: &str| -> Result<String, ArgError> {
            let c = inputs.files.template(src, &extra)?;
            Ok(String::from_utf8_lossy(&c.bytes).into_owned())
        };
        Ok(Args {
            unit_systemd: text("services/fleet-agent.service.j2")?,
            unit_launchd: text("services/com.fleet.agent.plist.j2")?,
            binary,
            choice,
            root: root.to_path_buf(),
            token_file,
            token,
            token_source,
            user,
            ca,
        })
    }

    fn script(&self, a: &Args, facts: &Facts) -> Result<Step, ArgError> {
        let pick = Self::pick(a, facts)?;
        let mut s = Script::new();
        match (&pick, Self::local(&pick)?) {
            (Pick::Download { url, sha256 }, _) => {
                s.set("SUM", sha256.as_str()).set("DL", url.as_str())
            }
            (_, Some(bin)) => s.set("SUM", bin.1.as_str()).set("DL", ""),
            (_, None) => return Err(ArgError::task("no fleet binary to install")),
        };
        s.set("BIN", a.binary.as_str())
            .set("TF", a.token_file.as_str())
            .set("U", a.user.as_str())
            .set("LOGD", LOG_DIR)
            .set("TSRC", a.token_source.to_string_lossy().as_ref());
        match &a.token {
            Some(t) => s.set("HT", "1").set("TOK", t),
            None => s.set("HT", "0"),
        };
        s.set("CAF", crate::hq::tls::NODE_CA);
        match &a.ca {
            None => s.set("HCA", "0"),
            Some((_, Some(text))) => s.set("HCA", "1").set("CA", text.as_str()),
            Some((src, None)) => s
                .set("HCA", "2")
                .set("CASRC", src.to_string_lossy().as_ref()),
        };
        Self::bind_service(&mut s, a, facts);
        s.code(HELPERS)
            .code(PLACE_ALL)
            .code(Self::service_code(facts));
        Ok(Step::of(s))
    }

    fn followup(
        &self,
        a: &Args,
        facts: &Facts,
        first: &Reported,
    ) -> Result<Option<Step>, ArgError> {
        if !first.more {
            return Ok(None);
        }
        let Some(bin) = Self::local(&Self::pick(a, facts)?)? else {
            return Ok(None);
        };
        let place = Placement {
            dest: a.binary.clone(),
            content: FileContent {
                bytes: Arc::clone(&bin.0),
                secret: false,
            },
            attrs: Attrs {
                mode: Some(0o755),
                ..Attrs::default()
            },
        };
        let mut s = Script::new();
        s.set("BIN", a.binary.as_str()).code(
            "BD=${BIN%/*}; [ -d \"${BD:-/}\" ] || mkdir -p -- \"${BD:-/}\" || fail \"cannot create ${BD:-/}\"\n",
        );
        place.transfer_body(&mut s);
        Self::bind_service(&mut s, a, facts);
        s.code("changed=1; restart=1; unit=1\n")
            .code(Self::service_code(facts));
        Ok(Some(Step {
            script: s,
            stdin: Some(Arc::clone(&bin.0)),
            stat_path: None,
            own_path: false,
        }))
    }

    fn batchable(&self, _: &Args) -> bool {
        false
    }
}
