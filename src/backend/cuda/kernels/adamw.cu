// AdamW with gradient-norm clipping folded in (math in backend/cpu/adamw.rs).
// The host computes the norm (from Backend::sum_of_squares' chunk sums, the
// same on every backend and rank) and the clip factor, and writes both to
// norm_out ([norm, factor]; a factor of 0 means "update nothing", for a
// norm that is not finite); lmf_adamw updates every parameter of one group.

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
