//! OpenCL kernels against the CPU path, on whatever OpenCL device is there (PoCL in CI; pick
//! another with `RXQUANT_DEVICE=opencl:N`). Integer outputs must be bit-identical, histogram
//! counts exact, sums within 1e-6 relative. Without an OpenCL platform the test is skipped,
//! unless `RXQUANT_REQUIRE_OPENCL=1` (as in CI) makes that a failure.

use proptest::prelude::*;
use rxquant::gpu::cl::ClBackend;
use rxquant::*;
use std::sync::OnceLock;

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
                let r_cl = Reducer::ranges(&cl, &x, &map, false).unwrap();
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
                if p == Precision::Int4 {
                    let mut packed = vec![0u8; n.div_ceil(2)];
                    cl.quantize_packed(&x, &map, &qp, &mut packed).unwrap();
                    let mut want = vec![0u8; n.div_ceil(2)];
                    quantize_packed(&x, shape, &qp, false, &mut want).unwrap();
                    assert_eq!(packed, want, "quantize_packed {shape:?} {g:?}");
                }
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
fn pack_matches_cpu() {
    let Some(cl) = backend() else { return };
    for n in [0usize, 1, 2, 7, 1000, 100_001] {
        let codes: Vec<i8> = (0..n).map(|i| ((i * 7) % 16) as i8 - 8).collect();
        let raw: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
        let mut packed = vec![0u8; n.div_ceil(2)];
        cl.pack_int4(&raw, &mut packed).unwrap();
        assert_eq!(packed, pack_int4_signed(&codes).unwrap(), "n={n}");
    }
}

#[test]
fn two_stage_minmax_counts_nonfinite_and_matches_cpu_on_large_cells() {
    let Some(cl) = backend() else { return };
    // One cell of 1M+3 values (4096 work-groups, each striding over it) and 3 channels of ~350K.
    for (shape, g) in [
        (vec![1 << 20 | 3], Granularity::PerTensor),
        (vec![3, 349_526], Granularity::PerChannel { axis: 0 }),
        (vec![349_526, 3], Granularity::PerChannel { axis: 1 }),
    ] {
        let n: usize = shape.iter().product();
        let mut x = data(n, 5);
        x[n / 2] = 40.0;
        x[n - 1] = -41.0;
        x[17] = f32::NAN;
        x[n / 3] = f32::INFINITY;
        let map = ParamMap::new(&shape, g).unwrap();
        let (r, bad) = cl.minmax(&x, &map).unwrap();
        assert_eq!(r, range::ranges(&x, &map, true).unwrap(), "{shape:?}");
        assert_eq!(bad, 2);
        let e = Reducer::ranges(&cl, &x, &map, false).unwrap_err();
        assert_eq!(e, Error::NonFinite { count: 2, first_index: 17 });
        let s = Scheme::new(Precision::Int8).with_granularity(g);
        let e = cl.quantize_minmax(&x, &map, s, false, &mut vec![0u8; n]).unwrap_err();
        assert_eq!(e, Error::NonFinite { count: 2, first_index: 17 });
    }
}

