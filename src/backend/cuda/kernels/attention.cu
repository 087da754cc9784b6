// Causal self-attention, flash-style (math in backend/cpu/attention.rs).
// qkv: (B, P + T, 3C) laid out [q | k | v], head h owning channels
// h*hs .. (h+1)*hs of each part. No (T, T) matrix is ever stored: forward
// walks the keys with a running max and sum (online softmax) and keeps only
// lse, one number per query; backward recomputes each probability from it.
//
// One warp per query row (forward, dQ) or key row (dK, dV); each lane holds
// channels lane, lane + 32, ... of the head, so hs <= 32 * LMF_ATT_LANE_DIMS.
//
// backward, with P = exp(s - lse), f the dropout factor, dP = (dy . v) f and
// Dq = sum_j P_j dP_j (= dy . out):
//   dq = scale * sum_j P_j (dP_j - Dq) k_j
//      = scale * (sum_j P_j dP_j k_j - Dq sum_j P_j k_j)       (one pass)
//   dv_j = sum_i P_ij f_ij dy_i      dk_j = scale * sum_i P_ij (dP_ij - D_i) q_i

#define LMF_ATT_LANE_DIMS 8

__device__ __forceinline__ void lmf_load_head(float* r, const float* row, u64 hs, float scale) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) {
        u64 d = lane + 32 * k;
        r[k] = d < hs ? row[d] * scale : 0.0f;
    }
}

__device__ __forceinline__ float lmf_dot_head(const float* r, const float* row, u64 hs) {
    int lane = threadIdx.x & 31;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) {
        u64 d = lane + 32 * k;
        if (d < hs) s += r[k] * row[d];
    }
    return lmf_warp_sum(s);
}

__device__ __forceinline__ void lmf_store_head(float* row, const float* r, u64 hs, float scale) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) {
        u64 d = lane + 32 * k;
        if (d < hs) row[d] = r[k] * scale;
    }
}

// grid (ceil(T / warps), NH, B). out: (B, T, C); lse: (B, NH, T).
extern "C" __global__ void lmf_attention_forward(float* out, float* lse, const float* qkv, u64 t, u64 pos,
                                                 u64 c, u64 nh, float p, u64 seed, u64 stream) {
    u64 t1 = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    u64 h = blockIdx.y, b = blockIdx.z;
    if (t1 >= t) return;
    u64 hs = c / nh, keys = pos + t, row3 = 3 * c;
    const float* base = qkv + b * keys * row3;
    float scale = rsqrtf((float)hs);
    float q[LMF_ATT_LANE_DIMS], acc[LMF_ATT_LANE_DIMS];
    lmf_load_head(q, base + (pos + t1) * row3 + h * hs, hs, scale);
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) acc[k] = 0.0f;
    float m = LMF_NEG_INF, l = 0.0f;
    u64 drop_base = ((b * nh + h) * t + t1) * keys;
    int lane = threadIdx.x & 31;
    for (u64 j = 0; j <= pos + t1; j++) {
        float s = lmf_dot_head(q, base + j * row3 + c + h * hs, hs);
        float m2 = fmaxf(m, s);
        float corr = expf(m - m2);
        float e = expf(s - m2);
        l = l * corr + e;
        float w = e * lmf_drop_factor(p, seed, stream, drop_base + j);
        const float* v = base + j * row3 + 2 * c + h * hs;
#pragma unroll
        for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) {
            u64 d = lane + 32 * k;
            acc[k] = acc[k] * corr + (d < hs ? w * v[d] : 0.0f);
        }
        m = m2;
    }
    lmf_store_head(out + (b * t + t1) * c + h * hs, acc, hs, 1.0f / l);
    if (lane == 0) lse[(b * nh + h) * t + t1] = m + logf(l);
}

