//! `fleet_tls`: HQ's certificate and key on the HQ node, issued by the controller from the
//! fleet CA. The controller keeps its copy in `.fleet/tls/hq.pem` and `hq.key`; when that copy
//! is missing, no longer covers HQ's names, is not signed by the repo's CA, or expires within
//! `renew_within` days, the task issues a new one (kept on the controller only once a real
//! run placed it). A fresh certificate already in place changes nothing.

use std::path::PathBuf;

use crate::facts::Facts;
use crate::hq::tls;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Reported, Step};
use crate::script::Script;
use crate::secret::Secret;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct FleetTls;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "fleet_tls",
    summary: "Place HQ's certificate (issued by the fleet CA on the controller, renewed before it expires) and its key (0600).",
    free_form: None,
    args: &[
        arg(
            "cert",
            ArgKind::Str,
            false,
            "where HQ's certificate goes (default /var/lib/fleet/tls/hq.pem)",
        ),
        arg(
            "key",
            ArgKind::Str,
            false,
            "where HQ's private key goes, mode 0600 (default /var/lib/fleet/tls/hq.key)",
        ),
        arg(
            "days",
            ArgKind::Int,
            false,
            "validity of a newly issued certificate, in days (default 90)",
        ),
        arg(
            "renew_within",
            ArgKind::Int,
            false,
            "issue a new certificate when the current one expires within this many days (default 30)",
        ),
        arg(
            "user",
            ArgKind::Str,
            false,
            "the account HQ runs as, owner of the key (default: the `fleet_user` variable, else root)",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    cert_file: String,
    key_file: String,
    user: String,
    root: PathBuf,
    /// The certificate and key to place, and why they are new (when they are).
    issued: Result<Issue, String>,
}

#[derive(Debug, Clone)]
struct Issue {
    cert: String,
    key: Secret<String>,
    renewed: Option<String>,
}

fn plain_path(a: &ArgReader<'_>, key: &'static str, default: &str) -> Result<String, ArgError> {
    let p = a.str(key)?.unwrap_or_else(|| default.to_string());
    let ok = p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/@+-".contains(c));
    if ok {
        Ok(p)
    } else {
        Err(a.invalid(key, "an absolute file path of letters, digits and `._/@+-`"))
    }
}

fn days(a: &ArgReader<'_>, key: &'static str, default: u32) -> Result<u32, ArgError> {
    match a.uint(key)? {
        None => Ok(default),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=825).contains(n))
            .ok_or_else(|| a.invalid(key, "a number of days from 1 to 825")),
    }
}

const PLACE: &str = concat!(
    "[ -n \"$PROBLEM\" ] && { [ \"$CHECK\" = 1 ] && { changed=1; finish 0; }; fail \"$PROBLEM\"; }\n",
    "CD=${CF%/*}; fleet_dir \"${CD:-/}\" \"\"\n",
    "KD=${KF%/*}; [ \"${KD:-/}\" = \"${CD:-/}\" ] || fleet_dir \"${KD:-/}\" \"\"\n",
    "P=$KF; C=$KEY; M=600; O=$U; fleet_put; [ \"$put\" = 1 ] && changed=1\n",
    "P=$CF; C=$CERT; M=644; O=; fleet_put; [ \"$put\" = 1 ] && changed=1\n",
    "if [ \"$RENEW\" = 1 ]; then changed=1; [ \"$CHECK\" = 1 ] || more=1; fi\n",
    "finish 0\n",
);

impl Module for FleetTls {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Args, ArgError> {
        let cert_file = plain_path(a, "cert", tls::NODE_HQ_CERT)?;
        let key_file = plain_path(a, "key", tls::NODE_HQ_KEY)?;
        let valid = days(a, "days", tls::HQ_DAYS)?;
        let within = days(a, "renew_within", tls::RENEW_WITHIN_DAYS)?;
        if within >= valid {
            return Err(a.invalid("renew_within", "fewer days than `days`"));
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
        let var_str = |var: &str, field: &str| -> Option<String> {
            inputs
                .files
                .var(var)
                .and_then(|v| v.get(field).and_then(|s| s.as_str().map(str::to_string)))
        };
        let names = tls::names_for(
            var_str("fleet", "hq_url").as_deref(),
            var_str("node", "host").as_deref(),
            var_str("node", "address").as_deref(),
        );
        let root = inputs.files.repo_root().to_path_buf();
        let renew_within = std::time::Duration::from_secs(u64::from(within) * 86_400);
        // Problems of the controller's files fail the task when it runs (a plan still shows it).
        let issued = (|| -> Result<Issue, tls::TlsError> {
            let (cert, key, renewed) = match tls::hq_due(&root, &names, renew_within)? {
                None => {
                    let read = |rel: &str| {
                        let p = root.join(rel);
                        std::fs::read_to_string(&p).map_err(|source| tls::TlsError::Io {
                            action: "read",
                            path: p,
                            source,
                        })
                    };
                    (read(tls::HQ_CERT)?, read(tls::HQ_KEY)?, None)
                }
                Some(why) => {
                    let (c, k) = tls::issue(&root, &names, valid)?;
                    (c, k, Some(why))
                }
            };
            crate::secret::remember(key.trim());
            Ok(Issue {
                cert,
                key: Secret::new(key),
                renewed,
            })
        })()
        .map_err(|e| e.to_string());
        Ok(Args {
            cert_file,
            key_file,
            user,
            root,
            issued,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("CF", a.cert_file.as_str())
            .set("KF", a.key_file.as_str())
            .set("U", a.user.as_str());
        match &a.issued {
            Ok(i) => {
                s.set("PROBLEM", "")
                    .set("CERT", i.cert.as_str())
                    .set("KEY", &i.key)
                    .set("RENEW", i.renewed.is_some());
            }
            Err(e) => {
                s.set("PROBLEM", e.as_str())
                    .set("CERT", "")
                    .set("KEY", "")
                    .set("RENEW", false);
            }
        }
        s.code(crate::modules::fleet_agent::HELPERS).code(PLACE);
        Ok(Step::of(s))
    }

    /// After a real run placed a new certificate: the controller keeps it as its copy.
    fn followup(
        &self,
        a: &Args,
        _facts: &Facts,
        first: &Reported,
    ) -> Result<Option<Step>, ArgError> {
        if !first.more {
            return Ok(None);
        }
        let Ok(i) = &a.issued else {
            return Ok(None);
        };
        tls::save_hq(&a.root, &i.cert, i.key.expose())
            .map_err(|e| ArgError::task(format!("HQ's new certificate is in place, but {e}")))?;
        let mut s = Script::new();
        s.code("changed=1\nfinish 0\n");
        Ok(Some(Step::of(s)))
    }

    fn batchable(&self, _: &Args) -> bool {
        false
    }
}
