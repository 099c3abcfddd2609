//! Mode, owner and group of a path a task manages (`mode`, `owner`, `group` arguments).

use crate::modules::args::{ArgError, ArgReader};
use crate::modules::values;
use crate::script::Script;

/// Wanted attributes; each is left alone when not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// File mode bits.
    pub mode: Option<u32>,
    /// Owning user (name or uid).
    pub owner: Option<String>,
    /// Owning group (name or gid).
    pub group: Option<String>,
}

impl Attrs {
    /// Reads `mode`, `owner` and `group`.
    pub fn decode(a: &ArgReader<'_>) -> Result<Attrs, ArgError> {
        Ok(Attrs {
            mode: a.mode("mode")?,
            owner: values::account(a, "owner")?,
            group: values::account(a, "group")?,
        })
    }

    /// Reads `mode` only.
    pub fn decode_mode(a: &ArgReader<'_>) -> Result<Attrs, ArgError> {
        Ok(Attrs {
            mode: a.mode("mode")?,
            ..Attrs::default()
        })
    }

    /// True when none is given.
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.owner.is_none() && self.group.is_none()
    }

    /// The mode as `stat` prints it (`644`, `4755`).
    pub fn mode_digits(&self) -> Option<String> {
        self.mode.map(|m| format!("{m:o}"))
    }

    /// The umask under which the shell creates a file with exactly the mode (`0666 & !umask`),
    /// when the mode has no execute or special bits.
    pub fn umask(&self) -> Option<String> {
        let m = self.mode?;
        (m & 0o7111 == 0).then(|| format!("{:03o}", 0o777 & !m))
    }

    /// Binds `M`, `O`, `G` (empty when not given).
    pub fn bind(&self, s: &mut Script) {
        s.set_opt("M", self.mode_digits())
            .set_opt("O", self.owner.as_deref())
            .set_opt("G", self.group.as_deref());
    }

    /// Brings `$P`'s attributes to the wanted ones (a change; none in check mode). Looks once
    /// (`fleet_stat`, the exec's lookup while nothing has changed).
    pub fn converge(&self, s: &mut Script) {
        if self.is_empty() {
            return;
        }
        s.code("fleet_stat \"$P\"; set -- $st\n");
        if self.mode.is_some() {
            s.code("if [ \"$1\" != \"$M\" ]; then changed=1; [ \"$CHECK\" = 1 ] || chmod -- \"$M\" \"$P\" || fail \"cannot set the mode of $P\"; fi\n");
        }
        if self.owner.is_some() {
            s.code("if [ \"$2\" != \"$O\" ] && [ \"$4\" != \"$O\" ]; then changed=1; [ \"$CHECK\" = 1 ] || chown -- \"$O\" \"$P\" || fail \"cannot change the owner of $P\"; fi\n");
        }
        if self.group.is_some() {
            s.code("if [ \"$3\" != \"$G\" ] && [ \"$5\" != \"$G\" ]; then changed=1; [ \"$CHECK\" = 1 ] || chgrp -- \"$G\" \"$P\" || fail \"cannot change the group of $P\"; fi\n");
        }
    }

    /// Sets the attributes of `$A`, a path the task has just created (no need to look);
    /// `mode_done` when the umask already gave the mode.
    pub fn fresh(&self, s: &mut Script, mode_done: bool) {
        if self.mode.is_some() && !mode_done {
            s.code("chmod -- \"$M\" \"$A\" || fail \"cannot set the mode of $A\"\n");
        }
        match (&self.owner, &self.group) {
            (Some(_), Some(_)) => {
                s.code("chown -- \"$O:$G\" \"$A\" || fail \"cannot change the owner of $A\"\n");
            }
            (Some(_), None) => {
                s.code("chown -- \"$O\" \"$A\" || fail \"cannot change the owner of $A\"\n");
            }
            (None, Some(_)) => {
                s.code("chgrp -- \"$G\" \"$A\" || fail \"cannot change the group of $A\"\n");
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_gives_the_mode_only_without_execute_or_special_bits() {
        let u = |m| {
            Attrs {
                mode: Some(m),
                ..Attrs::default()
            }
            .umask()
        };
        assert_eq!(u(0o640).as_deref(), Some("137"));
        assert_eq!(u(0o600).as_deref(), Some("177"));
        assert_eq!(u(0o644).as_deref(), Some("133"));
        assert_eq!(u(0o755), None);
        assert_eq!(u(0o4644), None);
        assert_eq!(Attrs::default().umask(), None);
    }
}
