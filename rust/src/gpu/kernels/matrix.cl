// rxquant matrix kernels (OpenCL C 1.2): the products behind Hessians (XᵀX), GPTQ's block updates
// and the data-aware layer error. Appended to quant.cl at build time.
//
// One tiled product, C = beta * C + alpha * A B, with A (M x K) and B (K x N) read through
// strides, so XᵀX, W - U E and D H are the same kernel. A work-group computes an RX_TM x RX_TM
// tile of C from RX_TK-deep slices of A and B staged in local memory; each of its
// (RX_TM / RX_WPT)^2 work-items keeps RX_WPT x RX_WPT sums in registers. The host picks the tile
// sizes from the device's local memory and work-group limit (rust/src/gpu/matrix.rs) and passes
// them as -D options; the defaults below fit a GCN work-group (256 items, 32 KiB local memory).

#ifndef RX_TM
#define RX_TM 64
#endif
#ifndef RX_TK
#define RX_TK 16
#endif
#ifndef RX_WPT
#define RX_WPT 4
#endif
#define RX_T (RX_TM / RX_WPT) /* work-items along each side of the tile */

// `lower`: only tiles that touch the lower triangle (n <= m) are computed (for XᵀX, which is
// symmetric); the others are left unwritten. beta == 0 never reads C.
__kernel __attribute__((reqd_work_group_size(RX_T, RX_T, 1)))
void gemm(int M, int N, int K,
          __global const float* A, ulong a_off, int a_rs, int a_cs,
          __global const float* B, ulong b_off, int b_rs, int b_cs,
          __global float* C, ulong c_off, int c_rs, float alpha, float beta, int lower) {
    __local float As[RX_TK][RX_TM + 1];
    __local float Bs[RX_TK][RX_TM + 1];
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int m0 = get_group_id(1) * RX_TM, n0 = get_group_id(0) * RX_TM;
    if (lower && n0 > m0 + RX_TM - 1) return; // the whole work-group leaves: no barrier is skipped
    const int lid = ty * RX_T + tx;
    float acc[RX_WPT][RX_WPT];
    for (int i = 0; i < RX_WPT; i++)
        for (int j = 0; j < RX_WPT; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += RX_TK) {
        // Stage the slices; consecutive work-items read consecutive addresses along whichever
        // index of A (or B) is contiguous.
        for (int t = lid; t < RX_TM * RX_TK; t += RX_T * RX_T) {
            int m, k;
            if (a_rs == 1) { m = t % RX_TM; k = t / RX_TM; } else { k = t % RX_TK; m = t / RX_TK; }
            int gm = m0 + m, gk = k0 + k;
            As[k][m] = (gm < M && gk < K) ? A[a_off + (ulong)gm * a_rs + (ulong)gk * a_cs] : 0.0f;
            int n;
            if (b_cs == 1) { n = t % RX_TM; k = t / RX_TM; } else { k = t % RX_TK; n = t / RX_TK; }
            int gn = n0 + n;
            gk = k0 + k;
            Bs[k][n] = (gn < N && gk < K) ? B[b_off + (ulong)gk * b_rs + (ulong)gn * b_cs] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < RX_TK; k++) {
            float a[RX_WPT], b[RX_WPT];
            for (int i = 0; i < RX_WPT; i++) a[i] = As[k][ty + i * RX_T];
            for (int j = 0; j < RX_WPT; j++) b[j] = Bs[k][tx + j * RX_T];
            for (int i = 0; i < RX_WPT; i++)
                for (int j = 0; j < RX_WPT; j++) acc[i][j] = mad(a[i], b[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < RX_WPT; i++) {
        int m = m0 + ty + i * RX_T;
        if (m >= M) continue;
        for (int j = 0; j < RX_WPT; j++) {
            int n = n0 + tx + j * RX_T;
            if (n >= N) continue;
            ulong c = c_off + (ulong)m * c_rs + n;
            C[c] = beta == 0.0f ? alpha * acc[i][j] : mad(alpha, acc[i][j], beta * C[c]);
        }
    }
}

// (hi, lo) += c as an unevaluated sum (Knuth's two-sum): the running XᵀX keeps about 48 bits
// across slices of rows without needing fp64 on the device.
__kernel void accumulate2(__global float* hi, __global float* lo, __global const float* c, ulong base,
                          ulong n) {
    ulong i = base + get_global_id(0);
    if (i >= n) return;
    float a = hi[i], b = c[i];
    float s = a + b;
    float bb = s - a;
    float err = (a - (s - bb)) + (b - bb);
    hi[i] = s;
    lo[i] += err;
}

// Per-work-group partial sums of x[i] * y[i] (the host adds them in f64). Local size must be a
// power of two.
__kernel void dot_partials(__global const float* x, __global const float* y, __global float* partial,
                           __local float* scratch, ulong base, ulong n, ulong group_base) {
    ulong i = base + get_global_id(0);
    uint l = get_local_id(0), w = get_local_size(0);
    scratch[l] = i < n ? x[i] * y[i] : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = w / 2; s > 0; s >>= 1) {
        if (l < s) scratch[l] += scratch[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) partial[group_base + get_group_id(0)] = scratch[0];
}

// Device-to-device copy: the device's own memory bandwidth, the roofline for the element-wise
// kernels.
__kernel void copy_f32(__global const float4* x, __global float4* y, ulong base, ulong n4) {
    ulong i = base + get_global_id(0);
    if (i < n4) y[i] = x[i];
}
