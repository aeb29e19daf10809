// rxquant OpenCL kernels. OpenCL C 1.1/1.2 only (Mesa Clover, rusticl, AMD legacy, PoCL):
// no generic address space, no 64-bit atomics, fp16 only through vload_half.
// Element indices are 64-bit (ulong); launches are chunked on the host, each with a `base`.
// The quantize kernels also take `off`, the element index of their buffers' first value, so that a
// tensor can stream through the device in chunks (rust/src/gpu/stream.rs) with whole-tensor indices.
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
                           __global const int* zp, ulong base, ulong off, ulong n, ulong dim, ulong inner,
                           ulong group, int per_group, int qmin, int qmax) {
    ulong i = base + get_global_id(0);
    if (i >= n) return;
    ulong p = param_index(i, dim, inner, group, per_group);
    out[i - off] = (uchar)(code_of(x[i - off], scale[p], zp[p], qmin, qmax) & 0xFF);
}

__kernel void quantize_f16(__global const half* x, __global uchar* out, __global const float* scale,
                           __global const int* zp, ulong base, ulong off, ulong n, ulong dim, ulong inner,
                           ulong group, int per_group, int qmin, int qmax) {
    ulong i = base + get_global_id(0);
    if (i >= n) return;
    ulong p = param_index(i, dim, inner, group, per_group);
    out[i - off] = (uchar)(code_of(vload_half(i - off, x), scale[p], zp[p], qmin, qmax) & 0xFF);
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

// Flat index of the k-th element of parameter cell p (per channel: outer x inner elements; per
// group and per tensor: `group` consecutive elements of dim).
inline ulong cell_elem(ulong p, ulong k, ulong dim, ulong inner, ulong group, int per_group) {
    if (!per_group) return ((k / inner) * dim + p) * inner + k % inner;
    ulong ng = dim / group;
    ulong ii = p % inner, og = p / inner, g = og % ng, o = og / ng;
    return (o * dim + g * group + k) * inner + ii;
}

// Two-stage min/max: work-group (p, s) reduces part s of cell p (its m elements strided by
// splits * local size) in local memory; the host reduces each cell's `splits` partials. Only
// finite values enter a range; non-finite ones are counted. Local size must be a power of two.
__kernel void cell_minmax(__global const float* x, __global float* mn, __global float* mx,
                          __global uint* bad, __local float* lmn, __local float* lmx,
                          __local uint* lbad, ulong group_base, ulong n_params, uint splits,
                          ulong m, ulong dim, ulong inner, ulong group, int per_group) {
    ulong wg = group_base + get_group_id(0);
    ulong p = wg / splits;
    ulong s = wg % splits;
    uint l = get_local_id(0), w = get_local_size(0);
    float lo = INFINITY, hi = -INFINITY;
    uint nb = 0;
    if (p < n_params)
        for (ulong k = s * w + l; k < m; k += (ulong)splits * w) {
            float v = x[cell_elem(p, k, dim, inner, group, per_group)];
            if (isfinite(v)) { lo = fmin(lo, v); hi = fmax(hi, v); }
            else nb++;
        }
    lmn[l] = lo;
    lmx[l] = hi;
    lbad[l] = nb;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint t = w / 2; t > 0; t >>= 1) {
        if (l < t) {
            lmn[l] = fmin(lmn[l], lmn[l + t]);
            lmx[l] = fmax(lmx[l], lmx[l + t]);
            lbad[l] += lbad[l + t];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0 && p < n_params) {
        mn[wg] = lmn[0];
        mx[wg] = lmx[0];
        bad[wg] = lbad[0];
    }
}

// Histogram slot of v, the CPU rule (rust/src/hist.rs): bin floor(v * inv) - start clamped to the
// bins, where inv is a power of two and start an integer, so the arithmetic is exact except when
// v * inv underflows: a negative v then takes the bin below 0's, as the exact floor does. Exact
// zeros in slot `bins`, NaN/Inf in slot `bins + 1`.
inline uint bin_slot(float v, float start, float inv, uint bins, int abs_values) {
    if (abs_values) v = fabs(v);
    if (!isfinite(v)) return bins + 1;
    if (v == 0.0f) return bins;
    float y = v * inv;
    float f = floor(y) - start;
    if (y == 0.0f && v < 0.0f) f -= 1.0f;
    f = f > 0.0f ? f : 0.0f;
    f = f < (float)(bins - 1) ? f : (float)(bins - 1);
    return (uint)f;
}

// Per-cell histograms, `bins + 2` slots each (the bins, exact zeros, NaN/Inf), with the cell's
// own lo and inv. Work-group (p, s) counts part s of cell p (elements k_begin..k_end, strided by
// splits * local size, as in cell_minmax) with local-memory int32 atomics, then merges its local
// histogram into the cell's global one with one atomic add per nonzero slot. The host bounds
// k_end - k_begin so that no u32 count can overflow within a launch.
__kernel void cell_histogram(__global const float* x, __global uint* counts, __local uint* local_counts,
                             __global const float* start, __global const float* inv, ulong group_base,
                             ulong n_params, uint splits, ulong k_begin, ulong k_end, uint bins,
                             int abs_values, ulong dim, ulong inner, ulong group, int per_group) {
    ulong wg = group_base + get_group_id(0);
    ulong p = wg / splits;
    ulong s = wg % splits;
    uint l = get_local_id(0), w = get_local_size(0);
    for (uint b = l; b < bins + 2; b += w) local_counts[b] = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (p < n_params) {
        float cl = start[p], ci = inv[p];
        for (ulong k = k_begin + s * w + l; k < k_end; k += (ulong)splits * w)
            atomic_inc(&local_counts[bin_slot(x[cell_elem(p, k, dim, inner, group, per_group)], cl, ci,
                                              bins, abs_values)]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (p < n_params)
        for (uint b = l; b < bins + 2; b += w)
            if (local_counts[b]) atomic_add(&counts[p * (bins + 2) + b], local_counts[b]);
}

// Per-work-group partials for the error metrics: x^2, y^2, xy, (x-y)^2 and |x-y| summed, and
// max |x-y| (the host adds the partials in f64). Local size must be a power of two.
__kernel void error_sums(__global const float* x, __global const float* y, __global float* partial,
                         __local float* scratch, ulong base, ulong n, ulong group_base) {
    ulong i = base + get_global_id(0);
    uint l = get_local_id(0), w = get_local_size(0);
    float a = 0.0f, b = 0.0f;
    if (i < n) { a = x[i]; b = y[i]; }
    float e = a - b;
    __local float* v = scratch + 6 * l;
    v[0] = a * a;
    v[1] = b * b;
    v[2] = a * b;
    v[3] = e * e;
    v[4] = fabs(e);
    v[5] = fabs(e);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = w / 2; s > 0; s >>= 1) {
        if (l < s) {
            for (int k = 0; k < 5; k++) v[k] += scratch[6 * (l + s) + k];
            v[5] = fmax(v[5], scratch[6 * (l + s) + 5]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0)
        for (int k = 0; k < 6; k++) partial[6 * (group_base + get_group_id(0)) + k] = scratch[k];
}