#[test]
fn device_histograms_give_the_cpu_observers_and_calibration() {
    let Some(cl) = backend() else { return };
    let shapes: [(&[usize], Granularity); 4] = [
        (&[300_001], Granularity::PerTensor),
        (&[7], Granularity::PerTensor),
        (&[24, 4099], Granularity::PerChannel { axis: 0 }),
        (&[513, 6], Granularity::PerChannel { axis: 1 }),
    ];
    for (k, (shape, g)) in shapes.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let mut x = data(n, 11 + k as u64);
        x.iter_mut().step_by(13).for_each(|v| *v = 0.0); // exact zeros are counted apart
        x.iter_mut().step_by(1001).for_each(|v| *v *= 30.0); // outliers
        for method in [Method::Percentile, Method::Entropy, Method::Mse] {
            for sym in [true, false] {
                let s = Scheme::new(Precision::Int8).asymmetric(!sym).with_granularity(g);
                let opts = CalibOptions { exact: Some(false), ..CalibOptions::default() };
                let (mut cpu, mut dev) = (
                    Observer::new(s, method, opts.clone()).unwrap(),
                    Observer::new(s, method, opts.clone()).unwrap(),
                );
                // Two batches: the second widens the range, so re-binning runs between them.
                let small: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
                for b in [&small, &x] {
                    cpu.update(b, shape).unwrap();
                    dev.update_on(&cl, b, shape).unwrap();
                }
                assert_eq!(cpu.hists, dev.hists, "{shape:?} {g:?} {method:?} sym={sym}");
                assert_eq!(cpu.qparams().unwrap(), dev.qparams().unwrap());
                let q_cpu = calibrate(&x, shape, s, method, &opts).unwrap();
                let q_dev = calibrate_on(&cl, &x, shape, s, method, &opts).unwrap();
                assert_eq!(q_cpu, q_dev, "calibrate {shape:?} {g:?} {method:?} sym={sym}");
            }
        }
    }
}

#[test]
fn device_histograms_match_where_tiny_values_underflow() {
    // Bins wider than 1: `v * 2^-e` of a tiny negative value rounds to -0 (or flushes on a
    // device), and its bin is still the one below 0's.
    let Some(cl) = backend() else { return };
    let mut x: Vec<f32> = data(100_003, 5).iter().map(|v| v * 1e4).collect();
    x.iter_mut().step_by(7).for_each(|v| *v = -1e-30);
    x[3] = -f32::from_bits(1);
    for sym in [true, false] {
        let s = Scheme::new(Precision::Int8).asymmetric(!sym);
        let opts = CalibOptions { exact: Some(false), ..CalibOptions::default() };
        let mut cpu = Observer::new(s, Method::Percentile, opts.clone()).unwrap();
        let mut dev = cpu.clone();
        cpu.update(&x, &[x.len()]).unwrap();
        dev.update_on(&cl, &x, &[x.len()]).unwrap();
        assert!(cpu.hists[0].width > 1.0);
        assert_eq!(cpu.hists, dev.hists, "sym={sym}");
    }
}

#[test]
fn metrics_match_cpu() {
    let Some(cl) = backend() else { return };
    for n in [0usize, 1, 7, 1000, 100_001, (1 << 24) + 77] {
        let x = data(n, 99 + n as u64);
        let y: Vec<f32> = x.iter().map(|v| v * 0.9 + 0.01).collect();
        let (m, c) = (cl.metrics(&x, &y).unwrap(), metrics(&x, &y).unwrap());
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();
        assert_eq!(m.count, c.count);
        for (a, b) in
            [(m.mse, c.mse), (m.mae, c.mae), (m.max_abs_error, c.max_abs_error), (m.cosine, c.cosine)]
        {
            assert!(close(a, b), "n={n}: {a} vs {b}");
        }
        assert!(m.sqnr_db == c.sqnr_db || (m.sqnr_db - c.sqnr_db).abs() < 1e-5, "n={n}");
    }
    // Squares beyond f32 (|v| > 1.8e19) overflow the device's partial sums: the f64 CPU sums answer.
    let huge = [3e20f32, -1.0, 2.5e19];
    assert_eq!(cl.metrics(&huge, &[0.0; 3]).unwrap(), metrics(&huge, &[0.0f32; 3]).unwrap());
    let nan = [1.0f32, f32::NAN, 2.0];
    assert_eq!(cl.metrics(&nan, &[1.0; 3]).unwrap_err(), Error::NonFinite { count: 1, first_index: 1 });
    assert!(matches!(cl.metrics(&[1.0], &[1.0, 2.0]), Err(Error::Shape(_))));
}

/// One device for the property test's cases (building the program takes a while on PoCL).
fn shared() -> Option<&'static ClBackend> {
    static CL: OnceLock<Option<ClBackend>> = OnceLock::new();
    CL.get_or_init(backend).as_ref()
}

