//! Requests in flight per worker: the gateway takes a slot before it sends a request to a
//! node and gives it back when the answer (the whole stream) is done, so a node never has more
//! than its `max_concurrent` at once; draining waits for a node's count to reach 0.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

/// In-flight counts by worker name (a node, or `cloud:<provider>`).
#[derive(Debug, Default)]
pub struct InFlight {
    slots: RwLock<HashMap<String, Arc<AtomicU32>>>,
}

/// A taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    count: Arc<AtomicU32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn counter(&self, worker: &str) -> Arc<AtomicU32> {
        if let Ok(m) = self.slots.read()
            && let Some(c) = m.get(worker)
        {
            return c.clone();
        }
        match self.slots.write() {
            Ok(mut m) => m.entry(worker.to_string()).or_default().clone(),
            // A poisoned lock only loses the sharing: the slot still counts for its holder.
            Err(_) => Arc::new(AtomicU32::new(0)),
        }
    }

    /// Takes one of `worker`'s `max` slots, or `None` when all are taken (the worker is busy).
    /// `max` 0 means no limit.
    pub fn try_take(&self, worker: &str, max: u32) -> Option<Slot> {
        let count = self.counter(worker);
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (max == 0 || n < max).then_some(n + 1)
        });
        taken.ok().map(|_| Slot { count })
    }

    /// Requests in flight to `worker` now.
    pub fn count(&self, worker: &str) -> u32 {
        self.slots
            .read()
            .ok()
            .and_then(|m| m.get(worker).map(|c| c.load(Ordering::Acquire)))
            .unwrap_or(0)
    }

    /// Every worker with requests in flight, and how many.
    pub fn snapshot(&self) -> Vec<(String, u32)> {
        let Ok(m) = self.slots.read() else {
            return Vec::new();
        };
        let mut out: Vec<(String, u32)> = m
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Acquire)))
            .filter(|(_, n)| *n > 0)
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_max() {
        let f = InFlight::new();
        let a = f.try_take("n", 2);
        let b = f.try_take("n", 2);
        assert!(a.is_some() && b.is_some());
        assert!(f.try_take("n", 2).is_none());
        assert_eq!(f.count("n"), 2);
        drop(a);
        assert_eq!(f.count("n"), 1);
        assert!(f.try_take("n", 2).is_some());
        assert_eq!(
            f.count("n"),
            1,
            "the slot taken in the assert was given back"
        );
    }

    #[test]
    fn zero_is_unlimited_and_snapshot_lists_busy_ones() {
        let f = InFlight::new();
        let held: Vec<_> = (0..50).filter_map(|_| f.try_take("c", 0)).collect();
        assert_eq!(held.len(), 50);
        assert_eq!(f.snapshot(), vec![("c".to_string(), 50)]);
        drop(held);
        assert!(f.snapshot().is_empty());
    }
}
