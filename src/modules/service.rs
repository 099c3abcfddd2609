//! `service`: start, stop, restart or enable a service: systemd on Linux, launchd on macOS
//! (a label's plist in `/Library/LaunchDaemons`).

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Service;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "service",
    summary: "Start, stop, restart or enable a service (systemd on Linux, launchd on macOS).",
    free_form: None,
    args: &[
        arg(
            "name",
            ArgKind::Str,
            true,
            "unit name (systemd) or label (launchd)",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["started", "stopped", "restarted", "reloaded"]),
            false,
            "desired run state",
        ),
        arg("enabled", ArgKind::Bool, false, "start at boot"),
        arg(
            "manager",
            ArgKind::OneOf(&["auto", "systemd", "launchd"]),
            false,
            "default `auto` (from facts)",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    name: String,
    state: Option<&'static str>,
    enabled: Option<bool>,
    manager: Option<&'static str>,
}

impl Module for Service {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let name = values::service(a, "name")?;
        if name.contains('/') {
            return Err(a.invalid("name", "a unit name or label without `/`"));
        }
        Ok(Args {
            name,
            state: a.one_of("state", &["started", "stopped", "restarted", "reloaded"])?,
            enabled: a.bool("enabled")?,
            manager: match a.one_of("manager", &["auto", "systemd", "launchd"])? {
                None | Some("auto") => None,
                m => m,
            },
        })
    }

    fn script(&self, a: &Args, facts: &Facts) -> Result<Step, ArgError> {
        let manager = match a.manager {
            Some(m) => m,
            None => match facts.init.as_deref() {
                Some("launchd") => "launchd",
                Some("systemd") => "systemd",
                _ => {
                    return Err(ArgError::task(
                        "the host runs neither systemd nor launchd (set `manager:` to say which)",
                    ));
                }
            },
        };
        let mut s = Script::new();
        s.set("N", a.name.as_str());
        if manager == "systemd" {
            s.code("command -v systemctl >/dev/null || fail \"systemctl not found\"\nactive=$(systemctl is-active -- \"$N\" 2>/dev/null)\n");
            match a.state {
                Some("started") => s.code("if [ \"$active\" != active ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl start -- \"$N\" || fail \"systemctl start $N failed\"; fi\n"),
                Some("stopped") => s.code("if [ \"$active\" = active ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl stop -- \"$N\" || fail \"systemctl stop $N failed\"; fi\n"),
                Some("restarted") => s.code("changed=1; [ \"$CHECK\" = 1 ] || systemctl restart -- \"$N\" || fail \"systemctl restart $N failed\"\n"),
                Some(_) => s.code("changed=1; [ \"$CHECK\" = 1 ] || systemctl reload -- \"$N\" || fail \"systemctl reload $N failed\"\n"),
                None => &mut s,
            };
            match a.enabled {
                Some(true) => s.code("if [ \"$(systemctl is-enabled -- \"$N\" 2>/dev/null)\" != enabled ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl enable -- \"$N\" >/dev/null 2>&1 || fail \"systemctl enable $N failed\"; fi\n"),
                Some(false) => s.code("if [ \"$(systemctl is-enabled -- \"$N\" 2>/dev/null)\" = enabled ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl disable -- \"$N\" >/dev/null 2>&1 || fail \"systemctl disable $N failed\"; fi\n"),
                None => &mut s,
            };
        } else {
            s.code("PL=\"/Library/LaunchDaemons/$N.plist\"\nloaded=0; launchctl print \"system/$N\" >/dev/null 2>&1 && loaded=1\n");
            match a.state {
                Some("started") => s.code("if [ \"$loaded\" = 0 ]; then changed=1; [ \"$CHECK\" = 1 ] || launchctl bootstrap system \"$PL\" || fail \"launchctl bootstrap $PL failed\"; fi\n"),
                Some("stopped") => s.code("if [ \"$loaded\" = 1 ]; then changed=1; [ \"$CHECK\" = 1 ] || launchctl bootout \"system/$N\" || fail \"launchctl bootout $N failed\"; fi\n"),
                Some(_) => s.code("changed=1; if [ \"$CHECK\" != 1 ]; then if [ \"$loaded\" = 1 ]; then launchctl kickstart -k \"system/$N\"; else launchctl bootstrap system \"$PL\"; fi || fail \"restarting $N failed\"; fi\n"),
                None => &mut s,
            };
            match a.enabled {
                Some(true) => s.code("if launchctl print-disabled system 2>/dev/null | grep -Fq \"\\\"$N\\\" => disabled\"; then changed=1; [ \"$CHECK\" = 1 ] || launchctl enable \"system/$N\" || fail \"launchctl enable $N failed\"; fi\n"),
                Some(false) => s.code("if launchctl print-disabled system 2>/dev/null | grep -Fq \"\\\"$N\\\" => enabled\"; then changed=1; [ \"$CHECK\" = 1 ] || launchctl disable \"system/$N\" || fail \"launchctl disable $N failed\"; fi\n"),
                None => &mut s,
            };
        }
        s.code("finish 0\n");
        Ok(Step::of(s))
    }
}
