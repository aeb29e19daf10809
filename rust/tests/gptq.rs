//! GPTQ and the Hessian observer, from Rust alone: GPTQ with `H = I` is round-to-nearest; on
//! correlated inputs its output error is below round-to-nearest's; dead inputs, activation order,
//! damping and bad input behave as documented.

use rxquant::*;

/// Deterministic pseudo-random numbers in [-0.5, 0.5).
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Inputs with correlated features: x = z A with a random mixing matrix, plus a few loud features.
fn inputs(n: usize, f: usize, seed: u64) -> Vec<f32> {
    let z = uniform(n * f, seed);
    let a = uniform(f * f, seed + 1);
    let mut x = vec![0f32; n * f];
    for r in 0..n {
        for j in 0..f {
            let mut v = 0.0;
            for k in 0..f {
                v += z[r * f + k] * a[k * f + j];
            }
            x[r * f + j] = v * if j % 7 == 0 { 4.0 } else { 1.0 };
        }
    }
    x
}

fn hessian_of(x: &[f32], f: usize) -> Vec<f64> {
    let mut o = HessianObserver::new();
    o.update(x, &[x.len() / f, f]).unwrap();
    o.hessian().unwrap()
}

/// ‖X (W − Ŵ)ᵀ‖² / N
fn output_error(x: &[f32], w: &[f32], w_hat: &[f32], rows: usize, f: usize) -> f64 {
    let n = x.len() / f;
    let mut e = 0.0;
    for s in 0..n {
        for r in 0..rows {
            let mut v = 0.0f64;
            for j in 0..f {
                v += x[s * f + j] as f64 * (w[r * f + j] - w_hat[r * f + j]) as f64;
            }
            e += v * v;
        }
    }
    e / n as f64
}

fn dequantize_codes(codes: &[u8], qp: &QParams, rows: usize, cols: usize) -> Vec<f32> {
    let mut y = vec![0f32; rows * cols];
    if qp.scheme.signed() {
        let c: Vec<i8> = codes.iter().map(|&b| b as i8).collect();
        dequantize(&c, &[rows, cols], qp, &mut y).unwrap();
    } else {
        dequantize(codes, &[rows, cols], qp, &mut y).unwrap();
    }
    y
}

fn rtn(w: &[f32], rows: usize, cols: usize, scheme: Scheme) -> (Vec<u8>, QParams) {
    let qp = calibrate(w, &[rows, cols], scheme, Method::Mse, &CalibOptions::default()).unwrap();
    let mut codes = vec![0u8; w.len()];
    if scheme.signed() {
        let mut c = vec![0i8; w.len()];
        quantize(w, &[rows, cols], &qp, false, &mut c).unwrap();
        codes.iter_mut().zip(&c).for_each(|(o, &v)| *o = v as u8);
    } else {
        quantize(w, &[rows, cols], &qp, false, &mut codes).unwrap();
    }
    (codes, qp)
}

fn schemes() -> Vec<(&'static str, Scheme)> {
    let g = |s: Scheme, size| s.with_granularity(Granularity::PerGroup { axis: -1, size });
    let i4 = Scheme::new(Precision::Int4);
    vec![
        ("int4 g16 asym", g(i4.asymmetric(true), 16)),
        ("int4 g32 signed", g(i4.with_signed_scale(), 32)),
        ("int4 channel", i4.with_granularity(Granularity::PerChannel { axis: 0 })),
        ("int8 tensor", Scheme::new(Precision::Int8)),
        ("int8 g32 asym", g(Scheme::new(Precision::Int8).asymmetric(true), 32)),
    ]
}

#[test]
fn identity_hessian_is_round_to_nearest() {
    let (rows, cols) = (24, 64);
    let w = uniform(rows * cols, 3);
    let mut eye = vec![0f64; cols * cols];
    (0..cols).for_each(|i| eye[i * cols + i] = 1.0);
    for (name, scheme) in schemes() {
        let g = gptq(&w, rows, cols, &eye, scheme, &GptqOptions { block_size: 16, ..Default::default() })
            .unwrap();
        let (codes, qp) = rtn(&w, rows, cols, scheme);
        assert_eq!(g.qparams, qp, "{name}");
        assert_eq!(g.codes, codes, "{name}");
    }
}

