//! Quantizes a weight matrix with rxquant from plain Rust (no Python) and prints the error.
//!
//! Run: `cargo run --release --example quantize_matrix`

use rxquant::{
    dequantize, metrics, minmax_qparams, quantize, quantize_packed, Granularity, Precision, Scheme,
};

fn main() -> rxquant::Result<()> {
    let (rows, cols) = (256, 512);
    // A deterministic weight-like matrix: rows with different scales.
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            ((c as f32 * 0.37 + r as f32).sin() + 0.3 * (c as f32 * 1.7).cos()) * (1.0 + r as f32 / 64.0)
        })
        .collect();
    let shape = [rows, cols];

    let int8 = Scheme::new(Precision::Int8).with_granularity(Granularity::PerChannel { axis: 0 });
    let qp = minmax_qparams(&w, &shape, int8, false)?;
    let mut q = vec![0i8; w.len()];
    quantize(&w, &shape, &qp, false, &mut q)?;
    let mut y = vec![0f32; w.len()];
    dequantize(&q, &shape, &qp, &mut y)?;
    let m = metrics(&w, &y)?;
    println!(
        "int8 per channel      : {} bytes, SQNR {:.2} dB, cosine {:.6}",
        q.len() + 4 * rows,
        m.sqnr_db,
        m.cosine
    );

    let int4 = Scheme::new(Precision::Int4)
        .asymmetric(true)
        .with_granularity(Granularity::PerGroup { axis: -1, size: 32 });
    let qp = minmax_qparams(&w, &shape, int4, false)?;
    let mut packed = vec![0u8; w.len().div_ceil(2)];
    quantize_packed(&w, &shape, &qp, false, &mut packed)?;
    let codes = rxquant::unpack_int4_unsigned(&packed, w.len())?;
    dequantize(&codes, &shape, &qp, &mut y)?;
    let m = metrics(&w, &y)?;
    println!(
        "int4 group 32 (packed): {} bytes, SQNR {:.2} dB, cosine {:.6}",
        packed.len() + 5 * qp.scale.len(),
        m.sqnr_db,
        m.cosine
    );
    Ok(())
}