fn granularity(shape: &[usize], pick: usize) -> Granularity {
    let last = *shape.last().unwrap();
    match pick % 3 {
        1 => Granularity::PerChannel { axis: (pick / 3 % shape.len()) as isize },
        2 if last % 4 == 0 && last > 0 => Granularity::PerGroup { axis: -1, size: 4 },
        _ => Granularity::PerTensor,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Random shapes (empty and odd sizes included) and layouts: ranges, histogram counts, codes
    /// (INT8, and INT4 packed), dequantized and fake-quantized values and the STE mask equal the
    /// CPU's; metrics agree to 1e-6 relative.
    #[test]
    fn random_shapes_match_cpu(
        shape in prop::collection::vec(0usize..37, 1..4),
        pick in 0usize..12,
        seed in 1u64..1_000_000,
        asym in any::<bool>(),
    ) {
        let Some(cl) = shared() else { return Ok(()) };
        let n: usize = shape.iter().product();
        let mut x = data(n, seed);
        x.iter_mut().step_by(5).for_each(|v| *v = 0.0);
        let g = granularity(&shape, pick);
        let map = ParamMap::new(&shape, g).unwrap();
        prop_assert_eq!(Reducer::ranges(cl, &x, &map, false).unwrap(), range::ranges(&x, &map, false).unwrap());

        let s = Scheme::new(Precision::Int8).asymmetric(asym).with_granularity(g);
        let opts = CalibOptions { exact: Some(false), bins: 64, ..CalibOptions::default() };
        let (mut cpu, mut dev) = (Observer::new(s, Method::Mse, opts.clone()).unwrap(), Observer::new(s, Method::Mse, opts).unwrap());
        cpu.update(&x, &shape).unwrap();
        dev.update_on(cl, &x, &shape).unwrap();
        prop_assert_eq!(&cpu.hists, &dev.hists);

        let qp = QParams::from_ranges(s, &map, &range::ranges(&x, &map, false).unwrap());
        let mut q_cpu = vec![0u8; n];
        if asym {
            quantize(&x, &shape, &qp, false, &mut q_cpu).unwrap();
        } else {
            let mut q = vec![0i8; n];
            quantize(&x, &shape, &qp, false, &mut q).unwrap();
            q_cpu.iter_mut().zip(&q).for_each(|(a, &b)| *a = b as u8);
        }
        let mut q_cl = vec![0u8; n];
        cl.quantize(&x, &map, &qp, &mut q_cl).unwrap();
        prop_assert_eq!(&q_cpu, &q_cl);

        // Dequantize from the asymmetric codes (the byte layout is the same for both grids).
        let mut y_cl = vec![0f32; n];
        cl.dequantize(&q_cl, &map, &qp, &mut y_cl).unwrap();
        let mut y_cpu = vec![0f32; n];
        if asym {
            dequantize(&q_cpu, &shape, &qp, &mut y_cpu).unwrap();
        } else {
            let q: Vec<i8> = q_cpu.iter().map(|&b| b as i8).collect();
            dequantize(&q, &shape, &qp, &mut y_cpu).unwrap();
        }
        prop_assert_eq!(y_cpu, y_cl);
        let (mut f_cl, mut m_cl) = (vec![0f32; n], vec![0u8; n]);
        cl.fake_quantize(&x, &map, &qp, &mut f_cl, &mut m_cl).unwrap();
        let (mut f_cpu, mut m_cpu) = (vec![0f32; n], vec![false; n]);
        fake_quantize(&x, &shape, &qp, false, &mut f_cpu, Some(&mut m_cpu)).unwrap();
        prop_assert_eq!(f_cpu, f_cl);
        prop_assert_eq!(m_cpu.iter().map(|&b| b as u8).collect::<Vec<u8>>(), m_cl);

        // INT4, packed on the device.
        let s4 = Scheme::new(Precision::Int4).asymmetric(asym).with_granularity(g);
        let qp4 = QParams::from_ranges(s4, &map, &range::ranges(&x, &map, false).unwrap());
        let (mut p_cl, mut p_cpu) = (vec![0u8; n.div_ceil(2)], vec![0u8; n.div_ceil(2)]);
        cl.quantize_packed(&x, &map, &qp4, &mut p_cl).unwrap();
        quantize_packed(&x, &shape, &qp4, false, &mut p_cpu).unwrap();
        prop_assert_eq!(&p_cpu, &p_cl);

        // Parameters and codes from one upload.
        let mut f_codes = vec![0u8; n];
        prop_assert_eq!(cl.quantize_minmax(&x, &map, s, false, &mut f_codes).unwrap(), qp.clone());
        prop_assert_eq!(&f_codes, &q_cl);
        let mut f_packed = vec![0u8; n.div_ceil(2)];
        prop_assert_eq!(cl.quantize_minmax(&x, &map, s4, true, &mut f_packed).unwrap(), qp4);
        prop_assert_eq!(f_packed, p_cl);

        let y: Vec<f32> = x.iter().map(|v| v * 0.75 - 0.125).collect();
        let (a, b) = (cl.metrics(&x, &y).unwrap(), metrics(&x, &y).unwrap());
        prop_assert!((a.mse - b.mse).abs() <= 1e-6 * b.mse && (a.cosine - b.cosine).abs() <= 1e-6);
    }
}

#[test]
fn too_many_bins_for_local_memory_is_a_device_error() {
    let Some(cl) = backend() else { return };
    let bins = (cl.local_memory / 4) as usize;
    let map = ParamMap::new(&[4], Granularity::PerTensor).unwrap();
    let e = cl.histogram_counts(&[1.0; 4], &map, &[0.0], &[1.0], bins, true).unwrap_err();
    assert!(matches!(e, Error::Device(ref m) if m.contains("local memory")), "{e}");
}

#[test]
fn f16_input_is_read_with_vload_half_and_matches_cpu() {
    let Some(cl) = backend() else { return };
    for shape in [&[0usize][..], &[7], &[33, 96]] {
        let n: usize = shape.iter().product();
        let mut x: Vec<half::f16> = data(n, 3).into_iter().map(half::f16::from_f32).collect();
        if n > 40 {
            x[40] = half::f16::from_f32(65504.0);
        }
        for g in [Granularity::PerTensor, Granularity::PerChannel { axis: 0 }] {
            let s = Scheme::new(Precision::Int8).asymmetric(true).with_granularity(g);
            let qp = minmax_qparams(&x, shape, s, false).unwrap();
            let map = ParamMap::new(shape, g).unwrap();
            let (mut q_cpu, mut q_cl) = (vec![0u8; n], vec![0u8; n]);
            quantize(&x, shape, &qp, false, &mut q_cpu).unwrap();
            cl.quantize(&x, &map, &qp, &mut q_cl).unwrap();
            assert_eq!(q_cpu, q_cl, "{shape:?} {g:?}");
        }
    }
}

#[test]
fn device_quantize_minmax_rejects_bad_shapes() {
    let Some(cl) = backend() else { return };
    let map = ParamMap::new(&[4], Granularity::PerTensor).unwrap();
    let s8 = Scheme::new(Precision::Int8);
    let e = cl.quantize_minmax(&[1.0; 4], &map, s8, false, &mut [0u8; 3]).unwrap_err();
    assert!(e.to_string().contains("output 3 (want 4)"), "{e}");
    let e = cl.quantize_minmax(&[1.0; 4], &map, s8, true, &mut [0u8; 2]).unwrap_err();
    assert_eq!(e.to_string(), "invalid argument: packing needs int4");
}

/// A tensor bigger than two stream chunks, so both lanes run twice and the last chunk is short.
#[test]
fn streamed_quantize_spans_chunks_and_matches_cpu() {
    let Some(cl) = backend() else { return };
    let n = 2 * rxquant::gpu::stream::CHUNK + 3 * 4096 + 64;
    let shape = [n / 64, 64];
    let x = data(n, 99);
    for g in [Granularity::PerChannel { axis: 1 }, Granularity::PerGroup { axis: 1, size: 32 }] {
        let s = Scheme::new(Precision::Int4).asymmetric(true).with_granularity(g);
        let qp = calibrate(&x, &shape, s, Method::MinMax, &CalibOptions::default()).unwrap();
        let map = ParamMap::new(&shape, g).unwrap();
        let mut want = vec![0u8; n];
        quantize(&x, &shape, &qp, false, &mut want).unwrap();
        let mut got = vec![0u8; n];
        cl.quantize(&x, &map, &qp, &mut got).unwrap();
        assert!(got == want, "streamed codes differ from the CPU's");
        let mut packed = vec![0u8; n.div_ceil(2)];
        cl.quantize_packed(&x, &map, &qp, &mut packed).unwrap();
        let mut want_packed = vec![0u8; n.div_ceil(2)];
        quantize_packed(&x, &shape, &qp, false, &mut want_packed).unwrap();
        assert!(packed == want_packed, "streamed packed codes differ from the CPU's");
    }
    // f16 input streams at two bytes a value.
    let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
    let s = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 0 });
    let qp = calibrate(&h, &shape, s, Method::MinMax, &CalibOptions::default()).unwrap();
    let mut want = vec![0i8; n];
    quantize(&h, &shape, &qp, false, &mut want).unwrap();
    let mut got = vec![0u8; n];
    cl.quantize(&h, &ParamMap::new(&shape, s.granularity).unwrap(), &qp, &mut got).unwrap();
    assert!(got.iter().zip(&want).all(|(&a, &b)| a == b as u8));
}

