//! Rolling runs: after each batch of a play (`serial`), whether the run goes on. A batch in
//! which more than `max_fail_percentage` of the hosts failed stops it, and so does a batch of
//! a `serial` play in which every host failed (as Ansible does): later batches do not start.

use std::collections::BTreeMap;

use crate::engine::events::HostRecap;
use crate::spec::playbook::Play;

/// Why the run stops after batch `bi` (of `total`), or `None` to go on.
pub fn stops(
    play: &Play,
    recap: &BTreeMap<String, HostRecap>,
    batch: &[String],
    bi: usize,
    total: usize,
) -> Option<String> {
    if batch.is_empty() {
        return None;
    }
    let failed = batch
        .iter()
        .filter(|h| {
            recap
                .get(*h)
                .is_some_and(|r| r.failed > 0 || r.unreachable > 0)
        })
        .count();
    let which = if total > 1 {
        format!("batch {} of {total}", bi + 1)
    } else {
        "the play".to_string()
    };
    let pct = failed as f64 * 100.0 / batch.len() as f64;
    if let Some(max) = play.max_fail_percentage
        && pct > max
    {
        return Some(format!(
            "play `{}`, {which}: {failed} of {} hosts failed ({pct:.0}%), over max_fail_percentage {max}",
            play.name,
            batch.len()
        ));
    }
    if !play.serial.is_empty() && failed == batch.len() {
        return Some(format!("play `{}`, {which}: every host failed", play.name));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::playbook::{BatchSize, batches};

    fn play(src: &str) -> Play {
        let file: std::sync::Arc<str> = "p.yaml".into();
        let n = crate::spec::yaml::parse(&file, src).expect("yaml");
        let mut d = crate::spec::decode::Decoder::with_modules(crate::modules::SPECS);
        let pb = crate::spec::playbook::decode_playbook(&mut d, file, &n);
        assert!(!d.diags.has_errors(), "{:?}", d.diags);
        pb.plays.into_iter().next().expect("a play")
    }

    fn recap(failed: &[&str]) -> BTreeMap<String, HostRecap> {
        failed
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    HostRecap {
                        failed: 1,
                        ..HostRecap::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn batch_sizes_follow_the_list_and_repeat_the_last() {
        let p = play("- hosts: all\n  serial: [1, 2, \"50%\"]\n  tasks: [{ debug: { msg: x } }]\n");
        assert_eq!(p.serial[2].value, BatchSize::Percent(50.0));
        let hosts: Vec<u32> = (1..=10).collect();
        let b = batches(&hosts, &p.serial);
        let sizes: Vec<usize> = b.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 2, 5, 2]);
        let p = play("- hosts: all\n  serial: \"30%\"\n  tasks: [{ debug: { msg: x } }]\n");
        let sizes: Vec<usize> = batches(&hosts, &p.serial).iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        // A percentage of few hosts is still one host.
        let sizes: Vec<usize> = batches(&hosts[..2], &p.serial)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [1, 1]);
        let p = play("- hosts: all\n  tasks: [{ debug: { msg: x } }]\n");
        assert_eq!(batches(&hosts, &p.serial).len(), 1);
    }

    #[test]
    fn a_batch_over_the_limit_stops_the_run() {
        let p = play(
            "- hosts: all\n  serial: 4\n  max_fail_percentage: 25\n  tasks: [{ debug: { msg: x } }]\n",
        );
        let batch: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        // 1 of 4 is 25%: not over.
        assert_eq!(stops(&p, &recap(&["a"]), &batch, 0, 2), None);
        let why = stops(&p, &recap(&["a", "b"]), &batch, 0, 2).expect("stops");
        assert!(
            why.contains("batch 1 of 2: 2 of 4 hosts failed (50%)"),
            "{why}"
        );
        // Without a percentage, only a batch where every host failed stops a serial play.
        let p = play("- hosts: all\n  serial: 2\n  tasks: [{ debug: { msg: x } }]\n");
        assert_eq!(stops(&p, &recap(&["a"]), &batch[..2], 0, 2), None);
        assert!(stops(&p, &recap(&["a", "b"]), &batch[..2], 0, 2).is_some());
        let p = play("- hosts: all\n  tasks: [{ debug: { msg: x } }]\n");
        assert_eq!(stops(&p, &recap(&["a", "b"]), &batch[..2], 0, 1), None);
    }
}
