//! Criterion benches of calibration: histogram building and each method's search, on 16M values.
//!
//! Run: `cargo bench --bench calibration` (or `make bench-rust`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rxquant::calib::{entropy_threshold, mse_range, percentile_range};
use rxquant::hist::{Hist, HistKind};
use rxquant::*;
use std::hint::black_box;

fn laplace(n: usize) -> Vec<f32> {
    let mut s = 0x2545F4914F6CDD1Du64;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
            (-u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()) as f32
        })
        .collect()
}

fn calibration(c: &mut Criterion) {
    let x = laplace(1 << 24);
    let mut g = c.benchmark_group("calibration_16M");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((x.len() * 4) as u64));
    g.bench_function("histogram_2048_abs", |b| {
        b.iter(|| {
            let mut h = Hist::empty(2048);
            h.cover(0.0, 20.0);
            h.add(black_box(&x), HistKind::Abs);
            h
        })
    });
    let s = Scheme::new(Precision::Int8);
    for m in [Method::MinMax, Method::Percentile, Method::Entropy, Method::Mse] {
        let opts = CalibOptions { exact: Some(false), ..CalibOptions::default() };
        g.bench_function(format!("calibrate_{}", m.name()), |b| {
            b.iter(|| calibrate(black_box(&x), &[x.len()], s, m, &opts).unwrap())
        });
    }
    g.finish();

    let mut h = Hist::empty(2048);
    h.cover(0.0, x.iter().fold(0f32, |a, v| a.max(v.abs())) as f64);
    h.add(&x, HistKind::Abs);
    let mut g = c.benchmark_group("searches_2048_bins");
    g.bench_function("percentile", |b| b.iter(|| percentile_range(black_box(&h), HistKind::Abs, 99.99)));
    g.bench_function("entropy_int8", |b| b.iter(|| entropy_threshold(black_box(&h), 128)));
    g.bench_function("mse_int8", |b| {
        b.iter(|| mse_range(black_box(&h), HistKind::Abs, &Scheme::new(Precision::Int8)))
    });
    g.finish();

    // The MSE clip search on the data, per group of 32 (weights): 4M values.
    let w = &x[..1 << 22];
    let shape = [w.len() / 4096, 4096];
    let mut g = c.benchmark_group("mse_search_on_data");
    g.throughput(Throughput::Bytes((w.len() * 4) as u64));
    for (name, scheme) in [
        ("int4_g32_asymmetric", Scheme::new(Precision::Int4).asymmetric(true)),
        ("int4_g32_signed_scale", Scheme::new(Precision::Int4).with_signed_scale()),
    ] {
        let scheme = scheme.with_granularity(Granularity::PerGroup { axis: -1, size: 32 });
        let opts = CalibOptions::default();
        g.bench_function(name, |b| {
            b.iter(|| calibrate(black_box(w), &shape, scheme, Method::Mse, &opts).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, calibration);
criterion_main!(benches);