/// `XᵀX` in f64 from the inputs, for checking both paths.
fn exact_xtx(x: &[f32], f: usize) -> Vec<f64> {
    let rows = x.len() / f;
    let mut out = vec![0f64; f * (f + 1) / 2];
    for r in 0..rows {
        let row = &x[r * f..(r + 1) * f];
        for i in 0..f {
            for j in 0..=i {
                out[rxquant::hessian::tri_index(i, j)] += row[i] as f64 * row[j] as f64;
            }
        }
    }
    out
}

#[test]
fn device_xtx_equals_the_cpu_within_1e6() {
    let Some(cl) = backend() else { return };
    for (rows, f) in [(1, 1), (5, 3), (1300, 70), (2048, 129)] {
        let x = data(rows * f, rows as u64 + 3 * f as u64);
        let obs = HessianObserver::new();
        let dev = cl.hessian_partial(&obs, &x, &[rows, f]).unwrap();
        let cpu = obs.partial(&x, &[rows, f]).unwrap();
        let exact = exact_xtx(&x, f);
        let scale = exact.iter().fold(0f64, |a, &b| a.max(b.abs()));
        let err = |v: &[f64]| v.iter().zip(&exact).fold(0f64, |a, (&p, &q)| a.max((p - q).abs())) / scale;
        assert_eq!(dev.count, rows as u64);
        assert!(err(&dev.sum) < 1e-6, "device XᵀX ({rows}, {f}) off by {:.2e}", err(&dev.sum));
        let between = dev.sum.iter().zip(&cpu.sum).fold(0f64, |a, (&p, &q)| a.max((p - q).abs())) / scale;
        assert!(between < 1e-6, "device and CPU XᵀX ({rows}, {f}) differ by {between:.2e}");
    }
    // The same checks as the CPU path: a wrong width and NaN are errors that name them.
    let mut obs = HessianObserver::new();
    obs.update(&[1f32, 2.0, 3.0], &[1, 3]).unwrap();
    assert!(matches!(cl.hessian_partial(&obs, &[1f32; 4], &[2, 2]), Err(Error::Shape(_))));
    assert!(matches!(cl.hessian_partial(&obs, &[f32::NAN, 0.0, 0.0], &[1, 3]), Err(Error::NonFinite { .. })));
}

