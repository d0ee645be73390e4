/* The machine's FP32 FMA throughput, one core: twelve FMA chains with distinct starting values.
   (../shared/bench/peak_fma.c starts its ten chains from the same value, and gcc -O2 merges them
   into one chain: its loop holds a single FMA, so it reports ten times the latency-bound rate,
   128 GFLOP/s here against the 102 measured below.) bench/compare builds and runs one copy per
   core at once and adds the figures. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

int main(void) {
    __m256 b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(0.9999999f);
    __m256 a0 = _mm256_set1_ps(0.10f), a1 = _mm256_set1_ps(0.15f), a2 = _mm256_set1_ps(0.20f), a3 = _mm256_set1_ps(0.25f);
    __m256 a4 = _mm256_set1_ps(0.30f), a5 = _mm256_set1_ps(0.35f), a6 = _mm256_set1_ps(0.40f), a7 = _mm256_set1_ps(0.45f);
    __m256 a8 = _mm256_set1_ps(0.50f), a9 = _mm256_set1_ps(0.55f), a10 = _mm256_set1_ps(0.60f), a11 = _mm256_set1_ps(0.65f);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const long n = 200000000;
    for (long i = 0; i < n; i++) {
        a0 = _mm256_fmadd_ps(a0, b, c); a1 = _mm256_fmadd_ps(a1, b, c); a2 = _mm256_fmadd_ps(a2, b, c);
        a3 = _mm256_fmadd_ps(a3, b, c); a4 = _mm256_fmadd_ps(a4, b, c); a5 = _mm256_fmadd_ps(a5, b, c);
        a6 = _mm256_fmadd_ps(a6, b, c); a7 = _mm256_fmadd_ps(a7, b, c); a8 = _mm256_fmadd_ps(a8, b, c);
        a9 = _mm256_fmadd_ps(a9, b, c); a10 = _mm256_fmadd_ps(a10, b, c); a11 = _mm256_fmadd_ps(a11, b, c);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    __m256 r = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)),
                                           _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11))));
    float t[8];
    _mm256_storeu_ps(t, r);
    printf("%.1f GFLOP/s one core (12 independent FMA chains; checksum %g)\n", n * 12.0 * 16 / s / 1e9, t[0]);
    return 0;
}
