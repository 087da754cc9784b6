// Shared helpers for every lmforge kernel. NVRTC 13 ships no CUDA headers,
// so no header is pulled in: the few types and constants needed are
// spelled out here.

typedef unsigned int u32;
typedef unsigned long long u64;

#define LMF_IGNORE_TARGET 0xFFFFFFFFu
#define LMF_FULL_MASK 0xFFFFFFFFu
#define LMF_NEG_INF __int_as_float(0xff800000)

// The same hash as src/rng.rs (splitmix64's finaliser), so GPU dropout masks
// equal the CPU's bit for bit.
__device__ __forceinline__ u64 lmf_mix64(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Dropout's factor for element `i`: 0 with probability p, else 1 / (1 - p).
// p == 0 means "no dropout" (factor 1).
__device__ __forceinline__ float lmf_drop_factor(float p, u64 seed, u64 stream, u64 i) {
    if (p == 0.0f) return 1.0f;
    u64 bits = lmf_mix64(lmf_mix64(lmf_mix64(seed) ^ stream) ^ i);
    float unit = (float)(bits >> 40) * (1.0f / 16777216.0f);
    return unit < p ? 0.0f : 1.0f / (1.0f - p);
}

__device__ __forceinline__ float lmf_warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(LMF_FULL_MASK, x, o);
    return x;
}
__device__ __forceinline__ float lmf_warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(LMF_FULL_MASK, x, o));
    return x;
}
__device__ __forceinline__ double lmf_warp_sum_f64(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(LMF_FULL_MASK, x, o);
    return x;
}

// Sum over a block of 32 * k threads, in a fixed order (deterministic);
// `shared` holds 32 floats. Every thread gets the total.
__device__ float lmf_block_sum(float x, float* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    x = lmf_warp_sum(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    x = lane < warps ? shared[lane] : 0.0f;
    return lmf_warp_sum(x);
}
__device__ float lmf_block_max(float x, float* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    x = lmf_warp_max(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    x = lane < warps ? shared[lane] : LMF_NEG_INF;
    return lmf_warp_max(x);
}
