// rxquant OpenCL kernels. OpenCL C 1.1/1.2 only (Mesa Clover, rusticl, AMD legacy, PoCL):
// no generic address space, no 64-bit atomics, fp16 only through vload_half.
// Element indices are 64-bit (ulong); launches are chunked on the host, each with a `base`.
//
// Parameter layout (rust/src/layout.rs): the tensor is (outer, dim, inner) around the quantized
// axis; per channel the parameter is the index along dim; per group (per tensor is one group of
// all elements) it is ((o * (dim / group) + d / group) * inner + i).

inline ulong param_index(ulong i, ulong dim, ulong inner, ulong group, int per_group) {
    ulong ii = i % inner;
    ulong od = i / inner;
    ulong d = od % dim;
    if (!per_group) return d;
    ulong o = od / dim;
    return (o * (dim / group) + d / group) * inner + ii;
}

// q = clamp(rint(x / s), qmin - z, qmax - z) + z, the CPU rule (division, round half to even).
inline int code_of(float v, float s, int z, int qmin, int qmax) {
    float r = v / s;
    float lo = (float)(qmin - z), hi = (float)(qmax - z);
    r = r > lo ? r : lo;
    r = r < hi ? r : hi;
    return (int)rint(r) + z;
}

__kernel void quantize_f32(__global const float* x, __global uchar* out, __global const float* scale,
                           __global const int* zp, ulong base, ulong n, ulong dim, ulong inner,
                           ulong group, int per_group, int qmin, int qmax) {
    ulong i = base + get_global_id(0);
    if (i >= n) return;
    ulong p = param_index(i, dim, inner, group, per_group);
    out[i] = (uchar)(code_of(x[i], scale[p], zp[p], qmin, qmax) & 0xFF);
}

__kernel void quantize_f16(__global const half* x, __global uchar* out, __global const float* scale,
                           __global const int* zp, ulong base, ulong n, ulong dim, ulong inner,
                           ulong group, int per_group, int qmin, int qmax) {
    ulong i = base + get_global_id(0);
    if (i >= n) return;
    ulong p = param_index(i, dim, inner, group, per_group);
    out[i] = (uchar)(code_of(vload_half(i, x), scale[p], zp[p], qmin, qmax) & 0xFF);
}

// (q - z) * s; `is_signed` reads the byte as two's complement.
__kernel void dequantize(__global const uchar* q, __global float* out, __global const float* scale,
                         __global const int* zp, ulong base, ulong n, ulong dim, ulong inner,
                         ulong group, int per_group, int is_signed) {
    ulong i = base + get_global_id(0);
    if (i >= n) return;
    ulong p = param_index(i, dim, inner, group, per_group);
    int c = is_signed ? (int)(char)q[i] : (int)q[i];
    out[i] = (float)(c - zp[p]) * scale[p];
}

// Fake quantization and the straight-through-estimator mask (1 inside the grid).
__kernel void fake_quantize(__global const float* x, __global float* out, __global uchar* mask,
                            __global const float* scale, __global const int* zp, ulong base, ulong n,
                            ulong dim, ulong inner, ulong group, int per_group, int qmin, int qmax) {
    ulong i = base + get_global_id(0);
    if (i >= n) return;
    ulong p = param_index(i, dim, inner, group, per_group);
    float s = scale[p];
    int z = zp[p];
    float r = rint(x[i] / s);
    float lo = (float)(qmin - z), hi = (float)(qmax - z);
    mask[i] = (uchar)(r >= lo && r <= hi);
    r = r > lo ? r : lo;
    r = r < hi ? r : hi;
    out[i] = r * s;
}

// Two INT4 codes a byte: element 2j in the low nibble.
__kernel void pack_int4(__global const uchar* codes, __global uchar* out, ulong base, ulong n) {
    ulong j = base + get_global_id(0);
    ulong a = 2 * j;
    if (a >= n) return;
    uchar lo = codes[a] & 0xF;
    uchar hi = (a + 1 < n) ? (codes[a + 1] & 0xF) : 0;
    out[j] = lo | (uchar)(hi << 4);
}

// Min and max of one parameter cell per work-item (finite values only).
__kernel void cell_minmax(__global const float* x, __global float* mn, __global float* mx,
                          ulong n_params, ulong outer, ulong dim, ulong inner, ulong group,
                          int per_group) {
    ulong p = get_global_id(0);
    if (p >= n_params) return;
    float lo = INFINITY, hi = -INFINITY;
    if (!per_group) {
        for (ulong o = 0; o < outer; o++)
            for (ulong ii = 0; ii < inner; ii++) {
                float v = x[(o * dim + p) * inner + ii];
                if (isfinite(v)) { lo = fmin(lo, v); hi = fmax(hi, v); }
            }
    } else {
        ulong ng = dim / group;
        ulong ii = p % inner, og = p / inner, g = og % ng, o = og / ng;
        for (ulong k = 0; k < group; k++) {
            float v = x[(o * dim + g * group + k) * inner + ii];
            if (isfinite(v)) { lo = fmin(lo, v); hi = fmax(hi, v); }
        }
    }
    mn[p] = lo;
    mx[p] = hi;
}

// Histogram of |x| (abs != 0) or x over [lo, lo + bins / inv): local int32 atomics per work-group,
// then one global atomic add per bin. Exact zeros and NaN/Inf are counted apart (slots bins, bins+1).
__kernel void histogram(__global const float* x, __global uint* counts, __local uint* local_counts,
                        ulong base, ulong n, float lo, float inv, uint bins, int abs_values) {
    for (uint b = get_local_id(0); b < bins + 2; b += get_local_size(0)) local_counts[b] = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    ulong i = base + get_global_id(0);
    if (i < n) {
        float v = x[i];
        if (abs_values) v = fabs(v);
        uint slot;
        if (!isfinite(v)) slot = bins + 1;
        else if (v == 0.0f) slot = bins;
        else {
            float f = (v - lo) * inv;
            f = f > 0.0f ? f : 0.0f;
            f = f < (float)(bins - 1) ? f : (float)(bins - 1);
            slot = (uint)f;
        }
        atomic_inc(&local_counts[slot]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint b = get_local_id(0); b < bins + 2; b += get_local_size(0))
        if (local_counts[b]) atomic_add(&counts[b], local_counts[b]);
}

// Per-work-group partial sums for SQNR and cosine: x^2, y^2, xy, (x-y)^2 (host adds them in f64).
__kernel void error_sums(__global const float* x, __global const float* y, __global float* partial,
                         __local float* scratch, ulong base, ulong n) {
    ulong i = base + get_global_id(0);
    uint l = get_local_id(0), w = get_local_size(0);
    float a = 0.0f, b = 0.0f;
    if (i < n) { a = x[i]; b = y[i]; }
    float e = a - b;
    scratch[4 * l + 0] = a * a;
    scratch[4 * l + 1] = b * b;
    scratch[4 * l + 2] = a * b;
    scratch[4 * l + 3] = e * e;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = w / 2; s > 0; s >>= 1) {
        if (l < s)
            for (int k = 0; k < 4; k++) scratch[4 * l + k] += scratch[4 * (l + s) + k];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0)
        for (int k = 0; k < 4; k++) partial[4 * get_group_id(0) + k] = scratch[k];
}
