// The gradient norm's partial sums and AdamW with gradient-norm clipping
// folded in (math in backend/cpu/adamw.rs).
//
// lmf_sum_of_squares writes one f64 sum of g^2 per chunk of `chunk`
// gradients (NORM_CHUNK), on the device: only those partial sums (one float64
// per 16384 gradients, 61 KB for GPT-2 124M) go to the host, which adds them
// in chunk order (as every backend and rank does) into the norm. The host
// then passes the clip factor to lmf_adamw as a launch argument: nothing is
// copied back to the device.

// One block per chunk; each thread sums a strided part in f64, then the block
// adds its warps' sums in a fixed order (the same bits on every run).
extern "C" __global__ void lmf_sum_of_squares(double* partials, const float* g, u64 n, u64 chunk) {
    __shared__ double warps[32];
    u64 start = blockIdx.x * chunk;
    u64 end = start + chunk < n ? start + chunk : n;
    double s = 0.0;
    for (u64 i = start + threadIdx.x; i < end; i += blockDim.x) s += (double)g[i] * (double)g[i];
    s = lmf_warp_sum_f64(s);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warps[warp] = s;
    __syncthreads();
    if (threadIdx.x != 0) return;
    double total = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) total += warps[w];
    partials[blockIdx.x] = total;
}

// One AdamW update of one parameter group; `scale` is the clip factor
// (0: update nothing, for a norm that is not finite).
extern "C" __global__ void lmf_adamw(float* p, const float* g, float* m, float* v, float scale,
                                     float lr, float beta1, float beta2, float eps, float decay,
                                     float bias1, float bias2_sqrt, u64 n) {
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
