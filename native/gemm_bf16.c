// bf16 GEMM on AMX tiles: C = act(A·B + bias) with B rounded to bf16 once,
// when packed, and A rounded (to nearest even) as it is fed to the tiles;
// products and sums are fp32 (TDPBF16PS), bias and ReLU fp32.
//
// On this project's Xeon a TDPBF16PS does 14.6× the arithmetic of fp32
// FMA per core (BenchmarkInstrPeak) while VDPBF16PS does half, so bf16
// means AMX. Tiles: C in four 16 × 16 fp32 tiles (a 32 × 32 block), A in
// two 16 × 32 bf16 tiles (32 rows, 32 of K), B in two 16 × (16 pairs)
// tiles (32 of K, 32 columns): four tile products per 32 of K. A is
// converted into a 2 KiB stack buffer per K step, B is read as packed.
//
// Packed B: panels of 16 columns as PackB, K padded to a multiple of 32,
// each K step of a panel 16 rows of 16 (k, k+1) pairs (the layout
// TDPBF16PS reads for its second source), zeros beyond k and n.
#include "kernels.h"

#include <string.h>

#define NB_NR 16
#define NB_KT 32    // K per tile step
#define NB_AK 1024  // the K up to which a row block of A is converted once

int64_t nb_pack_bf16_len(int64_t k, int64_t n) {
    return (n + NB_NR - 1) / NB_NR * NB_NR * ((k + NB_KT - 1) / NB_KT * NB_KT);
}

// nb_bf16 rounds to nearest even (NaN kept quiet).
uint16_t nb_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

void nb_pack_b_bf16(const float *b, int64_t k, int64_t n, int64_t ldb, int trans, uint16_t *bp) {
    const int64_t panels = (n + NB_NR - 1) / NB_NR, kp = (k + NB_KT - 1) / NB_KT * NB_KT;
    for (int64_t q = 0; q < panels; q++) {
        uint16_t *dst = bp + q * NB_NR * kp;
        for (int64_t p = 0; p < kp; p++) {
            for (int64_t jj = 0; jj < NB_NR; jj++) {
                const int64_t j = q * NB_NR + jj;
                float v = 0.0f;
                if (j < n && p < k) v = trans ? b[j * ldb + p] : b[p * ldb + j];
                // within a K step of 32: row p/2 of the tile, pair slot p%2
                dst[(p / 2) * 2 * NB_NR + jj * 2 + (p & 1)] = nb_bf16(v);
            }
        }
    }
}

// Plain-C baseline with the same rounding (products of bf16 values, fp32
// sums in K order): what the AMX kernel is checked against where it cannot run.
static void gemm_bf16_base(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda,
                           const uint16_t *bp, const float *bias, int relu, float *c, int64_t ldc) {
    const int64_t kp = (k + NB_KT - 1) / NB_KT * NB_KT;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = j0; j < j1; j++) {
            const uint16_t *bq = bp + (j / NB_NR) * NB_NR * kp;
            const int64_t jj = j % NB_NR;
            float s = 0.0f;
            for (int64_t p = 0; p < k; p++) {
                const uint32_t ua = (uint32_t)nb_bf16(a[i * lda + p]) << 16;
                const uint32_t ub = (uint32_t)bq[(p / 2) * 2 * NB_NR + jj * 2 + (p & 1)] << 16;
                float fa, fb;
                memcpy(&fa, &ua, 4), memcpy(&fb, &ub, 4);
                s += fa * fb;
            }
            if (bias) s += bias[j - j0];
            if (relu && !(s > 0.0f)) s = 0.0f;
            c[i * ldc + (j - j0)] = s;
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TGTAMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} nb_amxcfg;

