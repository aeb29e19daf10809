//! The crate used as a plain Rust library (no Python), with property tests of its invariants.

use proptest::prelude::*;
use rxquant::*;

fn scheme(precision: Precision, symmetric: bool, g: Granularity) -> Scheme {
    Scheme::new(precision).asymmetric(!symmetric).with_granularity(g)
}

fn round_trip(x: &[f32], shape: &[usize], s: Scheme) -> (Vec<f32>, QParams) {
    let qp = minmax_qparams(x, shape, s, false).unwrap();
    let mut y = vec![0f32; x.len()];
    if s.signed() {
        let mut q = vec![0i8; x.len()];
        quantize(x, shape, &qp, false, &mut q).unwrap();
        dequantize(&q, shape, &qp, &mut y).unwrap();
    } else {
        let mut q = vec![0u8; x.len()];
        quantize(x, shape, &qp, false, &mut q).unwrap();
        dequantize(&q, shape, &qp, &mut y).unwrap();
    }
    (y, qp)
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![
        Just(Granularity::PerTensor),
        (-2isize..2).prop_map(|axis| Granularity::PerChannel { axis }),
        Just(Granularity::PerGroup { axis: -1, size: 4 }),
        Just(Granularity::PerGroup { axis: 0, size: 2 }),
    ]
}

proptest! {
    #[test]
    fn error_is_at_most_half_a_step(
        x in prop::collection::vec(-1e3f32..1e3, 48),
        sym in any::<bool>(),
        int4 in any::<bool>(),
        g in granularity(),
    ) {
        let shape = [6, 8];
        let p = if int4 { Precision::Int4 } else { Precision::Int8 };
        let (y, qp) = round_trip(&x, &shape, scheme(p, sym, g));
        let map = ParamMap::new(&shape, g).unwrap();
        map.for_runs(0, x.len(), |off, len, run| {
            for k in 0..len {
                let pi = match run { layout::Run::Const(p) => p, layout::Run::Seq(p) => p + k };
                let err = (x[off + k] - y[off + k]).abs();
                assert!(err <= qp.scale[pi] / 2.0 * 1.0001, "err {err} step {}", qp.scale[pi]);
            }
        });
    }

    #[test]
    fn pack_unpack_round_trip(v in prop::collection::vec(-8i8..=7, 0..101)) {
        let p = pack_int4_signed(&v).unwrap();
        prop_assert_eq!(p.len(), v.len().div_ceil(2));
        prop_assert_eq!(unpack_int4_signed(&p, v.len()).unwrap(), v);
    }

    #[test]
    fn per_channel_equals_per_tensor_on_each_slice(
        x in prop::collection::vec(-50f32..50.0, 35),
        sym in any::<bool>(),
    ) {
        // Shape (5, 7), channels along axis 1: column c is x[r * 7 + c].
        let s = scheme(Precision::Int8, sym, Granularity::PerChannel { axis: 1 });
        let qp = minmax_qparams(&x, &[5, 7], s, false).unwrap();
        let mut q = vec![0u8; 35];
        let mut qs = vec![0i8; 35];
        if sym { quantize(&x, &[5, 7], &qp, false, &mut qs).unwrap() } else { quantize(&x, &[5, 7], &qp, false, &mut q).unwrap() }
        for c in 0..7 {
            let col: Vec<f32> = (0..5).map(|r| x[r * 7 + c]).collect();
            let t = scheme(Precision::Int8, sym, Granularity::PerTensor);
            let qt = minmax_qparams(&col, &[5], t, false).unwrap();
            prop_assert_eq!(qt.scale[0], qp.scale[c]);
            prop_assert_eq!(qt.zero_point[0], qp.zero_point[c]);
            let (mut a, mut b) = (vec![0i8; 5], vec![0u8; 5]);
            if sym {
                quantize(&col, &[5], &qt, false, &mut a).unwrap();
                prop_assert!((0..5).all(|r| a[r] == qs[r * 7 + c]));
            } else {
                quantize(&col, &[5], &qt, false, &mut b).unwrap();
                prop_assert!((0..5).all(|r| b[r] == q[r * 7 + c]));
            }
        }
    }
}

