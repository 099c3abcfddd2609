//! What `/metrics` says about the nodes, from their last heartbeats (up, load, memory, disks,
//! GPU memory, models loaded, heartbeat age), and about HQ's own process. Built per scrape
//! from the statuses HQ already computes, so a node's series disappear with the node.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::hq::wire::NodeStatus;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

const GB: f64 = 1_000_000_000.0;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Registers the node series for one scrape.
pub fn register(reg: &mut Registry, nodes: &[NodeStatus]) {
    let by_status: Family<Labels, Gauge> = Family::default();
    let up: Family<Labels, Gauge> = Family::default();
    let age: Family<Labels, FloatGauge> = Family::default();
    let load: Family<Labels, FloatGauge> = Family::default();
    let mem_used: Family<Labels, FloatGauge> = Family::default();
    let mem_total: Family<Labels, FloatGauge> = Family::default();
    let disk_free: Family<Labels, FloatGauge> = Family::default();
    let disk_total: Family<Labels, FloatGauge> = Family::default();
    let gpu_mem: Family<Labels, FloatGauge> = Family::default();
    let models: Family<Labels, Gauge> = Family::default();
    for s in ["online", "degraded", "offline", "draining"] {
        by_status.get_or_create(&labels(&[("status", s)])).set(0);
    }
    for n in nodes {
        let node = n.name.as_str();
        by_status
            .get_or_create(&labels(&[("status", &n.status)]))
            .inc();
        up.get_or_create(&labels(&[("node", node)]))
            .set(i64::from(n.status == "online"));
        if let Some(a) = n.heartbeat_age_secs {
            age.get_or_create(&labels(&[("node", node)])).set(a);
        }
        let Some(hb) = &n.last else { continue };
        let r = &hb.resources;
        if let Some(l) = r.load_1m {
            load.get_or_create(&labels(&[("node", node)])).set(l);
        }
        if let Some(u) = r.ram_used_gb {
            mem_used
                .get_or_create(&labels(&[("node", node)]))
                .set(u * GB);
        }
        if let Some(t) = r.ram_gb {
            mem_total
                .get_or_create(&labels(&[("node", node)]))
                .set(t * GB);
        }
        for d in &r.disks {
            let l = labels(&[("node", node), ("mount", &d.mount)]);
            disk_free.get_or_create(&l).set(d.free_gb * GB);
            disk_total.get_or_create(&l).set(d.total_gb * GB);
        }
        for (i, g) in r.gpus.iter().enumerate() {
            let index = i.to_string();
            let name = g.name.as_deref().unwrap_or("");
            gpu_mem
                .get_or_create(&labels(&[
                    ("node", node),
                    ("gpu", &index),
                    ("vendor", &g.vendor),
                    ("name", name),
                ]))
                .set(g.vram_gb * GB);
        }
        let loaded = hb.services.get("ollama").map_or(0, |s| s.models.len());
        models
            .get_or_create(&labels(&[("node", node)]))
            .set(i64::try_from(loaded).unwrap_or(i64::MAX));
    }
    reg.register("fleet_nodes", "Nodes by status", by_status);
    reg.register("fleet_node_up", "1 when the node is online, else 0", up);
    reg.register(
        "fleet_node_heartbeat_age_seconds",
        "Seconds since each node's last heartbeat",
        age,
    );
    reg.register("fleet_node_load1", "1-minute load average", load);
    reg.register("fleet_node_memory_used_bytes", "Memory in use", mem_used);
    reg.register("fleet_node_memory_total_bytes", "Memory", mem_total);
    reg.register(
        "fleet_node_disk_free_bytes",
        "Free space by mount",
        disk_free,
    );
    reg.register("fleet_node_disk_total_bytes", "Size by mount", disk_total);
    reg.register(
        "fleet_node_gpu_memory_bytes",
        "Video memory by GPU",
        gpu_mem,
    );
    reg.register(
        "fleet_node_models_loaded",
        "Models the node's Ollama holds",
        models,
    );
}

/// Registers HQ's own process series (resident memory, CPU time, start time, open files).
pub fn register_process(reg: &mut Registry) {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = Pid::from_u32(std::process::id());
    let Ok(mut sys) = System::new() else {
        return;
    };
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_memory().with_cpu(),
    );
    let Some(p) = sys.process(pid) else {
        return;
    };
    let rss: Gauge = Gauge::default();
    rss.set(i64::try_from(p.memory()).unwrap_or(i64::MAX));
    reg.register(
        "process_resident_memory_bytes",
        "Resident memory of HQ's process",
        rss,
    );
    let cpu: FloatGauge = Gauge::default();
    cpu.set(p.accumulated_cpu_time() as f64 / 1000.0);
    reg.register(
        "process_cpu_seconds",
        "CPU time HQ's process has used (user and system)",
        cpu,
    );
    let start: Gauge = Gauge::default();
    start.set(i64::try_from(p.start_time()).unwrap_or(0));
    reg.register(
        "process_start_time_seconds",
        "When HQ's process started (Unix time)",
        start,
    );
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let open: Gauge = Gauge::default();
        open.set(i64::try_from(fds.count()).unwrap_or(i64::MAX));
        reg.register("process_open_fds", "Open file descriptors", open);
    }
}
