// Rotary position embeddings in place (math in backend/cpu/rope.rs): in
// each of `rows` rows (row r at position pos + r % t), the first `heads`
// heads of head_size channels; channel i pairs with i + hs/2 and the pair
// turns by sign * angle, with (cos, sin) of the angle at
// table[(p * hs/2 + i) * 2 ..]. sign = -1 is backward (the inverse turn).
// One thread per pair.

extern "C" __global__ void lmf_rope(float* x, const float* table, u64 rows, u64 t, u64 pos, u64 heads,
                                    u64 hs, u64 row_stride, float sign) {
    u64 half = hs / 2, n = rows * heads * half;
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < n; e += (u64)gridDim.x * blockDim.x) {
        u64 i = e % half, head = e / half % heads, r = e / (half * heads);
        u64 p = pos + r % t;
        float c = table[(p * half + i) * 2], s = sign * table[(p * half + i) * 2 + 1];
        float* h = x + r * row_stride + head * hs;
        float a = h[i], b = h[i + half];
        h[i] = a * c - b * s;
        h[i + half] = b * c + a * s;
    }
}
