// Register-only throughput loops of the instructions a reduced-precision
// path would build on, for BenchmarkInstrPeak: 12 independent
// accumulators, so the figure is issue throughput, not latency.
#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx512f,fma"))) static float peak_fma512(int64_t n) {
    __m512 c[12];
    for (int i = 0; i < 12; i++) c[i] = _mm512_setzero_ps();
    __m512 a = _mm512_set1_ps(1e-9f), b = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) c[j] = _mm512_fmadd_ps(a, b, c[j]);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    float s = 0;
    for (int j = 0; j < 12; j++) s += _mm512_reduce_add_ps(c[j]);
    return s;
}

__attribute__((target("avx512f,avx512bf16"))) static float peak_dpbf16(int64_t n) {
    __m512 c[12];
    for (int i = 0; i < 12; i++) c[i] = _mm512_setzero_ps();
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = a;
    for (int64_t i = 0; i < n; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) c[j] = _mm512_dpbf16_ps(c[j], a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    float s = 0;
    for (int j = 0; j < 12; j++) s += _mm512_reduce_add_ps(c[j]);
    return s;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static float peak_dpbusd(int64_t n) {
    __m512i c[12];
    for (int i = 0; i < 12; i++) c[i] = _mm512_setzero_si512();
    __m512i a = _mm512_set1_epi8(1), b = a;
    for (int64_t i = 0; i < n; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) c[j] = _mm512_dpbusd_epi32(c[j], a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    int64_t s = 0;
    for (int j = 0; j < 12; j++) s += _mm512_reduce_add_epi32(c[j]);
    return (float)s;
}
#endif

// nb_peak runs n iterations of 12 instructions of kind (0 FMA zmm,
// 1 VDPBF16PS zmm, 2 VPDPBUSD zmm); the caller checks the CPU has them.
float nb_peak(int kind, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    switch (kind) {
    case 0: return peak_fma512(n);
    case 1: return peak_dpbf16(n);
    case 2: return peak_dpbusd(n);
    }
#endif
    (void)kind, (void)n;
    return 0;
}
