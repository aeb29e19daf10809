//! Where the heavy kernels run, for Rust callers: an OpenCL GPU when there is one, else the CPU,
//! with the reason. The rule of Python's `device="auto"`: a CPU OpenCL device such as PoCL is
//! never picked over rayon, and any failure to open the GPU means the CPU.

use super::cl::ClBackend;
use crate::calib::{Cpu, Reducer};
use crate::error::Result;
use crate::hist::{Hist, HistKind};
use crate::layout::ParamMap;
use crate::range::Ranges;

/// The chosen backend.
pub enum Backend {
    OpenCl(Box<ClBackend>),
    Cpu,
}

/// A backend and why it was chosen.
pub struct Selection {
    pub backend: Backend,
    pub reason: String,
}

/// What HIP says: with the `hip` feature through hip-sys, otherwise through `dlopen`.
pub fn hip_summary() -> String {
    #[cfg(feature = "hip")]
    let s = match super::hipsys::device_count() {
        Ok(n) => format!("{n} HIP device(s) (no HIP kernels: the OpenCL path runs on them)"),
        Err(e) => e.to_string(),
    };
    #[cfg(not(feature = "hip"))]
    let s = {
        let st = super::hip::status();
        st.reason.unwrap_or_else(|| format!("{} HIP device(s) (no HIP kernels)", st.devices.len()))
    };
    s
}

/// The first OpenCL GPU (work-groups of `work_group`), or the CPU.
pub fn auto(work_group: usize) -> Selection {
    match ClBackend::open(None, work_group) {
        Ok(b) => Selection {
            reason: format!("OpenCL GPU {}", b.device_name),
            backend: Backend::OpenCl(Box::new(b)),
        },
        Err(e) => Selection { backend: Backend::Cpu, reason: format!("CPU ({e}; HIP: {})", hip_summary()) },
    }
}

impl Reducer<f32> for Backend {
    fn ranges(&self, x: &[f32], map: &ParamMap, ignore_nonfinite: bool) -> Result<Ranges> {
        match self {
            Backend::OpenCl(b) => b.ranges(x, map, ignore_nonfinite),
            Backend::Cpu => Cpu.ranges(x, map, ignore_nonfinite),
        }
    }

    fn histograms(&self, x: &[f32], map: &ParamMap, hists: &mut [Hist], kind: HistKind) -> Result<()> {
        match self {
            Backend::OpenCl(b) => b.histograms(x, map, hists, kind),
            Backend::Cpu => Cpu.histograms(x, map, hists, kind),
        }
    }

    fn observe(
        &self,
        x: &[f32],
        map: &ParamMap,
        hist: Option<(usize, HistKind)>,
        ignore_nonfinite: bool,
    ) -> Result<(Ranges, Vec<Hist>)> {
        match self {
            Backend::OpenCl(b) => b.observe(x, map, hist, ignore_nonfinite),
            Backend::Cpu => Cpu.observe(x, map, hist, ignore_nonfinite),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{calibrate, calibrate_on, CalibOptions, Method, Scheme};

    #[test]
    fn auto_never_picks_a_cpu_device_and_says_why() {
        let sel = auto(64);
        match &sel.backend {
            Backend::OpenCl(b) => assert!(sel.reason.contains(&b.device_name)),
            Backend::Cpu => {
                assert!(sel.reason.starts_with("CPU (") && sel.reason.contains("HIP:"), "{}", sel.reason)
            }
        }
        let x: Vec<f32> = (0..5000).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        let s = Scheme::new(crate::Precision::Int8);
        let o = CalibOptions::default();
        assert_eq!(
            calibrate_on(&sel.backend, &x, &[5000], s, Method::Entropy, &o).unwrap(),
            calibrate(&x, &[5000], s, Method::Entropy, &o).unwrap()
        );
    }
}