// a16: rows [i, i+mr) of A, K [p0, p0+32) as bf16, 16 rows × 32 (zeros
// beyond mr and k), converted by AVX512_BF16 (round to nearest even).
TGTAMX static inline void load_a(uint16_t *t, const float *a, int64_t lda, int mr, int64_t p0, int64_t k) {
    const int kl = k - p0 < NB_KT ? (int)(k - p0) : NB_KT;
    const __mmask16 m0 = kl >= 16 ? 0xFFFF : (__mmask16)((1u << kl) - 1);
    const __mmask16 m1 = kl >= 32 ? 0xFFFF : kl > 16 ? (__mmask16)((1u << (kl - 16)) - 1) : 0;
    for (int r = 0; r < 16; r++) {
        __m512 lo = _mm512_setzero_ps(), hi = lo;
        if (r < mr) {
            const float *ar = a + r * lda + p0;
            lo = _mm512_maskz_loadu_ps(m0, ar);
            hi = _mm512_maskz_loadu_ps(m1, ar + 16);
        }
        _mm512_storeu_si512((void *)(t + r * NB_KT), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

// epilogue: one 16 × 16 fp32 tile (in t) to rows [0, mr), columns [0, nc)
// of c, with bias and ReLU.
TGTAMX static inline void store_c(const float *t, const float *bb, int relu, float *c, int64_t ldc, int mr, int nc) {
    const __mmask16 mk = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
    const __m512 b = _mm512_maskz_loadu_ps(mk, bb), z = _mm512_setzero_ps();
    for (int r = 0; r < mr; r++) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(t + r * 16), b);
        if (relu) v = _mm512_max_ps(v, z);
        _mm512_mask_storeu_ps(c + r * ldc, mk, v);
    }
}

TGTAMX static void gemm_bf16_amx(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda,
                                 const uint16_t *bp, const float *bias, int relu, float *c, int64_t ldc) {
    nb_amxcfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    _tile_loadconfig(&cfg);
    const int64_t kp = (k + NB_KT - 1) / NB_KT * NB_KT, ps = NB_NR * kp;
    // A's 32-row block converted once for all its column tiles when its K
    // fits (64 KiB of stack), else K step by K step for each
    uint16_t ab[2 * (NB_AK / NB_KT) * 16 * NB_KT] __attribute__((aligned(64)));
    const int whole = kp <= NB_AK;
    float ct[16 * 16] __attribute__((aligned(64)));
    for (int64_t i = 0; i < m; i += 32) {
        const int mr0 = m - i < 16 ? (int)(m - i) : 16;
        const int mr1 = m - i - 16 <= 0 ? 0 : m - i - 16 < 16 ? (int)(m - i - 16) : 16;
        if (whole)
            for (int64_t p0 = 0; p0 < kp; p0 += NB_KT) {
                uint16_t *t = ab + (p0 / NB_KT) * 2 * 16 * NB_KT;
                load_a(t, a + i * lda, lda, mr0, p0, k);
                if (mr1) load_a(t + 16 * NB_KT, a + (i + 16) * lda, lda, mr1, p0, k);
            }
        for (int64_t j = j0; j < j1; j += 2 * NB_NR) {
            const int nc = j1 - j < 2 * NB_NR ? (int)(j1 - j) : 2 * NB_NR;
            const uint16_t *b0 = bp + (j / NB_NR) * ps, *b1 = b0 + ps;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t p0 = 0; p0 < kp; p0 += NB_KT) {
                uint16_t *t = ab;
                if (whole) {
                    t += (p0 / NB_KT) * 2 * 16 * NB_KT;
                } else {
                    load_a(t, a + i * lda, lda, mr0, p0, k);
                    if (mr1) load_a(t + 16 * NB_KT, a + (i + 16) * lda, lda, mr1, p0, k);
                }
                _tile_loadd(4, t, 64);
                if (mr1) _tile_loadd(5, t + 16 * NB_KT, 64);
                _tile_loadd(6, b0 + p0 * NB_NR, 64);
                _tile_dpbf16ps(0, 4, 6);
                if (mr1) _tile_dpbf16ps(2, 5, 6);
                if (nc > NB_NR) {
                    _tile_loadd(7, b1 + p0 * NB_NR, 64);
                    _tile_dpbf16ps(1, 4, 7);
                    if (mr1) _tile_dpbf16ps(3, 5, 7);
                }
            }
            const float *bb0 = bias ? bias + (j - j0) : NULL;
            float zb[2 * NB_NR] = {0};
            float bbuf[2 * NB_NR];
            if (bb0) {
                memcpy(bbuf, bb0, (size_t)nc * sizeof(float));
                memset(bbuf + nc, 0, (size_t)(2 * NB_NR - nc) * sizeof(float));
            }
            const float *bv = bb0 ? bbuf : zb;
            float *cij = c + i * ldc + (j - j0);
            const int nc0 = nc < NB_NR ? nc : NB_NR, nc1 = nc - nc0;
            _tile_stored(0, ct, 64);
            store_c(ct, bv, relu, cij, ldc, mr0, nc0);
            if (nc1) {
                _tile_stored(1, ct, 64);
                store_c(ct, bv + NB_NR, relu, cij + NB_NR, ldc, mr0, nc1);
            }
            if (mr1) {
                _tile_stored(2, ct, 64);
                store_c(ct, bv, relu, cij + 16 * ldc, ldc, mr1, nc0);
                if (nc1) {
                    _tile_stored(3, ct, 64);
                    store_c(ct, bv + NB_NR, relu, cij + 16 * ldc + NB_NR, ldc, mr1, nc1);
                }
            }
        }
    }
    _tile_release();
}
#endif

// nb_gemm_bf16: columns [j0, j1) of act(A·B + bias) with B packed by
// nb_pack_b_bf16; amx selects the AMX kernel (the caller has checked the
// CPU and obtained the tile state), else the plain-C loop.
void nb_gemm_bf16(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, const uint16_t *bp,
                  const float *bias, int relu, float *c, int64_t ldc, int amx) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (amx) {
        gemm_bf16_amx(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
        return;
    }
#endif
    (void)amx;
    gemm_bf16_base(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
}
