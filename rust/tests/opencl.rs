//! OpenCL kernels against the CPU path, on whatever OpenCL device is there (PoCL in CI; pick
//! another with `RXQUANT_DEVICE=opencl:N`). Integer outputs must be bit-identical, histogram
//! counts exact, sums within 1e-6 relative. Without an OpenCL platform the test is skipped,
//! unless `RXQUANT_REQUIRE_OPENCL=1` (as in CI) makes that a failure.

use rxquant::gpu::cl::ClBackend;
use rxquant::hist::{Hist, HistKind};
use rxquant::*;

fn backend() -> Option<ClBackend> {
    let index = std::env::var("RXQUANT_DEVICE")
        .ok()
        .and_then(|d| d.strip_prefix("opencl:").and_then(|i| i.parse().ok()))
        .unwrap_or(0);
    match ClBackend::open(Some(index), 64) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("RXQUANT_REQUIRE_OPENCL").as_deref() == Ok("1") => {
            panic!("OpenCL required: {e}")
        }
        Err(e) => {
            eprintln!("skipping OpenCL tests: {e}");
            None
        }
    }
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        })
        .collect()
}

const SHAPES: [&[usize]; 5] = [&[0], &[7], &[3, 5, 64], &[33, 96], &[2, 64, 3]];

fn granularities(shape: &[usize]) -> Vec<Granularity> {
    let mut g = vec![Granularity::PerTensor, Granularity::PerChannel { axis: 0 }];
    if shape.len() > 1 {
        g.push(Granularity::PerChannel { axis: -1 });
        g.push(Granularity::PerChannel { axis: 1 });
        if shape[1] % 32 == 0 {
            g.push(Granularity::PerGroup { axis: 1, size: 32 });
        }
    }
    g
}

#[test]
fn quantize_dequantize_fake_and_ranges_match_cpu() {
    let Some(cl) = backend() else { return };
    eprintln!("OpenCL device: {} (correctly rounded division: {})", cl.device_name, cl.exact_division);
    for (k, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = data(n, 7 + k as u64);
        for g in granularities(shape) {
            for (p, sym) in [(Precision::Int8, true), (Precision::Int8, false), (Precision::Int4, false)] {
                let s = Scheme::new(p).asymmetric(!sym).with_granularity(g);
                let map = ParamMap::new(shape, g).unwrap();
                let r_cpu = range::ranges(&x, &map, false).unwrap();
                let r_cl = cl.ranges(&x, &map).unwrap();
                assert_eq!(r_cpu, r_cl, "{shape:?} {g:?}");
                let qp = QParams::from_ranges(s, &map, &r_cpu);
                let mut q_cpu = vec![0u8; n];
                if sym {
                    let mut q = vec![0i8; n];
                    quantize(&x, shape, &qp, false, &mut q).unwrap();
                    q_cpu.iter_mut().zip(&q).for_each(|(a, &b)| *a = b as u8);
                } else {
                    quantize(&x, shape, &qp, false, &mut q_cpu).unwrap();
                }
                let mut q_cl = vec![0u8; n];
                cl.quantize(&x, &map, &qp, &mut q_cl).unwrap();
                assert_eq!(q_cpu, q_cl, "quantize {shape:?} {g:?} {p:?} sym={sym}");
                let mut y_cl = vec![0f32; n];
                cl.dequantize(&q_cl, &map, &qp, &mut y_cl).unwrap();
                let mut y_cpu = vec![0f32; n];
                if sym {
                    let q: Vec<i8> = q_cpu.iter().map(|&b| b as i8).collect();
                    dequantize(&q, shape, &qp, &mut y_cpu).unwrap();
                } else {
                    dequantize(&q_cpu, shape, &qp, &mut y_cpu).unwrap();
                }
                assert_eq!(y_cpu, y_cl, "dequantize {shape:?} {g:?}");
                let (mut f_cl, mut m_cl) = (vec![0f32; n], vec![0u8; n]);
                cl.fake_quantize(&x, &map, &qp, &mut f_cl, &mut m_cl).unwrap();
                let (mut f_cpu, mut m_cpu) = (vec![0f32; n], vec![false; n]);
                fake_quantize(&x, shape, &qp, false, &mut f_cpu, Some(&mut m_cpu)).unwrap();
                assert_eq!(f_cpu, f_cl);
                assert!(m_cpu.iter().zip(&m_cl).all(|(&a, &b)| a == (b == 1)));
            }
        }
    }
}

#[test]
fn pack_histogram_and_sums_match_cpu() {
    let Some(cl) = backend() else { return };
    for n in [0usize, 1, 2, 7, 1000, 100_001] {
        let codes: Vec<i8> = (0..n).map(|i| ((i * 7) % 16) as i8 - 8).collect();
        let raw: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
        let mut packed = vec![0u8; n.div_ceil(2)];
        cl.pack_int4(&raw, &mut packed).unwrap();
        assert_eq!(packed, pack_int4_signed(&codes).unwrap(), "n={n}");

        let mut x = data(n, 99 + n as u64);
        if n > 10 {
            x[3] = 0.0;
            x[5] = f32::NAN;
        }
        let mut h = Hist::empty(2048);
        h.cover(0.0, 3.0);
        let finite: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
        h.add(&finite, HistKind::Abs);
        let inv = (1.0 / h.width) as f32;
        let (counts, zeros, bad) = cl.histogram(&x, 0.0, inv, 2048, true).unwrap();
        assert_eq!(counts, h.counts, "histogram n={n}");
        assert_eq!((zeros, bad), (h.zeros, (x.len() - finite.len()) as u64));

        let y: Vec<f32> = x.iter().map(|v| if v.is_finite() { v * 0.9 + 0.01 } else { 0.0 }).collect();
        let xs: Vec<f32> = x.iter().map(|v| if v.is_finite() { *v } else { 0.0 }).collect();
        let s = cl.error_sums(&xs, &y).unwrap();
        let m = metrics(&xs, &y).unwrap();
        let sx: f64 = xs.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1e-30) + 1e-12;
        assert!(close(s[0], sx), "{} vs {}", s[0], sx);
        if n > 0 {
            assert!(close(s[3], m.mse * n as f64));
        }
    }
}
