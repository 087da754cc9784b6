// Causal self-attention with grouped-query heads, flash-style (math and
// layouts in backend/cpu/attention.rs). Queries come from q: (B, T, .) with
// rows q_stride apart, query head h owning channels h*hs .. (h+1)*hs; keys
// and values from kv: (B, P + T, .) with rows kv_stride apart, key head g at
// k_offset + g*hs and value head g at k_offset + KVC + g*hs (KVC = NKV*hs).
// Query head h reads key/value head g = h / (NH / NKV). GPT-2 is the case
// NKV = NH with q = kv = qkv (B, T, 3C); a Llama's decoding reads its own
// KV cache (k_offset 0).
//
// No (T, T) matrix is ever stored: forward walks the keys with a running
// max and sum (online softmax) and keeps only lse, one number per query;
// backward recomputes each probability from it.
//
// One warp per query row (forward, dQ) or key row (dK, dV); each lane holds
// channels lane, lane + 32, ... of the head, so hs <= 32 * LMF_ATT_LANE_DIMS.
//
// backward, with P = exp(s - lse), f the dropout factor, dP = (dy . v) f and
// Dq = sum_j P_j dP_j (= dy . out):
//   dq = scale * sum_j P_j (dP_j - Dq) k_j
//      = scale * (sum_j P_j dP_j k_j - Dq sum_j P_j k_j)       (one pass)
//   dv_j = sum_i P_ij f_ij dy_i      dk_j = scale * sum_i P_ij (dP_ij - D_i) q_i
// summed also over the query heads of a key/value head's group.

#define LMF_ATT_LANE_DIMS 8

// Where the heads sit in the rows (see above).
struct LmfAttLayout {
    u64 hs, nh, group, q_stride, kv_stride, k_offset, kv_width;
};

__device__ __forceinline__ LmfAttLayout lmf_att_layout(u64 c, u64 nh, u64 nkv, u64 q_stride,
                                                       u64 kv_stride, u64 k_offset) {
    LmfAttLayout l;
    l.hs = c / nh;
    l.nh = nh;
    l.group = nh / nkv;
    l.q_stride = q_stride;
    l.kv_stride = kv_stride;
    l.k_offset = k_offset;
    l.kv_width = nkv * l.hs;
    return l;
}

// The column of a kv row where query head h's keys start (values: + kv_width).
__device__ __forceinline__ u64 lmf_key_column(const LmfAttLayout& l, u64 h) {
    return l.k_offset + (h / l.group) * l.hs;
}

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
extern "C" __global__ void lmf_attention_forward(float* out, float* lse, const float* q, const float* kv,
                                                 u64 t, u64 pos, u64 c, u64 nh, u64 nkv, u64 q_stride,
                                                 u64 kv_stride, u64 k_offset, float p, u64 seed,
                                                 u64 stream) {
    u64 t1 = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    u64 h = blockIdx.y, b = blockIdx.z;
    if (t1 >= t) return;
    LmfAttLayout l = lmf_att_layout(c, nh, nkv, q_stride, kv_stride, k_offset);
    u64 hs = l.hs, keys = pos + t, kcol = lmf_key_column(l, h), vcol = kcol + l.kv_width;
    const float* base = kv + b * keys * kv_stride;
    float scale = rsqrtf((float)hs);
    float qr[LMF_ATT_LANE_DIMS], acc[LMF_ATT_LANE_DIMS];
    lmf_load_head(qr, q + (b * t + t1) * q_stride + h * hs, hs, scale);
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) acc[k] = 0.0f;
    float m = LMF_NEG_INF, sum = 0.0f;
    u64 drop_base = ((b * nh + h) * t + t1) * keys;
    int lane = threadIdx.x & 31;
    for (u64 j = 0; j <= pos + t1; j++) {
        float s = lmf_dot_head(qr, base + j * kv_stride + kcol, hs);
        float m2 = fmaxf(m, s);
        float corr = expf(m - m2);
        float e = expf(s - m2);
        sum = sum * corr + e;
        float w = e * lmf_drop_factor(p, seed, stream, drop_base + j);
        const float* v = base + j * kv_stride + vcol;
#pragma unroll
        for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) {
            u64 d = lane + 32 * k;
            acc[k] = acc[k] * corr + (d < hs ? w * v[d] : 0.0f);
        }
        m = m2;
    }
    lmf_store_head(out + (b * t + t1) * c + h * hs, acc, hs, 1.0f / sum);
    if (lane == 0) lse[(b * nh + h) * t + t1] = m + logf(sum);
}