#[test]
fn device_layer_error_matches_the_host_sum() {
    let Some(cl) = backend() else { return };
    let (rows, cols) = (37, 96);
    let d = data(rows * cols, 5);
    let x = data(300 * cols, 6);
    let mut obs = HessianObserver::new();
    obs.update(&x, &[300, cols]).unwrap();
    let h = obs.hessian().unwrap();
    let mut want = 0f64;
    for r in 0..rows {
        for i in 0..cols {
            for j in 0..cols {
                want += d[r * cols + i] as f64 * h[i * cols + j] * d[r * cols + j] as f64;
            }
        }
    }
    want /= 2.0;
    let got = cl.layer_error(&d, rows, cols, &h).unwrap();
    assert!(((got - want) / want).abs() < 1e-5, "{got} vs {want}");
}

/// Device GPTQ gives the CPU's codes, except where a weight sits within f32 rounding of a step
/// boundary (the block updates add the same products in another order): at most one code in a
/// thousand may differ, by one step, and the layer's output error stays within 0.1%.
#[test]
fn device_gptq_gives_the_cpus_codes() {
    let Some(cl) = backend() else { return };
    for (rows, cols, group, act_order) in
        [(48, 256, Some(32), false), (40, 300, None, false), (33, 256, Some(64), true)]
    {
        let w = data(rows * cols, 11 + cols as u64);
        let x = data(512 * cols, 12);
        let mut obs = HessianObserver::new();
        obs.update(&x, &[512, cols]).unwrap();
        let h = obs.hessian().unwrap();
        let g = match group {
            Some(size) => Granularity::PerGroup { axis: 1, size },
            None => Granularity::PerChannel { axis: 0 },
        };
        let s = Scheme::new(Precision::Int4).asymmetric(true).with_granularity(g);
        let opts = GptqOptions { act_order, block_size: 64, ..Default::default() };
        let cpu = gptq(&w, rows, cols, &h, s, &opts).unwrap();
        let dev = cl.gptq(&w, rows, cols, &h, s, &opts).unwrap();
        let differ = cpu.codes.iter().zip(&dev.codes).filter(|(a, b)| a != b).count();
        assert!(differ * 1000 <= cpu.codes.len(), "{differ} of {} codes differ", cpu.codes.len());
        assert!(cpu.codes.iter().zip(&dev.codes).all(|(&a, &b)| (a as i32 - b as i32).abs() <= 1));
        assert_eq!(cpu.qparams.scale.len(), dev.qparams.scale.len());
    }
}

