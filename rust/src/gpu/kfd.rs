//! The AMD kernel driver's topology (`/sys/class/kfd/kfd/topology/nodes/*`): which AMD GPUs the
//! kernel sees, with their gfx target and compute units, whether or not a runtime is installed.

use std::collections::HashMap;
use std::path::Path;

/// Default location of the topology.
pub const TOPOLOGY: &str = "/sys/class/kfd/kfd/topology/nodes";

/// One GPU node of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KfdGpu {
    pub node: u32,
    pub name: String,
    /// e.g. `gfx803` for Polaris.
    pub gfx_target: String,
    pub compute_units: u32,
    pub vendor_id: u32,
    pub device_id: u32,
}

/// `gfx_target_version` (e.g. 80003) as the gfx name (`gfx803`; the stepping is hexadecimal).
pub fn gfx_name(version: u64) -> String {
    format!("gfx{}{}{:x}", version / 10000, (version / 100) % 100, version % 100)
}

/// GPU nodes under `root` (CPU nodes, with no SIMDs, are skipped). A missing topology is no GPU.
pub fn gpus(root: impl AsRef<Path>) -> Vec<KfdGpu> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut out: Vec<KfdGpu> = entries
        .flatten()
        .filter_map(|e| {
            let node = e.file_name().to_str()?.parse().ok()?;
            let props = parse(&std::fs::read_to_string(e.path().join("properties")).ok()?);
            let simds = *props.get("simd_count")?;
            if simds == 0 {
                return None;
            }
            let per_cu = props.get("simd_per_cu").copied().filter(|&v| v > 0).unwrap_or(4);
            let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default().trim().to_string();
            Some(KfdGpu {
                node,
                name,
                gfx_target: gfx_name(props.get("gfx_target_version").copied().unwrap_or(0)),
                compute_units: (simds / per_cu) as u32,
                vendor_id: props.get("vendor_id").copied().unwrap_or(0) as u32,
                device_id: props.get("device_id").copied().unwrap_or(0) as u32,
            })
        })
        .collect();
    out.sort_by_key(|g| g.node);
    out
}

fn parse(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_polaris_topology() {
        let root = std::env::temp_dir().join(format!("rxq-kfd-{}", std::process::id()));
        for (node, props, name) in [
            ("0", "cpu_cores_count 8\nsimd_count 0\n", "cpu"),
            (
                "1",
                "simd_count 144\nsimd_per_cu 4\ngfx_target_version 80003\nvendor_id 4098\ndevice_id 26591\n",
                "ellesmere",
            ),
        ] {
            let d = root.join(node);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("properties"), props).unwrap();
            std::fs::write(d.join("name"), name).unwrap();
        }
        let g = gpus(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(
            (g[0].gfx_target.as_str(), g[0].compute_units, g[0].name.as_str()),
            ("gfx803", 36, "ellesmere")
        );
        assert_eq!(gfx_name(90010), "gfx90a");
        assert!(gpus("/no/such/dir").is_empty());
    }
}