// dQ, and D (B, NH, T) for the dK/dV pass. Training only (P = 0): qkv and
// dqkv are (B, T, stride) with the queries at column 0. grid (., NH, B).
extern "C" __global__ void lmf_attention_backward_q(float* dqkv, float* dsum, const float* dout,
                                                    const float* qkv, const float* lse, u64 t, u64 c,
                                                    u64 nh, u64 nkv, u64 stride, u64 k_offset,
                                                    float p, u64 seed, u64 stream) {
    u64 i = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    u64 h = blockIdx.y, b = blockIdx.z;
    if (i >= t) return;
    LmfAttLayout l = lmf_att_layout(c, nh, nkv, stride, stride, k_offset);
    u64 hs = l.hs, kcol = lmf_key_column(l, h), vcol = kcol + l.kv_width;
    const float* base = qkv + b * t * stride;
    float scale = rsqrtf((float)hs);
    float q[LMF_ATT_LANE_DIMS], dy[LMF_ATT_LANE_DIMS];
    float pdk[LMF_ATT_LANE_DIMS], pk[LMF_ATT_LANE_DIMS];
    lmf_load_head(q, base + i * stride + h * hs, hs, scale);
    lmf_load_head(dy, dout + (b * t + i) * c + h * hs, hs, 1.0f);
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) { pdk[k] = 0.0f; pk[k] = 0.0f; }
    float L = lse[(b * nh + h) * t + i], D = 0.0f;
    u64 drop_base = ((b * nh + h) * t + i) * t;
    int lane = threadIdx.x & 31;
    for (u64 j = 0; j <= i; j++) {
        const float* kj = base + j * stride + kcol;
        float P = expf(lmf_dot_head(q, kj, hs) - L);
        float dP = lmf_dot_head(dy, base + j * stride + vcol, hs) *
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
    lmf_store_head(dqkv + (b * t + i) * stride + h * hs, pdk, hs, scale);
    if (lane == 0) dsum[(b * nh + h) * t + i] = D;
}

// dK, dV of key/value head g, one warp per key row j, walking the query
// heads of g's group and, for each, the queries i >= j. grid (., NKV, B).
extern "C" __global__ void lmf_attention_backward_kv(float* dqkv, const float* dsum, const float* dout,
                                                     const float* qkv, const float* lse, u64 t, u64 c,
                                                     u64 nh, u64 nkv, u64 stride, u64 k_offset,
                                                     float p, u64 seed, u64 stream) {
    u64 j = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    u64 g = blockIdx.y, b = blockIdx.z;
    if (j >= t) return;
    LmfAttLayout l = lmf_att_layout(c, nh, nkv, stride, stride, k_offset);
    u64 hs = l.hs, kcol = k_offset + g * hs, vcol = kcol + l.kv_width;
    const float* base = qkv + b * t * stride;
    float scale = rsqrtf((float)hs);
    float k_j[LMF_ATT_LANE_DIMS], v_j[LMF_ATT_LANE_DIMS];
    float dk[LMF_ATT_LANE_DIMS], dv[LMF_ATT_LANE_DIMS];
    lmf_load_head(k_j, base + j * stride + kcol, hs, 1.0f);
    lmf_load_head(v_j, base + j * stride + vcol, hs, 1.0f);
#pragma unroll
    for (int k = 0; k < LMF_ATT_LANE_DIMS; k++) { dk[k] = 0.0f; dv[k] = 0.0f; }
    int lane = threadIdx.x & 31;
    for (u64 h = g * l.group; h < (g + 1) * l.group; h++) {
        for (u64 i = j; i < t; i++) {
            const float* qi = base + i * stride + h * hs;
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
    }
    lmf_store_head(dqkv + (b * t + j) * stride + kcol, dk, hs, scale);
    lmf_store_head(dqkv + (b * t + j) * stride + vcol, dv, hs, 1.0f);
}