#[test]
fn measured_figures_are_positive_and_finite() {
    let Some(cl) = backend() else { return };
    let f = cl.measure().unwrap();
    for v in [
        f.upload_gbs,
        f.download_gbs,
        f.pageable_upload_gbs,
        f.memory_gbs,
        f.quantize_gbs,
        f.gemm_gflops,
        f.stream_gbs,
        f.latency_s,
    ] {
        assert!(v.is_finite() && v > 0.0, "{f:?}");
    }
    let c = rxquant::gpu::measure::measure_cpu().unwrap();
    assert!(c.quantize_gbs > 0.0 && c.gemm_gflops > 0.0 && c.threads > 0);
}

#[test]
fn trace_reports_uploads_kernels_and_downloads() {
    let Some(cl) = backend() else { return };
    let x = data(4096, 1);
    let s = Scheme::new(Precision::Int8);
    let qp = calibrate(&x, &[4096], s, Method::MinMax, &CalibOptions::default()).unwrap();
    let mut out = vec![0u8; 4096];
    cl.start_trace();
    cl.quantize(&x, &ParamMap::new(&[4096], s.granularity).unwrap(), &qp, &mut out).unwrap();
    let t = cl.take_trace().unwrap();
    let kinds: Vec<&str> = t.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"upload") && kinds.contains(&"quantize_f32") && kinds.contains(&"download"),
        "{kinds:?}"
    );
    assert!(t.iter().all(|e| e.seconds >= 0.0));
}
