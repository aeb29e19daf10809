//! Runs one kernel in a loop for a profiler (`perf record`, `valgrind --tool=callgrind`).
//!
//! `cargo run --release --example profile_kernels -- KERNEL [ITERATIONS]` with KERNEL one of
//! `int8_channel`, `int8_group32`, `int4_group32_packed`, `metrics`, `histogram`.

use rxquant::hist::{Hist, HistKind};
use rxquant::*;

fn main() -> rxquant::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let kernel = args.get(1).map(String::as_str).unwrap_or("int8_group32");
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let (r, c) = (4096, 4096);
    let mut s = 0x9E3779B97F4A7C15u64;
    let x: Vec<f32> = (0..r * c)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let shape = [r, c];
    let group = |p: Precision, sym: bool| {
        Scheme::new(p).asymmetric(!sym).with_granularity(Granularity::PerGroup { axis: -1, size: 32 })
    };
    let mut codes = vec![0i8; x.len()];
    let mut packed = vec![0u8; x.len() / 2];
    for _ in 0..iters {
        match kernel {
            "int8_channel" => {
                let s = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 0 });
                let qp = minmax_qparams(&x, &shape, s, false)?;
                quantize(&x, &shape, &qp, false, &mut codes)?;
            }
            "int8_group32" => {
                let qp = minmax_qparams(&x, &shape, group(Precision::Int8, true), false)?;
                quantize(&x, &shape, &qp, false, &mut codes)?;
            }
            "int4_group32_packed" => {
                let qp = minmax_qparams(&x, &shape, group(Precision::Int4, false), false)?;
                quantize_packed(&x, &shape, &qp, false, &mut packed)?;
            }
            "metrics" => {
                metrics(&x, &x[..])?;
            }
            "histogram" => {
                let mut h = Hist::empty(2048);
                h.cover(0.0, 1.0);
                h.add(&x, HistKind::Abs);
            }
            other => return Err(Error::Invalid(format!("unknown kernel {other:?}"))),
        }
    }
    Ok(())
}
