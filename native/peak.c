// Register-only throughput loops of the instructions a reduced-precision
// path would build on, for BenchmarkInstrPeak: 12 independent
// accumulators, so the figure is issue throughput, not latency.
#define _GNU_SOURCE
#include "kernels.h"

#include <string.h>

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

// AMX: four tile products per iteration into four 16 × 16 fp32 (int32)
// tiles, as a 32 × 32 block of C would take; bf16 tiles hold 16 × 32
// values, int8 tiles 16 × 64.
typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} nb_tilecfg;

__attribute__((target("amx-tile,amx-bf16,amx-int8"))) static float peak_amx(int kind, int64_t n) {
    nb_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    _tile_loadconfig(&cfg);
    static uint16_t src[16 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++) src[i] = 0x3f80;  // bf16 1.0 (int8: 0x80, 0x3f)
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, src, 64);
    _tile_loadd(5, src, 64);
    _tile_loadd(6, src, 64);
    _tile_loadd(7, src, 64);
    if (kind == 3) {
        for (int64_t i = 0; i < n; i++) {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
    }
    float out[16 * 16];
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}
#endif

#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

// nb_amx_enable asks Linux for the AMX tile state (a process must before
// its first tile instruction); 0 when granted.
int nb_amx_enable(void) {
#if defined(__linux__) && defined(__x86_64__)
    return (int)syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */);
#else
    return -1;
#endif
}

// nb_peak runs n iterations of 12 instructions of kind (0 FMA zmm,
// 1 VDPBF16PS zmm, 2 VPDPBUSD zmm) or of 4 tile products (3 TDPBF16PS,
// 4 TDPBSSD); the caller checks the CPU has them (and nb_amx_enable).
float nb_peak(int kind, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    switch (kind) {
    case 0: return peak_fma512(n);
    case 1: return peak_dpbf16(n);
    case 2: return peak_dpbusd(n);
    case 3:
    case 4: return peak_amx(kind, n);
    }
#endif
    (void)kind, (void)n;
    return 0;
}
