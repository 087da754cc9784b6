// GELU (tanh approximation, GPT-2's gelu_new), ReLU and SiLU; the math is
// in backend/cpu/activation.rs. kind: 0 = GELU, 1 = ReLU, 2 = SiLU.

#define LMF_SQRT_2_OVER_PI 0.7978846f
#define LMF_GELU_CUBIC 0.044715f

__device__ __forceinline__ float lmf_gelu_gate(float x) {
    float u = LMF_SQRT_2_OVER_PI * (x + LMF_GELU_CUBIC * x * x * x);
    return 1.0f / (1.0f + expf(-2.0f * u));
}

__device__ __forceinline__ float lmf_sigmoid(float x) {
    return 1.0f / (1.0f + expf(-x));
}

__device__ __forceinline__ float lmf_act(int kind, float x) {
    if (kind == 2) return x * lmf_sigmoid(x);
    return kind == 0 ? x * lmf_gelu_gate(x) : fmaxf(x, 0.0f);
}

__device__ __forceinline__ float lmf_act_grad(int kind, float x) {
    if (kind == 2) {
        float s = lmf_sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
    }
    if (kind != 0) return x > 0.0f ? 1.0f : 0.0f;
    float s = lmf_gelu_gate(x);
    return s + x * 2.0f * s * (1.0f - s) * LMF_SQRT_2_OVER_PI * (1.0f + 3.0f * LMF_GELU_CUBIC * x * x);
}

// out = act(pre).
extern "C" __global__ void lmf_act_forward(float* out, const float* pre, int kind, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        out[i] = lmf_act(kind, pre[i]);
}

// d *= act'(pre): a pre-activation's gradient from its activation's.
extern "C" __global__ void lmf_act_backward(float* d, const float* pre, int kind, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        d[i] *= lmf_act_grad(kind, pre[i]);
}

// SwiGLU (math in backend/cpu/swiglu.rs): fc (n, 2i) = [gate | up],
// out (n, i) = silu(gate) * up.
extern "C" __global__ void lmf_swiglu_forward(float* out, const float* fc, u64 n, u64 i) {
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < n * i; e += (u64)gridDim.x * blockDim.x) {
        u64 r = e / i, j = e % i;
        float gate = fc[r * 2 * i + j], up = fc[r * 2 * i + i + j];
        out[e] = lmf_act(2, gate) * up;
    }
}

// dfc (n, 2i) = [dout * up * silu'(gate) | dout * silu(gate)], overwritten.
extern "C" __global__ void lmf_swiglu_backward(float* dfc, const float* dout, const float* fc, u64 n, u64 i) {
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < n * i; e += (u64)gridDim.x * blockDim.x) {
        u64 r = e / i, j = e % i;
        float gate = fc[r * 2 * i + j], up = fc[r * 2 * i + i + j], dy = dout[e];
        dfc[r * 2 * i + j] = dy * up * lmf_act_grad(2, gate);
        dfc[r * 2 * i + i + j] = dy * lmf_act(2, gate);
    }
}