// dQ, and D (B, NH, T) for the dK/dV pass. Training only (P = 0).
extern "C" __global__ void lmf_attention_backward_q(float* dqkv, float* dsum, const float* dout,
                                                    const float* qkv, const float* lse, u64 t, u64 c,
                                                    u64 nh, float p, u64 seed, u64 stream) {
    u64 i = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    u64 h = blockIdx.y, b = blockIdx.z;
    if (i >= t) return;
    u64 hs = c / nh, row3 = 3 * c;
    const float* base = qkv + b * t * row3;
    float scale = rsqrtf((float)hs);
    float q[LMF_ATT_LANE_DIMS], dy[LMF_ATT_LANE_DIMS];
    float pdk[LMF_ATT_LANE_DIMS], pk[LMF_ATT_LANE_DIMS];
    lmf_load_head(q, base + i * row3 + h * hs, hs, scale);
    lmf_load_head(dy, dout + (b * t + i) * c + h * hs, hs, 1.0f);
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) { pdk[k] = 0.0f; pk[k] = 0.0f; }
    float L = lse[(b * nh + h) * t + i], D = 0.0f;
    u64 drop_base = ((b * nh + h) * t + i) * t;
    int lane = threadIdx.x & 31;
    for (u64 j = 0; j <= i; j++) {
        const float* kj = base + j * row3 + c + h * hs;
        float P = expf(lmf_dot_head(q, kj, hs) - L);
        float dP = lmf_dot_head(dy, base + j * row3 + 2 * c + h * hs, hs) *
                   lmf_drop_factor(p, seed, stream, drop_base + j);
        D += P * dP;
#pragma unroll
        for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) {
            u64 d = lane + 32 * k;
            float kd = d < hs ? kj[d] : 0.0f;
            pdk[k] += P * dP * kd;
            pk[k] += P * kd;
        }
    }
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) pdk[k] -= D * pk[k];
    lmf_store_head(dqkv + (b * t + i) * row3 + h * hs, pdk, hs, scale);
    if (lane == 0) dsum[(b * nh + h) * t + i] = D;
}

// dK, dV, one warp per key row j, walking the queries i >= j.
extern "C" __global__ void lmf_attention_backward_kv(float* dqkv, const float* dsum, const float* dout,
                                                     const float* qkv, const float* lse, u64 t, u64 c,
                                                     u64 nh, float p, u64 seed, u64 stream) {
    u64 j = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    u64 h = blockIdx.y, b = blockIdx.z;
    if (j >= t) return;
    u64 hs = c / nh, row3 = 3 * c;
    const float* base = qkv + b * t * row3;
    float scale = rsqrtf((float)hs);
    float k_j[LMF_ATT_LANE_DIMS], v_j[LMF_ATT_LANE_DIMS];
    float dk[LMF_ATT_LANE_DIMS], dv[LMF_ATT_LANE_DIMS];
    lmf_load_head(k_j, base + j * row3 + c + h * hs, hs, 1.0f);
    lmf_load_head(v_j, base + j * row3 + 2 * c + h * hs, hs, 1.0f);
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) { dk[k] = 0.0f; dv[k] = 0.0f; }
    int lane = threadIdx.x & 31;
    for (u64 i = j; i < t; i++) {
        const float* qi = base + i * row3 + h * hs;
        const float* dyi = dout + (b * t + i) * c + h * hs;
        u64 row = (b * nh + h) * t + i;
        float P = expf(lmf_dot_head(k_j, qi, hs) * scale - lse[row]);
        float f = lmf_drop_factor(p, seed, stream, row * t + j);
        float dP = lmf_dot_head(v_j, dyi, hs) * f;
        float dS = P * (dP - dsum[row]);
#pragma unroll
        for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) {
            u64 d = lane + 32 * k;
            if (d < hs) {
                dv[k] += P * f * dyi[d];
                dk[k] += dS * qi[d];
            }
        }
    }
    lmf_store_head(dqkv + (b * t + j) * row3 + c + h * hs, dk, hs, scale);
    lmf_store_head(dqkv + (b * t + j) * row3 + 2 * c + h * hs, dv, hs, 1.0f);
}
