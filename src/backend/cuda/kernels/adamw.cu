// AdamW with gradient-norm clipping folded in (math in backend/cpu/adamw.rs).
// Three launches, no host round trip between them:
// 1. lmf_sum_squares: per-block partial sums of g^2 (f64), fixed order;
// 2. lmf_grad_norm: adds the partials in order, writes the norm (out[0]) and
//    the clip factor (out[1]; 0 when the norm is not finite);
// 3. lmf_adamw: every parameter of one group, reading the factor from device
//    memory (a factor of 0 means "update nothing").

extern "C" __global__ void lmf_sum_squares(double* partials, const float* g, u64 n) {
    __shared__ double warps[32];
    double s = 0.0;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        double x = (double)g[i];
        s += x * x;
    }
    s = lmf_warp_sum_f64(s);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warps[warp] = s;
    __syncthreads();
    if (threadIdx.x != 0) return;
    double total = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) total += warps[w];
    partials[blockIdx.x] = total;
}

extern "C" __global__ void lmf_grad_norm(float* out, const double* partials, u32 blocks, float clip) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double total = 0.0;
    for (u32 b = 0; b < blocks; b++) total += partials[b];
    float norm = (float)sqrt(total);
    out[0] = norm;
    float factor = 1.0f;
    if (clip > 0.0f) factor = fminf(clip / (norm + 1e-6f), 1.0f);
    // isfinite without headers: a finite float has an exponent below all ones.
    bool finite = (__float_as_uint(norm) & 0x7F800000u) != 0x7F800000u;
    out[1] = finite ? factor : 0.0f;
}

extern "C" __global__ void lmf_adamw(float* p, const float* g, float* m, float* v, const float* norm_out,
                                     float lr, float beta1, float beta2, float eps, float decay,
                                     float bias1, float bias2_sqrt, u64 n) {
    float scale = norm_out[1];
    if (scale == 0.0f) return;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        float gi = g[i] * scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bias2_sqrt + eps;
        p[i] -= decay * p[i] + lr * (mi / bias1) / denom;
    }
}
