//! What a run reports: one event per task and host, play starts and a recap per host. The
//! human reporter and `--json` (one JSON object per line) both read these.

use serde::Serialize;

/// A task's outcome on a host.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to change.
    Ok,
    /// Changed (or, with `--check`, would change).
    Changed,
    /// Failed.
    Failed,
    /// Not run (`when`, tags, creates/removes).
    Skipped,
    /// The host could not be reached.
    Unreachable,
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `play`, `batch`, `task`, `handler`, `stop`, `recap`.
    pub event: &'static str,
    /// Host (empty for `play`).
    pub host: String,
    /// Task name (the play's name for `play`).
    pub task: String,
    /// Outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The loop item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<serde_json::Value>,
    /// Why it failed or was skipped, or what `debug` printed (secrets masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Unified diff of a file (secrets masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Milliseconds the task took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// Hosts in the play (`play`), or the counts (`recap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<usize>,
    /// Per-host counts (`recap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<HostRecap>,
    /// A command's exit status, standard output and error, when the run shows output
    /// (ad-hoc commands; secrets masked, `***` whole when the command read a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rc: Option<i64>,
    /// See [`Event::rc`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// See [`Event::rc`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// Counts per host.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct HostRecap {
    /// Tasks with nothing to change.
    pub ok: u32,
    /// Tasks that changed something.
    pub changed: u32,
    /// Failed tasks.
    pub failed: u32,
    /// Skipped tasks.
    pub skipped: u32,
    /// 1 when the host could not be reached.
    pub unreachable: u32,
    /// Blocks whose failure a `rescue` took (those failures are not counted in `failed`).
    #[serde(skip_serializing_if = "is_zero")]
    pub rescued: u32,
    /// 1 when the run stopped (`max_fail_percentage`) before this host's batch started.
    #[serde(skip_serializing_if = "is_zero")]
    pub not_reached: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl HostRecap {
    /// Counts one outcome.
    pub fn count(&mut self, s: Status) {
        match s {
            Status::Ok => self.ok += 1,
            Status::Changed => self.changed += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
            Status::Unreachable => self.unreachable = 1,
        }
    }

    /// Adds another recap.
    pub fn add(&mut self, o: &HostRecap) {
        self.ok += o.ok;
        self.changed += o.changed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.unreachable = self.unreachable.max(o.unreachable);
        self.rescued += o.rescued;
        self.not_reached = self.not_reached.max(o.not_reached);
    }
}

impl Event {
    /// Masks every known secret value in what the event shows (task name, item, message,
    /// diff): the second line of defence behind rendering, which already shows `***` for any
    /// value that read a secret.
    pub fn mask_secrets(&mut self) {
        let m = |s: &mut String| {
            if let std::borrow::Cow::Owned(v) = crate::secret::mask(s) {
                *s = v;
            }
        };
        m(&mut self.task);
        if let Some(x) = self.msg.as_mut() {
            m(x);
        }
        if let Some(x) = self.diff.as_mut() {
            m(x);
        }
        if let Some(x) = self.stdout.as_mut() {
            m(x);
        }
        if let Some(x) = self.stderr.as_mut() {
            m(x);
        }
        if let Some(i) = self.item.as_mut() {
            crate::secret::mask_json(i);
        }
    }

    fn base(event: &'static str, host: &str, task: &str) -> Event {
        Event {
            event,
            host: host.to_string(),
            task: task.to_string(),
            status: None,
            module: None,
            item: None,
            msg: None,
            diff: None,
            ms: None,
            hosts: None,
            counts: None,
            rc: None,
            stdout: None,
            stderr: None,
        }
    }

    /// A play starts.
    pub fn play(name: &str, hosts: usize) -> Event {
        Event {
            hosts: Some(hosts),
            ..Event::base("play", "", name)
        }
    }

    /// A task finished on a host.
    pub fn task(kind: &'static str, host: &str, task: &str, module: &str, status: Status) -> Event {
        Event {
            status: Some(status),
            module: Some(module.to_string()),
            ..Event::base(kind, host, task)
        }
    }

    /// The host could not be reached.
    pub fn unreachable(host: &str, msg: String) -> Event {
        Event {
            status: Some(Status::Unreachable),
            msg: Some(msg),
            ..Event::base("task", host, "connect")
        }
    }

    /// A batch of a rolling play (`serial`) starts.
    pub fn batch(play: &str, n: usize, of: usize, hosts: &[String]) -> Event {
        Event {
            hosts: Some(hosts.len()),
            msg: Some(format!("batch {n} of {of}: {}", hosts.join(", "))),
            ..Event::base("batch", "", play)
        }
    }

    /// The run stops (a batch failed beyond `max_fail_percentage`): why.
    pub fn stop(play: &str, msg: String) -> Event {
        Event {
            msg: Some(msg),
            ..Event::base("stop", "", play)
        }
    }

    /// A host's totals.
    pub fn recap(host: &str, r: &HostRecap) -> Event {
        Event {
            counts: Some(*r),
            ..Event::base("recap", host, "")
        }
    }
}
