/* Two limits of a CPU that decide lmforge's CPU targets, measured directly:
 *
 *  1. how many 512-bit instructions of each kind issue per cycle (16
 *     independent ones in a loop, inline assembly, one core): vpdpbusd
 *     (quantized products), vfmadd231ps (f32 products), vdpbf16ps (bf16
 *     products), and plain vpaddd / vmulps for comparison;
 *  2. how fast 2 threads stream-read arrays of 8 MB to 1 GiB, read again and
 *     again (best of 8 passes): the cache's speed while the array fits, then
 *     memory's. Decoding reads every weight once per token, so this bounds
 *     one-stream decoding, and shows how much of a model the cache can hold.
 *
 *     gcc -O2 -fopenmp -mavx512f -mavx512vnni -mavx512bf16 bench/cpu_limits.c -o /tmp/cpu_limits
 *     /tmp/cpu_limits
 *
 * Needs AVX-512 with VNNI and BF16 (Intel Cooper Lake / Sapphire Rapids on,
 * AMD Zen 4 on). The clock is estimated from a chain of dependent imul
 * (latency 3 cycles on current Intel and AMD cores); quote lscpu's model name
 * with the figures. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double ghz(void) {
    long n = 300000000, x = 3;
    double t = now();
    for (long i = 0; i < n; i++)
        __asm__ volatile("imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0" : "+r"(x));
    return 12.0 * n / (now() - t) / 1e9;
}

#define ONE(op, r) op " %%zmm30, %%zmm31, %%zmm" #r "\n\t"
#define SIXTEEN(op) ONE(op, 0) ONE(op, 1) ONE(op, 2) ONE(op, 3) ONE(op, 4) ONE(op, 5) \
    ONE(op, 6) ONE(op, 7) ONE(op, 8) ONE(op, 9) ONE(op, 10) ONE(op, 11) ONE(op, 12) \
    ONE(op, 13) ONE(op, 14) ONE(op, 15)
#define CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
#define RATE(name, op, clock) do { \
        long n = 50000000; double t = now(); \
        for (long i = 0; i < n; i++) __asm__ volatile(SIXTEEN(op) ::: CLOBBERS); \
        printf("%-12s %.2f per cycle\n", name, 16.0 * n / ((now() - t) * clock * 1e9)); \
    } while (0)

int main(void) {
    double clock = ghz();
    printf("clock (imul chain): %.2f GHz\n", clock);
    RATE("vpdpbusd", "vpdpbusd", clock);
    RATE("vfmadd231ps", "vfmadd231ps", clock);
    RATE("vdpbf16ps", "vdpbf16ps", clock);
    RATE("vpaddd", "vpaddd", clock);
    RATE("vmulps", "vmulps", clock);

    size_t megabytes[] = {8, 32, 64, 96, 128, 192, 256, 1024};
    for (int m = 0; m < 8; m++) {
        size_t n = megabytes[m] << 18; /* floats */
        float *a = aligned_alloc(64, n * sizeof(float));
        if (!a) return 1;
        for (size_t i = 0; i < n; i++) a[i] = 1.0f;
        double best = 0;
        for (int pass = 0; pass < 8; pass++) {
            double t = now();
            float total = 0;
#pragma omp parallel for reduction(+ : total) num_threads(2)
            for (size_t c = 0; c < 64; c++) {
                __m512 s0 = _mm512_setzero_ps(), s1 = s0;
                for (size_t i = c * (n / 64); i < (c + 1) * (n / 64); i += 32) {
                    s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
                    s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
                }
                total += _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
            }
            double rate = n * sizeof(float) / (now() - t) / 1e9;
            if (rate > best && total > 0) best = rate;
        }
        printf("read %4zu MB, 2 threads: %.1f GB/s\n", megabytes[m], best);
        free(a);
    }
    return 0;
}
