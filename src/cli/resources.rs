//! `fleet resources`: this machine's CPU, memory, disks and GPUs, as the agent reports them.

use crate::error::Result;

/// Arguments of `fleet resources`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fleet resources`.
pub fn run(args: &Args) -> Result<u8> {
    let f = crate::resources::local();
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&f).unwrap_or_default());
        return Ok(0);
    }
    let q = |o: Option<String>| o.unwrap_or_else(|| "unknown".into());
    crate::outln!("host:   {}", q(f.hostname.clone()));
    crate::outln!(
        "os:     {} ({}) {}",
        q(f.os.clone()),
        q(f.os_version.clone()),
        q(f.arch.clone())
    );
    crate::outln!(
        "cpu:    {} × {}",
        f.cores.map_or("?".into(), |c| c.to_string()),
        q(f.apple_chip.clone().or(f.cpu_model.clone()))
    );
    crate::outln!(
        "memory: {} GB",
        f.ram_gb.map_or("?".into(), |r| r.to_string())
    );
    for d in &f.disks {
        crate::outln!(
            "disk:   {} {} GB free of {} GB",
            d.mount,
            d.free_gb,
            d.total_gb
        );
    }
    if f.gpus.is_empty() {
        crate::outln!("gpu:    none found (nvidia-smi absent or no device)");
    }
    for g in &f.gpus {
        crate::outln!(
            "gpu:    {} {} ({} GB)",
            g.vendor,
            g.name.clone().unwrap_or_default(),
            g.vram_gb
        );
    }
    Ok(0)
}
