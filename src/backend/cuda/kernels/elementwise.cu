// Elementwise kernels over n floats: fill, scale, add, dropout, residual,
// and the column copy of the KV cache.

extern "C" __global__ void lmf_fill(float* dst, float value, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        dst[i] = value;
}

extern "C" __global__ void lmf_scale(float* dst, float alpha, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        dst[i] *= alpha;
}

// dst = a + b (dst may be a or b).
extern "C" __global__ void lmf_add(float* dst, const float* a, const float* b, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        dst[i] = a[i] + b[i];
}

// x[i] *= drop(i): dropout in place (forward and backward alike).
extern "C" __global__ void lmf_dropout(float* x, float p, u64 seed, u64 stream, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        x[i] *= lmf_drop_factor(p, seed, stream, i);
}

// branch = drop(branch) + skip: closes a residual connection.
extern "C" __global__ void lmf_residual(float* branch, const float* skip, float p, u64 seed, u64 stream, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        branch[i] = branch[i] * lmf_drop_factor(p, seed, stream, i) + skip[i];
}

// dst (rows, cols) = columns first .. first + cols of each row of src (rows
// src_stride apart), packed: a Llama's new keys and values into its KV cache.
extern "C" __global__ void lmf_copy_columns(float* dst, const float* src, u64 rows, u64 cols,
                                            u64 src_stride, u64 first) {
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < rows * cols; e += (u64)gridDim.x * blockDim.x)
        dst[e] = src[e / cols * src_stride + first + e % cols];
}
