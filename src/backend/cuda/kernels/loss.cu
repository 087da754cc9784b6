// Softmax + cross-entropy over the vocabulary, fused (math in
// backend/cpu/loss.rs). One block per row; the v logits are read in chunks
// of blockDim.x with a running max and sum (online softmax), so a row of any
// vocabulary size needs no more than the block's registers.

__device__ void lmf_row_max_sum(const float* row, u64 v, float* max_out, float* sum_out, float* shared) {
    float m = LMF_NEG_INF, s = 0.0f;
    for (u64 i = threadIdx.x; i < v; i += blockDim.x) {
        float x = row[i];
        float m2 = fmaxf(m, x);
        s = s * expf(m - m2) + expf(x - m2);
        m = m2;
    }
    float row_max = lmf_block_max(m, shared);
    // Each thread's sum rescaled to the row's max, then added.
    float scaled = m == LMF_NEG_INF ? 0.0f : s * expf(m - row_max);
    *sum_out = lmf_block_sum(scaled, shared);
    *max_out = row_max;
}

// losses[r] = log sum exp(row) - row[target]; with has_grad, the row becomes
// dloss * (softmax(row) - onehot(target)). An ignored target: loss 0, grad 0.
extern "C" __global__ void lmf_cross_entropy(float* losses, float* logits, const u32* targets, u64 v,
                                             int has_grad, float dloss) {
    __shared__ float shared[32];
    u64 r = blockIdx.x;
    float* row = logits + r * v;
    u32 target = targets[r];
    if (target == LMF_IGNORE_TARGET) {
        if (threadIdx.x == 0) losses[r] = 0.0f;
        if (has_grad)
            for (u64 i = threadIdx.x; i < v; i += blockDim.x) row[i] = 0.0f;
        return;
    }
    float m, s;
    lmf_row_max_sum(row, v, &m, &s, shared);
    float target_logit = row[target];
    __syncthreads();
    if (threadIdx.x == 0) losses[r] = logf(s) + m - target_logit;
    if (!has_grad) return;
    float scale = dloss / s;
    for (u64 i = threadIdx.x; i < v; i += blockDim.x) {
        float g = expf(row[i] - m) * scale;
        row[i] = i == target ? g - dloss : g;
    }
}

// out[0] = sum of losses (f64, fixed order), out[1] = the counted targets.
// One block.
extern "C" __global__ void lmf_loss_sum(double* out, const float* losses, const u32* targets, u64 n) {
    __shared__ double sums[32];
    __shared__ double counts[32];
    double s = 0.0, k = 0.0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        if (targets[i] != LMF_IGNORE_TARGET) { s += (double)losses[i]; k += 1.0; }
    }
    s = lmf_warp_sum_f64(s);
    k = lmf_warp_sum_f64(k);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sums[warp] = s; counts[warp] = k; }
    __syncthreads();
    if (threadIdx.x != 0) return;
    double total = 0.0, count = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) { total += sums[w]; count += counts[w]; }
    out[0] = total;
    out[1] = count;
}
