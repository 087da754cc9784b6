// Layer norm over the c channels of each of n rows (math in
// backend/cpu/layernorm.rs). One warp per row; rows are independent.

extern "C" __global__ void lmf_layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                                 const float* weight, const float* bias, float eps,
                                                 u64 n, u64 c) {
    u64 row = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= n) return;
    const float* x = inp + row * c;
    float sum = 0.0f;
    for (u64 i = lane; i < c; i += 32) sum += x[i];
    float mu = lmf_warp_sum(sum) / (float)c;
    float var = 0.0f;
    for (u64 i = lane; i < c; i += 32) var += (x[i] - mu) * (x[i] - mu);
    float s = rsqrtf(lmf_warp_sum(var) / (float)c + eps);
    float* o = out + row * c;
    for (u64 i = lane; i < c; i += 32) o[i] = (x[i] - mu) * s * weight[i] + (bias ? bias[i] : 0.0f);
    if (lane == 0) { mean[row] = mu; rstd[row] = s; }
}

// dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight.
extern "C" __global__ void lmf_layernorm_backward_input(float* dinp, const float* dout, const float* inp,
                                                        const float* weight, const float* mean,
                                                        const float* rstd, u64 n, u64 c) {
    u64 row = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= n) return;
    const float* x = inp + row * c;
    const float* dy = dout + row * c;
    float mu = mean[row], s = rstd[row];
    float g_sum = 0.0f, gx_sum = 0.0f;
    for (u64 i = lane; i < c; i += 32) {
        float g = dy[i] * weight[i];
        g_sum += g;
        gx_sum += g * (x[i] - mu) * s;
    }
    float g_mean = lmf_warp_sum(g_sum) / (float)c;
    float gx_mean = lmf_warp_sum(gx_sum) / (float)c;
    float* dx = dinp + row * c;
    for (u64 i = lane; i < c; i += 32) {
        float xhat = (x[i] - mu) * s;
        dx[i] += s * (dy[i] * weight[i] - g_mean - xhat * gx_mean);
    }
}

// dweight[j] += sum_i dout[i, j] * xhat[i, j], dbias[j] += sum_i dout[i, j]
// (dbias may be null). Block (32, 8): 32 channels, 8 row strides, reduced in
// shared memory in a fixed order.
extern "C" __global__ void lmf_layernorm_backward_params(float* dweight, float* dbias, const float* dout,
                                                         const float* inp, const float* mean,
                                                         const float* rstd, u64 n, u64 c) {
    __shared__ float w_part[8][33];
    __shared__ float b_part[8][33];
    u64 j = blockIdx.x * 32ull + threadIdx.x;
    float w = 0.0f, b = 0.0f;
    if (j < c) {
        for (u64 i = threadIdx.y; i < n; i += 8) {
            float dy = dout[i * c + j];
            w += dy * (inp[i * c + j] - mean[i]) * rstd[i];
            b += dy;
        }
    }
    w_part[threadIdx.y][threadIdx.x] = w;
    b_part[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y != 0 || j >= c) return;
    for (int k = 1; k < 8; k++) { w += w_part[k][threadIdx.x]; b += b_part[k][threadIdx.x]; }
    dweight[j] += w;
    if (dbias) dbias[j] += b;
}

// dbias[j] += sum_i dout[i, j] over n rows of cols (a linear layer's bias
// gradient); same blocking as lmf_layernorm_backward_params.
extern "C" __global__ void lmf_bias_backward(float* dbias, const float* dout, u64 n, u64 cols) {
    __shared__ float part[8][33];
    u64 j = blockIdx.x * 32ull + threadIdx.x;
    float b = 0.0f;
    if (j < cols)
        for (u64 i = threadIdx.y; i < n; i += 8) b += dout[i * cols + j];
    part[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y != 0 || j >= cols) return;
    for (int k = 1; k < 8; k++) b += part[k][threadIdx.x];
    dbias[j] += b;
}
