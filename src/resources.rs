//! This machine's resources (sysinfo, plus `nvidia-smi` when present): the shape `fleet
//! resources` prints and the agent reports.

use sysinfo::{Disks, System};

use crate::facts::{Disk, Facts, parse_nvidia_smi};
use crate::spec::inventory::Gpu;

const GB: f64 = 1024.0 * 1024.0 * 1024.0;

use crate::facts::round1;

/// NVIDIA GPUs, when `nvidia-smi` is installed and answers.
pub fn nvidia_gpus() -> Vec<Gpu> {
    std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// Reads this machine's resources; what the platform does not report stays unknown.
pub fn local() -> Facts {
    let (cpu_model, cores, ram_gb) = match System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.refresh_cpu_all();
            let model = sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .filter(|s| !s.is_empty());
            (
                model,
                Some(sys.cpus().len() as u64).filter(|c| *c > 0),
                Some(round1(sys.total_memory() as f64 / GB)).filter(|r| *r > 0.0),
            )
        }
        Err(_) => (None, None, None),
    };
    // Rust names the platforms as fleet does (`linux`, `macos`, `x86_64`, `aarch64`).
    let os = std::env::consts::OS;
    let arch = std::env::consts::ARCH;
    let apple_chip = cpu_model.clone().filter(|m| m.starts_with("Apple "));
    let listed = Disks::new_with_refreshed_list().ok();
    let mut disks: Vec<Disk> = listed
        .iter()
        .flat_map(|d| d.iter())
        .filter(|d| d.total_space() > 0)
        .map(|d| Disk {
            mount: d.mount_point().to_string_lossy().to_string(),
            total_gb: round1(d.total_space() as f64 / GB),
            free_gb: round1(d.available_space() as f64 / GB),
        })
        .collect();
    disks.sort_by(|a, b| a.mount.cmp(&b.mount));
    disks.dedup_by(|a, b| a.mount == b.mount);
    Facts {
        os: Some(os.to_string()),
        os_version: System::long_os_version().ok(),
        arch: Some(arch.to_string()),
        cpu_model,
        cores,
        ram_gb,
        disks,
        gpus: nvidia_gpus(),
        apple_chip,
        hostname: System::host_name().ok(),
        ..Facts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_output() {
        let g = parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564\nTesla T4, 15360\n");
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name.as_deref(), Some("NVIDIA GeForce RTX 4090"));
        assert_eq!(g[0].vram_gb, 24.0);
        assert_eq!(g[1].vram_gb, 15.0);
        assert!(parse_nvidia_smi("No devices were found\n").is_empty());
    }

    #[test]
    fn local_machine_has_memory_and_cores() {
        let f = local();
        assert!(f.ram_gb.is_some_and(|r| r > 0.0));
        assert!(f.cores.is_some_and(|c| c > 0));
    }
}