#[test]
fn gptq_output_error_is_below_round_to_nearest() {
    let (rows, cols, n) = (32, 96, 512);
    for seed in 0..3 {
        let w = uniform(rows * cols, 10 + seed);
        let x = inputs(n, cols, 20 + seed);
        let h = hessian_of(&x, cols);
        for (name, scheme) in schemes() {
            for act_order in [false, true] {
                let opts = GptqOptions { act_order, block_size: 32, ..Default::default() };
                let g = gptq(&w, rows, cols, &h, scheme, &opts).unwrap();
                let (codes, qp) = rtn(&w, rows, cols, scheme);
                // Same layout as quantize: the parameter grid and the code count.
                assert_eq!(g.qparams.grid, qp.grid);
                let eg =
                    output_error(&x, &w, &dequantize_codes(&g.codes, &g.qparams, rows, cols), rows, cols);
                let er = output_error(&x, &w, &dequantize_codes(&codes, &qp, rows, cols), rows, cols);
                assert!(eg < er, "{name} act_order={act_order} seed {seed}: gptq {eg} vs rtn {er}");
            }
        }
    }
}

#[test]
fn dead_inputs_damping_and_bad_input() {
    let (rows, cols) = (8, 32);
    let w = uniform(rows * cols, 5);
    let x = inputs(64, cols, 6);
    let mut h = hessian_of(&x, cols);
    // Input 3 never fires: its weights become 0 whatever they were.
    for j in 0..cols {
        h[3 * cols + j] = 0.0;
        h[j * cols + 3] = 0.0;
    }
    let s = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 0 });
    let g = gptq(&w, rows, cols, &h, s, &GptqOptions::default()).unwrap();
    assert_eq!(g.dead_inputs, 1);
    let y = dequantize_codes(&g.codes, &g.qparams, rows, cols);
    assert!((0..rows).all(|r| y[r * cols + 3] == 0.0));
    // A rank-deficient Hessian (fewer samples than inputs) needs the dampening.
    let few = inputs(8, cols, 7);
    let hs = hessian_of(&few, cols);
    let undamped = GptqOptions { damp: 0.0, ..Default::default() };
    let e = gptq(&w, rows, cols, &hs, s, &undamped).unwrap_err().to_string();
    assert!(e.contains("not positive definite") || e.contains("singular"), "{e}");
    assert!(gptq(&w, rows, cols, &hs, s, &GptqOptions::default()).is_ok());
    // Wrong sizes, NaN, a negative diagonal, an unsupported layout.
    let e = gptq(&w, rows, cols, &h[..10], s, &GptqOptions::default()).unwrap_err().to_string();
    assert!(e.contains("needs 32 x 32 = 1024"), "{e}");
    let mut wn = w.clone();
    wn[5] = f32::NAN;
    assert!(matches!(
        gptq(&wn, rows, cols, &h, s, &GptqOptions::default()),
        Err(Error::NonFinite { count: 1, first_index: 5 })
    ));
    let mut hn = h.clone();
    hn[0] = -1.0;
    assert!(gptq(&w, rows, cols, &hn, s, &GptqOptions::default())
        .unwrap_err()
        .to_string()
        .contains("negative"));
    let by_col = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 1 });
    assert!(gptq(&w, rows, cols, &h, by_col, &GptqOptions::default())
        .unwrap_err()
        .to_string()
        .contains("axis 0"));
    let g7 = Scheme::new(Precision::Int4).with_granularity(Granularity::PerGroup { axis: -1, size: 7 });
    assert!(matches!(gptq(&w, rows, cols, &h, g7, &GptqOptions::default()), Err(Error::GroupSize { .. })));
}

#[test]
fn hessian_observer_matches_float64_and_merges() {
    let f = 40;
    let x = inputs(2500, f, 9); // more rows than one block
    let mut o = HessianObserver::new();
    o.update(&x[..1300 * f], &[1300, f]).unwrap();
    let mut o2 = HessianObserver::new();
    o2.update(&x[1300 * f..], &[100, 12, f]).unwrap();
    o.merge(&o2).unwrap();
    assert_eq!(o.count, 2500);
    let h = o.hessian().unwrap();
    let exact = |i: usize, j: usize| -> f64 {
        (0..2500).map(|r| x[r * f + i] as f64 * x[r * f + j] as f64).sum::<f64>() * 2.0 / 2500.0
    };
    for i in 0..f {
        for j in 0..f {
            // f32 products within a block: the error is relative to the row and column scale.
            let tol = 1e-6 * (exact(i, i) * exact(j, j)).sqrt();
            assert!(
                (h[i * f + j] - exact(i, j)).abs() <= tol,
                "({i},{j}) {} vs {}",
                h[i * f + j],
                exact(i, j)
            );
        }
    }
    let imp = o.importance().unwrap();
    assert!((imp[3] - h[3 * f + 3] / 2.0).abs() < 1e-12);
    assert!(o.update(&x[..10], &[10]).unwrap_err().to_string().contains("10 features, the observer has 40"));
    let mut bad = x[..f].to_vec();
    bad[2] = f32::INFINITY;
    assert!(matches!(o.update(&bad, &[1, f]), Err(Error::NonFinite { .. })));
    assert_eq!(o.count, 2500, "a failed batch changes nothing");
    assert!(HessianObserver::new().hessian().is_err());
}
