//! The `hip` feature (hip-sys, linked at build time): device queries and device memory. With an
//! AMD GPU this checks a round trip through device memory; without one (CI, and any machine with
//! only the HIP runtime installed) it checks that every path says "no device" (error 100), and
//! that the backend selection falls back to the CPU and says why.
//!
//! Run: `HIP_PATH=/usr cargo test --features hip --test hip`.

use rxquant::gpu::hipsys::{device_count, devices, memory, runtime_version, DeviceBuffer};
use rxquant::gpu::select::{auto, Backend};
use rxquant::Error;

#[test]
fn runtime_answers_and_reports_its_version() {
    let v = runtime_version().expect("the HIP runtime answers hipRuntimeGetVersion without a GPU");
    assert!(v >= 50_000_000, "HIP {v}");
}

#[test]
fn devices_and_memory_or_no_device() {
    match device_count() {
        Ok(n) if n > 0 => {
            let devs = devices().unwrap();
            assert_eq!(devs.len(), n);
            for d in &devs {
                assert!(
                    d.compute_units > 0 && d.total_memory > 0 && d.free_memory <= d.total_memory,
                    "{d:?}"
                );
                assert!(d.wavefront == 32 || d.wavefront == 64);
            }
            let data: Vec<f32> = (0..1_000_003).map(|i| i as f32 * 0.5).collect();
            let buf = DeviceBuffer::from_host(0, &data).unwrap();
            let mut back = vec![0f32; data.len()];
            buf.read(&mut back).unwrap();
            assert_eq!(back, data);
            assert!(matches!(buf.read(&mut back[..3]), Err(Error::Shape(_))));
        }
        other => {
            // No AMD GPU: hipGetDeviceCount returns hipErrorNoDevice (100).
            let e = other.map(|n| format!("{n} devices")).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Device(_)), "{e:?}");
            assert!(msg.contains("hipGetDeviceCount returned 100 (no device"), "{msg}");
            assert!(matches!(devices(), Err(Error::Device(_))));
            assert!(matches!(memory(0), Err(Error::Device(_))));
            let alloc = DeviceBuffer::<f32>::new(0, 16).err().expect("no device memory without a device");
            assert!(alloc.to_string().starts_with("HIP hip"), "{alloc}");
            let sel = auto(64);
            if let Backend::Cpu = sel.backend {
                assert!(sel.reason.contains("hipGetDeviceCount returned 100 (no device"), "{}", sel.reason);
            }
        }
    }
}
