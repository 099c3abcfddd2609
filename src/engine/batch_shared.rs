//! What the hosts of one batch share while each runs its own tasks: the `run_once` results
//! (one host runs the task, every host of the batch gets its result) and the `throttle`
//! semaphores (at most N hosts in a task at once). Hosts otherwise never wait for each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value as J;
use tokio::sync::{Semaphore, watch};

use crate::spec::task::Task;

/// A `run_once` task's result, as every host of the batch registers it.
#[derive(Debug, Clone)]
pub struct OnceResult {
    /// The host that ran it.
    pub host: String,
    /// What `register` keeps.
    pub value: J,
    /// Whether it read a secret.
    pub secret: bool,
    /// Whether it failed (and the failure was not ignored).
    pub failed: bool,
}

/// The shared state of one batch of a play.
#[derive(Debug)]
pub struct BatchShared {
    /// The batch's hosts in order (the first still running runs `run_once` tasks).
    hosts: Vec<String>,
    started: Mutex<BTreeSet<String>>,
    finished: Mutex<BTreeSet<String>>,
    once: Mutex<HashMap<String, OnceResult>>,
    throttles: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Bumped when a `run_once` result arrives or a host finishes: what waiters wake on.
    progress: watch::Sender<u64>,
}

/// A task's identity within a play: where it is written.
pub fn task_key(task: &Task) -> String {
    format!("{}:{}:{}", task.loc.file, task.loc.line, task.loc.col)
}

impl BatchShared {
    /// A batch of these hosts.
    pub fn new(hosts: Vec<String>) -> Arc<BatchShared> {
        Arc::new(BatchShared {
            hosts,
            started: Mutex::default(),
            finished: Mutex::default(),
            once: Mutex::default(),
            throttles: Mutex::default(),
            progress: watch::Sender::new(0),
        })
    }

    fn bump(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Marks `host` started (it holds a fork: it can run a `run_once` task), and finished
    /// when the guard is dropped (however its run ends: done, failed, panicked, aborted), so
    /// no other host waits for it.
    pub fn guard(self: &Arc<Self>, host: &str) -> FinishGuard {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string());
        FinishGuard {
            batch: self.clone(),
            host: host.to_string(),
        }
    }

    /// The semaphore of a throttled task (`throttle: n`), shared by the batch's hosts.
    pub fn throttle(&self, task: &Task, n: u32) -> Arc<Semaphore> {
        let mut map = self.throttles.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(task_key(task))
            .or_insert_with(|| Arc::new(Semaphore::new(usize::try_from(n).unwrap_or(1).max(1))))
            .clone()
    }

    /// Publishes a `run_once` task's result to the batch.
    pub fn publish(&self, task: &Task, r: OnceResult) {
        self.once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task_key(task), r);
        self.bump();
    }

    /// For `host` at a `run_once` task: `Ok(result)` once a host of the batch has run it, or
    /// `Err(())` when `host` is the one to run it (the first of the batch still running).
    pub async fn once(&self, task: &Task, host: &str) -> Result<OnceResult, ()> {
        let key = task_key(task);
        let mut rx = self.progress.subscribe();
        loop {
            if let Some(r) = self
                .once
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
            {
                return Ok(r.clone());
            }
            // The first host of the batch that is running (a host still waiting for a fork
            // cannot be waited for: it may wait for this one's fork).
            let runner = {
                let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
                let done = self.finished.lock().unwrap_or_else(|e| e.into_inner());
                self.hosts
                    .iter()
                    .find(|h| started.contains(*h) && !done.contains(*h))
                    .cloned()
            };
            if runner.as_deref().is_none_or(|r| r == host) {
                return Err(());
            }
            if rx.changed().await.is_err() {
                return Err(());
            }
        }
    }
}

/// See [`BatchShared::guard`].
#[derive(Debug)]
pub struct FinishGuard {
    batch: Arc<BatchShared>,
    host: String,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.batch
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(std::mem::take(&mut self.host));
        self.batch.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(line: u32) -> Task {
        let src = format!("{}debug: {{ msg: x }}\n", "\n".repeat(line as usize - 1));
        let n = crate::spec::yaml::parse(&Arc::from("t.yaml"), &src).expect("yaml");
        let mut d = crate::spec::decode::Decoder::with_modules(crate::modules::SPECS);
        crate::spec::task::decode_task(&mut d, &n).expect("task")
    }

    #[tokio::test]
    async fn the_first_running_host_runs_once_and_the_others_get_its_result() {
        let b = BatchShared::new(vec!["a".into(), "b".into()]);
        let t = task(1);
        let (_a, _b) = (b.guard("a"), b.guard("b"));
        assert!(
            b.once(&t, "a").await.is_err(),
            "a is first: it runs the task"
        );
        let waiting = {
            let b = b.clone();
            let t = t.clone();
            tokio::spawn(async move { b.once(&t, "b").await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b waits for a's result");
        b.publish(
            &t,
            OnceResult {
                host: "a".into(),
                value: J::from(1),
                secret: false,
                failed: false,
            },
        );
        let r = waiting.await.expect("join").expect("a result");
        assert_eq!((r.host.as_str(), r.value), ("a", J::from(1)));
    }

    #[tokio::test]
    async fn when_the_first_host_is_gone_the_next_runs_it() {
        let b = BatchShared::new(vec!["a".into(), "b".into()]);
        let t = task(2);
        let g = b.guard("a");
        let _b = b.guard("b");
        let waiting = {
            let b = b.clone();
            let t = t.clone();
            tokio::spawn(async move { b.once(&t, "b").await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(g);
        assert!(waiting.await.expect("join").is_err(), "b runs it now");
    }
}