#[test]
fn errors_not_panics() {
    let x = [1.0f32, 2.0, 3.0];
    let s = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 3 });
    assert!(matches!(minmax_qparams(&x, &[3], s, false), Err(Error::Axis { .. })));
    assert!(matches!(minmax_qparams(&x, &[4], Scheme::new(Precision::Int8), false), Err(Error::Shape(_))));
    let mut out = [0i8; 2];
    let qp = minmax_qparams(&x, &[3], Scheme::new(Precision::Int8), false).unwrap();
    assert!(matches!(quantize(&x, &[3], &qp, false, &mut out), Err(Error::Shape(_))));
    assert!(matches!(minmax_qparams(&x, &[3], Scheme::new(Precision::Fp16), false), Err(Error::Invalid(_))));
}

#[test]
fn works_on_large_tensors_in_parallel() {
    let shape = [512, 1024];
    let x: Vec<f32> = (0..512 * 1024).map(|i| ((i as f32) * 0.001).sin()).collect();
    let s = Scheme::new(Precision::Int4).with_granularity(Granularity::PerGroup { axis: -1, size: 32 });
    let (y, _) = round_trip(&x, &shape, s);
    assert!(metrics(&x, &y).unwrap().sqnr_db > 15.0);
}

proptest! {
    // Large cases (up to 4 x 65600 values): fewer of them.
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The one-pass `quantize_minmax` equals `minmax_qparams` then `quantize`/`quantize_packed`,
    /// with groups of 1 to 64 along the last axis (one pass) and other layouts (two passes);
    /// rows up to 2^16 + 64 values so groups straddle the 2^16-value chunks.
    #[test]
    fn quantize_minmax_equals_two_passes(
        rows in 0usize..4,
        cols_per_group in 1usize..40,
        group in prop::sample::select(vec![1usize, 2, 3, 32, 64]),
        big in any::<bool>(),
        sym in any::<bool>(),
        int4 in any::<bool>(),
        nan in any::<bool>(),
        seed in 1u64..1000,
    ) {
        let cols = if big { (1 << 16) / group * group + group } else { cols_per_group * group };
        let shape = [rows, cols];
        let n = rows * cols;
        let mut s = seed;
        let mut x: Vec<f32> = (0..n).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 2001) as f32 / 100.0 - 10.0 }).collect();
        if nan && n > 3 { x[n / 2] = f32::NAN; }
        let p = if int4 { Precision::Int4 } else { Precision::Int8 };
        let layouts = [Granularity::PerGroup { axis: -1, size: group }, Granularity::PerChannel { axis: 0 }, Granularity::PerTensor];
        for g in layouts {
            let sc = scheme(p, sym, g);
            for ignore in [false, true] {
                let want = minmax_qparams(&x, &shape, sc, ignore);
                let mut out = vec![0u8; n];
                let got = quantize_minmax(&x, &shape, sc, ignore, false, &mut out);
                prop_assert_eq!(&got, &want);
                let Ok(qp) = want else { continue };
                let mut codes = vec![0u8; n];
                if sym {
                    let mut q = vec![0i8; n];
                    quantize(&x, &shape, &qp, ignore, &mut q).unwrap();
                    codes.iter_mut().zip(&q).for_each(|(a, &b)| *a = b as u8);
                } else {
                    quantize(&x, &shape, &qp, ignore, &mut codes).unwrap();
                }
                prop_assert_eq!(&out, &codes);
                if int4 {
                    let (mut packed, mut want_packed) = (vec![0u8; n.div_ceil(2)], vec![0u8; n.div_ceil(2)]);
                    prop_assert_eq!(quantize_minmax(&x, &shape, sc, ignore, true, &mut packed).unwrap(), qp.clone());
                    quantize_packed(&x, &shape, &qp, ignore, &mut want_packed).unwrap();
                    prop_assert_eq!(packed, want_packed);
                }
            }
        }
    }
}

