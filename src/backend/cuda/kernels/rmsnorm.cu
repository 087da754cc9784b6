// RMS norm over the c channels of each of n rows (math in
// backend/cpu/rmsnorm.rs): no mean subtracted, no bias. One warp per row.

extern "C" __global__ void lmf_rmsnorm_forward(float* out, float* rstd, const float* inp,
                                               const float* weight, float eps, u64 n, u64 c) {
    u64 row = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= n) return;
    const float* x = inp + row * c;
    float sq = 0.0f;
    for (u64 i = lane; i < c; i += 32) sq += x[i] * x[i];
    float s = 1.0f / sqrtf(lmf_warp_sum(sq) / (float)c + eps);
    float* o = out + row * c;
    for (u64 i = lane; i < c; i += 32) o[i] = x[i] * s * weight[i];
    if (lane == 0) rstd[row] = s;
}

// dinp += rstd * (g - xhat * mean(g * xhat)), g = dout * weight.
extern "C" __global__ void lmf_rmsnorm_backward_input(float* dinp, const float* dout, const float* inp,
                                                      const float* weight, const float* rstd, u64 n,
                                                      u64 c) {
    u64 row = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= n) return;
    const float* x = inp + row * c;
    const float* dy = dout + row * c;
    float s = rstd[row];
    float gx = 0.0f;
    for (u64 i = lane; i < c; i += 32) gx += dy[i] * weight[i] * x[i] * s;
    float gx_mean = lmf_warp_sum(gx) / (float)c;
    float* dx = dinp + row * c;
    for (u64 i = lane; i < c; i += 32) dx[i] += s * (dy[i] * weight[i] - x[i] * s * gx_mean);
}

// dweight[j] += sum_i dout[i, j] * x[i, j] * rstd[i]. Block (32, 8): 32
// channels, 8 row strides, reduced in shared memory in a fixed order.
extern "C" __global__ void lmf_rmsnorm_backward_weight(float* dweight, const float* dout, const float* inp,
                                                       const float* rstd, u64 n, u64 c) {
    __shared__ float part[8][33];
    u64 j = blockIdx.x * 32ull + threadIdx.x;
    float w = 0.0f;
    if (j < c)
        for (u64 i = threadIdx.y; i < n; i += 8) w += dout[i * c + j] * inp[i * c + j] * rstd[i];
    part[threadIdx.y][threadIdx.x] = w;
    __syncthreads();
    if (threadIdx.y != 0 || j >= c) return;
    for (int k = 1; k < 8; k++) w += part[k][threadIdx.x];
    dweight[j] += w;
}
