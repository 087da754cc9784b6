// Token + position embedding (math in backend/cpu/embedding.rs).
// out[i, :] = wte[idx[i], :] + wpe[pos + i % t, :]   (wpe may be null: the bigram table)

extern "C" __global__ void lmf_embedding_forward(float* out, const u32* idx, const float* wte,
                                                 const float* wpe, u64 pos, u64 t, u64 c, u64 n) {
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < n * c; e += (u64)gridDim.x * blockDim.x) {
        u64 i = e / c, ch = e % c;
        float x = wte[(u64)idx[i] * c + ch];
        if (wpe) x += wpe[(pos + i % t) * c + ch];
        out[e] = x;
    }
}

// dwte[idx[i], :] += dout[i, :]. One thread per channel walks the positions
// in order: no atomics, so the sum is the same on every run.
extern "C" __global__ void lmf_embedding_backward_wte(float* dwte, const float* dout, const u32* idx,
                                                      u64 c, u64 n) {
    u64 ch = blockIdx.x * (u64)blockDim.x + threadIdx.x;
    if (ch >= c) return;
    for (u64 i = 0; i < n; i++) dwte[(u64)idx[i] * c + ch] += dout[i * c + ch];
}

// dwpe[p, :] += sum_b dout[b * t + p, :], one thread per (p, channel).
extern "C" __global__ void lmf_embedding_backward_wpe(float* dwpe, const float* dout, u64 t, u64 c, u64 n) {
    u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x;
    if (e >= t * c) return;
    float sum = 0.0f;
    for (u64 row = e / c; row < n; row += t) sum += dout[row * c + e % c];
    dwpe[e] += sum;
}
