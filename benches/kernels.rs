//! Criterion benches of the core kernels on a 4096x4096 float32 matrix (throughput = bytes read).
//!
//! Run: `cargo bench --bench kernels` (or `make bench-rust`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rxquant::*;
use std::hint::black_box;

const R: usize = 4096;
const C: usize = 4096;

fn matrix() -> Vec<f32> {
    // Cheap deterministic pseudo-random values in [-1, 1).
    let mut s = 0x9E3779B97F4A7C15u64;
    (0..R * C)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn kernels(c: &mut Criterion) {
    let x = matrix();
    let shape = [R, C];
    let bytes = (x.len() * 4) as u64;
    let mut g = c.benchmark_group("kernels_4096x4096");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));

    let per_tensor = Scheme::new(Precision::Int8);
    let per_channel = per_tensor.with_granularity(Granularity::PerChannel { axis: 0 });
    let mut q = vec![0i8; x.len()];
    for (name, s) in [("int8_per_tensor_quantize", per_tensor), ("int8_per_channel_quantize", per_channel)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let qp = minmax_qparams(black_box(&x), &shape, s, false).unwrap();
                quantize(&x, &shape, &qp, false, &mut q).unwrap();
            })
        });
    }

    let int4 = Scheme::new(Precision::Int4).with_granularity(Granularity::PerGroup { axis: -1, size: 32 });
    let mut packed = vec![0u8; x.len() / 2];
    g.bench_function("int4_group32_quantize_packed", |b| {
        b.iter(|| {
            let qp = minmax_qparams(black_box(&x), &shape, int4, false).unwrap();
            quantize_packed(&x, &shape, &qp, false, &mut packed).unwrap();
        })
    });

    let qp = minmax_qparams(&x, &shape, per_channel, false).unwrap();
    quantize(&x, &shape, &qp, false, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    g.throughput(Throughput::Bytes(x.len() as u64));
    g.bench_function("int8_per_channel_dequantize", |b| {
        b.iter(|| dequantize(black_box(&q), &shape, &qp, &mut y).unwrap())
    });

    g.throughput(Throughput::Bytes(2 * bytes));
    g.bench_function("metrics", |b| b.iter(|| metrics(black_box(&x), black_box(&y)).unwrap()));

    // llama.cpp's block formats, round to nearest, and back into a buffer already in use.
    g.throughput(Throughput::Bytes(bytes));
    for ty in [
        ggml::GgmlType::Q8_0,
        ggml::GgmlType::Q4_0,
        ggml::GgmlType::Q5_0,
        ggml::GgmlType::Q4K,
        ggml::GgmlType::Q6K,
    ] {
        let mut blocks = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
        g.bench_function(format!("gguf_{}_quantize", ty.name()), |b| {
            b.iter(|| {
                ggml::quantize_rows(ty, black_box(&x), C, ggml::Rounding::Nearest, None, &mut blocks).unwrap()
            })
        });
        g.bench_function(format!("gguf_{}_dequantize", ty.name()), |b| {
            b.iter(|| ggml::dequantize_rows(ty, black_box(&blocks), &mut y).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