#[test]
fn quantize_minmax_rejects_bad_input_with_clear_errors() {
    let x = [1.0f32, -2.0, f32::NAN, 4.0];
    let s8 = scheme(Precision::Int8, true, Granularity::PerGroup { axis: -1, size: 2 });
    let e = quantize_minmax(&x, &[2, 2], s8, false, false, &mut [0u8; 4]).unwrap_err();
    assert_eq!(e, Error::NonFinite { count: 1, first_index: 2 });
    let e = quantize_minmax(&x, &[2, 2], s8, false, false, &mut [0u8; 3]).unwrap_err();
    assert!(e.to_string().contains("output 3 (want 4)"), "{e}");
    let e = quantize_minmax(&x, &[2, 2], s8, true, true, &mut [0u8; 2]).unwrap_err();
    assert_eq!(e.to_string(), "invalid argument: packing needs int4");
    let e = quantize_minmax(&x, &[3, 2], s8, true, false, &mut [0u8; 4]).unwrap_err();
    assert!(e.to_string().contains("shape [3, 2] has 6"), "{e}");
    let fp16 = Scheme::new(Precision::Fp16);
    let e = quantize_minmax(&[1.0f32], &[1], fp16, false, false, &mut [0u8; 1]).unwrap_err();
    assert!(e.to_string().contains("fp16 has no scale"), "{e}");
}

/// The CPU's passes behind the trait's default `observe`: a range pass, then a counting pass.
struct TwoPasses;

impl Reducer<f32> for TwoPasses {
    fn ranges(&self, x: &[f32], map: &ParamMap, ignore_nonfinite: bool) -> Result<range::Ranges> {
        Cpu.ranges(x, map, ignore_nonfinite)
    }

    fn histograms(
        &self,
        x: &[f32],
        map: &ParamMap,
        hists: &mut [hist::Hist],
        kind: hist::HistKind,
    ) -> Result<()> {
        Cpu.histograms(x, map, hists, kind)
    }
}

proptest! {
    /// Per tensor, the one-pass histogram (layout widened as the range grows) equals a range pass
    /// then a counting pass, and every count is the exact bin `floor(v / width) - lo / width`, over
    /// any float32 bits: subnormals, -0.0, values near f32::MAX, NaN/Inf (left out), 2 to 2048
    /// bins. Batches split anywhere merge into the same state.
    #[test]
    fn one_pass_histograms_are_exact_and_equal_two_passes(
        bits in prop::collection::vec(any::<u32>(), 0..3000),
        scale in prop::sample::select(vec![1.0f32, 1e-30, 1e30]),
        small in any::<bool>(),
        bins in prop::sample::select(vec![2usize, 3, 64, 2048]),
        sym in any::<bool>(),
        cut in 0usize..3000,
    ) {
        // Raw bits cover every exponent; `small` keeps most values near 1 (times `scale`).
        let x: Vec<f32> = bits.iter().map(|&b| {
            let v = f32::from_bits(b);
            if small && b % 4 != 0 { ((b % 20001) as f32 / 1000.0 - 10.0) * scale } else { v }
        }).collect();
        let s = scheme(Precision::Int8, sym, Granularity::PerTensor);
        let opts = CalibOptions { bins, ignore_nonfinite: true, exact: Some(false), ..CalibOptions::default() };
        let mut one = Observer::new(s, Method::Percentile, opts.clone()).unwrap();
        let mut two = one.clone();
        let mut parts = one.clone();
        one.update(&x, &[x.len()]).unwrap();
        two.update_on(&TwoPasses, &x, &[x.len()]).unwrap();
        prop_assert_eq!(&one.hists, &two.hists);
        prop_assert_eq!((&one.min, &one.max), (&two.min, &two.max));
        let cut = cut.min(x.len());
        for part in [&x[cut..], &x[..cut]] {
            parts.update(part, &[part.len()]).unwrap();
        }
        prop_assert_eq!(&parts.hists, &one.hists);
        let h = &one.hists[0];
        let mut counts = vec![0u64; bins];
        for &v in x.iter().filter(|v| v.is_finite() && **v != 0.0) {
            let v = if sym { v.abs() } else { v } as f64;
            let b = (v / h.width).floor() - h.lo / h.width;
            prop_assert!(b >= 0.0 && b < bins as f64, "{} outside [{}, {})", v, h.lo, h.hi());
            counts[b as usize] += 1;
        }
        prop_assert_eq!(&counts, &h.counts);
        prop_assert_eq!(h.zeros, x.iter().filter(|v| **v == 0.0).count() as u64);
    }
}
