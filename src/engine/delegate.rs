//! `delegate_to`: a task rendered with its host's variables runs on another host (an
//! inventory node, or `localhost`: the controller). The connection and that host's facts are
//! made once per delegating host and kept until its run ends.

use std::time::Duration;

use crate::connection::ssh::SshConnection;
use crate::connection::{AnyConnection, RunAs, Transport};
use crate::engine::exec;
use crate::engine::host::{Run, is_local, ssh_target};
use crate::engine::outcome::TaskError;
use crate::error::Diagnostic;
use crate::instance::Instance;
use crate::modules::{Action, Mode, Reported};
use crate::spec::playbook::Play;
use crate::spec::task::Task;

use crate::spec::task::is_localhost;

/// The name `delegate_to` uses for the controller.
pub const LOCALHOST: &str = "localhost";

impl Run<'_> {
    /// The host `task` is delegated to for this instance (connected, its facts gathered), or
    /// `None` when it runs here.
    pub(crate) async fn delegate_for(
        &mut self,
        task: &Task,
        inst: &Instance,
    ) -> Result<Option<String>, TaskError> {
        let Some(d) = &task.delegate_to else {
            return Ok(None);
        };
        let what = format!("for host `{}` in task `{}`", self.state.name, task.name);
        let (name, _) = crate::template::render_str(&self.env, &d.value, &inst.ctx, &d.loc, &what)?;
        let name = name.trim().to_string();
        if name == self.state.name {
            return Ok(None);
        }
        let key = if is_localhost(&name) {
            LOCALHOST.to_string()
        } else {
            name
        };
        if self.state.delegates.contains_key(&key) {
            return Ok(Some(key));
        }
        let conn = if key == LOCALHOST {
            AnyConnection::new(Transport::Local(crate::connection::local::LocalConnection))
        } else {
            let Some(node) = self.shared.repo.inventory.nodes.get(&key) else {
                return Err(Diagnostic::error(
                    d.loc.clone(),
                    format!("`delegate_to: {key}` names no node of the inventory"),
                )
                .with_help("name a node, or `localhost` for this machine")
                .into());
            };
            if is_local(self.shared, node) {
                AnyConnection::new(Transport::Local(crate::connection::local::LocalConnection))
            } else {
                let conn = SshConnection::connect(&ssh_target(self.shared, node))
                    .await
                    .map_err(|e| TaskError::Failed(format!("delegate_to `{key}`: {e}")))?;
                AnyConnection::new(Transport::Ssh(conn))
            }
        };
        let facts = crate::facts::probe::gather(&conn)
            .await
            .map_err(|e| TaskError::Failed(format!("delegate_to `{key}`: {e}")))?;
        self.state.delegates.insert(key.clone(), (conn, facts));
        Ok(Some(key))
    }

    /// Runs `action` on the delegate `name` (as the task's account there).
    pub(crate) async fn delegated(
        &self,
        name: &str,
        task: &Task,
        play: &Play,
        action: &dyn Action,
        mode: Mode,
        timeout: Option<Duration>,
    ) -> Result<Result<Reported, String>, TaskError> {
        let Some((conn, facts)) = self.state.delegates.get(name) else {
            return Err(TaskError::Failed(format!(
                "delegate_to `{name}`: not connected"
            )));
        };
        let who = match task.become_as(
            play.become_,
            play.become_user.as_ref().map(|u| u.value.as_str()),
        ) {
            None => RunAs::Login,
            Some(user) => RunAs::Become {
                user,
                login: facts.user.as_deref(),
            },
        };
        exec::action(conn, action, facts, mode, who, timeout).await
    }
}
