//! Default routing priority from hardware, used when a node gives no `priority`.
//! Max-class Apple silicon and Mac Studios 95, other Apple silicon 80–90 by generation,
//! NVIDIA by VRAM, CPU-only Intel/AMD 40.

use crate::spec::inventory::Hardware;

/// The priority a node gets from its hardware (0–100, higher is preferred).
pub fn default_priority(hw: &Hardware) -> u32 {
    let chip = hw.chip.as_deref().unwrap_or("").to_ascii_lowercase();
    let model = hw.model.as_deref().unwrap_or("").to_ascii_lowercase();
    let apple = crate::eligibility::is_apple_silicon(hw);
    if let Some(gpu) = &hw.gpu {
        if gpu.vendor.eq_ignore_ascii_case("nvidia") {
            return nvidia_priority(gpu.vram_gb);
        }
        if gpu.vendor.eq_ignore_ascii_case("amd") {
            return nvidia_priority(gpu.vram_gb).saturating_sub(5);
        }
    }
    if apple {
        if model.contains("studio") || chip.contains("max") || chip.contains("ultra") {
            return 95;
        }
        // M1 80, M2 83, M3 86, M4 and later 90; a Pro chip gets +2 within the band.
        let generation: u32 = chip
            .trim_start_matches('m')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(1);
        let base = match generation {
            0 | 1 => 80,
            2 => 83,
            3 => 86,
            _ => 90,
        };
        let pro = if chip.contains("pro") { 2 } else { 0 };
        return (base + pro).min(90);
    }
    40
}

fn nvidia_priority(vram_gb: f64) -> u32 {
    match vram_gb {
        v if v >= 48.0 => 95,
        v if v >= 24.0 => 85,
        v if v >= 16.0 => 75,
        v if v >= 12.0 => 70,
        v if v >= 8.0 => 60,
        _ => 50,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::inventory::Gpu;

    fn hw(cpu: &str, chip: &str, model: &str) -> Hardware {
        Hardware {
            cpu: Some(cpu.into()),
            chip: Some(chip.into()),
            model: Some(model.into()),
            ..Hardware::default()
        }
    }

    #[test]
    fn apple_silicon_bands() {
        assert_eq!(default_priority(&hw("apple_silicon", "M4", "Mac mini")), 90);
        assert_eq!(default_priority(&hw("apple_silicon", "M1", "Mac mini")), 80);
        assert_eq!(
            default_priority(&hw("apple_silicon", "M2 Pro", "Mac mini")),
            85
        );
        assert_eq!(
            default_priority(&hw("apple_silicon", "M2 Max", "MacBook Pro")),
            95
        );
        assert_eq!(
            default_priority(&hw("apple_silicon", "M2", "Mac Studio")),
            95
        );
    }

    #[test]
    fn gpus_and_cpu_only() {
        let mut h = hw("amd", "Ryzen 9", "tower");
        assert_eq!(default_priority(&h), 40);
        h.gpu = Some(Gpu {
            vendor: "nvidia".into(),
            name: None,
            vram_gb: 24.0,
        });
        assert_eq!(default_priority(&h), 85);
        assert_eq!(default_priority(&hw("intel", "i9-9900K", "iMac")), 40);
    }
}
