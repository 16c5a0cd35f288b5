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

// AVX512_BF16 (AMD Zen 4/5; without AMX): VDPBF16PS adds two bf16
// products into each fp32 lane, and a packed pair step of a panel (16
// columns × 2 consecutive k) is exactly its second operand. The register
// block and its reasons are the int8 VNNI kernel's (gemm_int8.c): 12 rows
// × 32 columns in 24 named accumulators updated by inline asm, A's 12-row
// block rounded to bf16 once, row by row, K chunked past 4096. Sums run in
// pairs, so they differ from the plain-C loop's K order by rounding only.
#define TGTB __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define NB_BMR 12
#define NB_BSTACK 4096  // the K up to which A's block is on the stack (96 KiB)

// Rows [0, mr) of A × K [0, k) rounded to bf16 into t, row r at t[r·ks]
// (ks ≥ k, even), zeros from k to the next pair: B's padding is zero, but
// a leftover NaN times zero would not be.
TGTB static void bf16_rows(uint16_t *t, int64_t ks, const float *a, int64_t lda, int mr, int64_t k) {
    for (int r = 0; r < mr; r++) {
        const float *ar = a + r * lda;
        uint16_t *tr = t + r * ks;
        for (int64_t p = 0; p < k; p += 16) {
            const int n = k - p >= 16 ? 16 : (int)(k - p), w = ks - p >= 16 ? 16 : (int)(ks - p);
            const __mmask16 mk = n == 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
            const __mmask16 mw = w == 16 ? 0xFFFF : (__mmask16)((1u << w) - 1);
            const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, ar + p));
            __m256i hv;
            memcpy(&hv, &h, sizeof hv);
            _mm256_mask_storeu_epi16(tr + p, mw, hv);
        }
    }
}

#define NB_R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
// The fp32 sums of one 12 × 32 block over ng pair steps of t (rows ks
// apart), added to part when init, else from zero, into part.
TGTB __attribute__((noinline)) static void bf16_dot(const uint16_t *t, int64_t ks, int64_t ng, const uint16_t *b0,
                                                    const uint16_t *b1, float *part, int init) {
#define NB_DECL(r) __m512 x##r = _mm512_setzero_ps(), y##r = _mm512_setzero_ps();
    NB_R12(NB_DECL)
#define NB_LOAD(r)                                    \
    x##r = _mm512_loadu_ps(part + (2 * r + 0) * 16); \
    y##r = _mm512_loadu_ps(part + (2 * r + 1) * 16);
    if (init) {
        NB_R12(NB_LOAD)
    }
    for (int64_t g = 0; g < ng; g++) {
        const __m512 v0 = _mm512_loadu_ps((const float *)(b0 + g * 32));
        const __m512 v1 = _mm512_loadu_ps((const float *)(b1 + g * 32));
        const uint16_t *tg = t + 2 * g;
#define NB_DOT(r)                                                        \
    {                                                                    \
        float q2;                                                        \
        memcpy(&q2, tg + r * ks, 4);                                     \
        const __m512 av = _mm512_set1_ps(q2);                            \
        __asm__("vdpbf16ps %2, %1, %0" : "+v"(x##r) : "v"(av), "v"(v0)); \
        __asm__("vdpbf16ps %2, %1, %0" : "+v"(y##r) : "v"(av), "v"(v1)); \
    }
        NB_R12(NB_DOT)
    }
#define NB_KEEP(r)                                     \
    _mm512_storeu_ps(part + (2 * r + 0) * 16, x##r); \
    _mm512_storeu_ps(part + (2 * r + 1) * 16, y##r);
    NB_R12(NB_KEEP)
#undef NB_DECL
#undef NB_LOAD
#undef NB_DOT
#undef NB_KEEP
}

TGTB static void gemm_bf16_avx512(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda,
                                  const uint16_t *bp, const float *bias, int relu, float *c, int64_t ldc) {
    const int64_t kp = (k + NB_KT - 1) / NB_KT * NB_KT, ps = NB_NR * kp, ng = (k + 1) / 2;
    uint16_t t[NB_BMR * NB_BSTACK] __attribute__((aligned(64)));
    const int64_t chunk = NB_BSTACK / 2, whole = ng <= chunk, ks = whole ? 2 * ng : NB_BSTACK;
    float part[NB_BMR * 2 * 16] __attribute__((aligned(64)));
    const __m512 z = _mm512_setzero_ps();
    for (int64_t i = 0; i < m; i += NB_BMR) {
        const int mr = m - i < NB_BMR ? (int)(m - i) : NB_BMR;
        const float *ai = a + i * lda;
        if (whole) bf16_rows(t, ks, ai, lda, mr, k);
        for (int64_t j = j0; j < j1; j += 2 * NB_NR) {
            const int nc = j1 - j < 2 * NB_NR ? (int)(j1 - j) : 2 * NB_NR;
            const uint16_t *b0 = bp + (j / NB_NR) * ps, *b1 = nc > NB_NR ? b0 + ps : b0;
            for (int64_t g0 = 0; g0 < ng; g0 += chunk) {
                const int64_t gn = ng - g0 < chunk ? ng - g0 : chunk;
                if (!whole) bf16_rows(t, ks, ai + 2 * g0, lda, mr, (k - 2 * g0 < 2 * gn ? k - 2 * g0 : 2 * gn));
                bf16_dot(t, ks, gn, b0 + g0 * 32, b1 + g0 * 32, part, g0 > 0);
            }
            float *cij = c + i * ldc + (j - j0);
            for (int q = 0; q < 2 && 16 * q < nc; q++) {
                const int n = nc - 16 * q >= 16 ? 16 : nc - 16 * q;
                const __mmask16 mk = n == 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
                const __m512 b = bias ? _mm512_maskz_loadu_ps(mk, bias + (j - j0) + 16 * q) : z;
                for (int r = 0; r < mr; r++) {
                    __m512 v = _mm512_add_ps(_mm512_loadu_ps(part + (2 * r + q) * 16), b);
                    if (relu) v = _mm512_max_ps(v, z);
                    _mm512_mask_storeu_ps(cij + r * ldc + 16 * q, mk, v);
                }
            }
        }
    }
}
#endif

// nb_gemm_bf16: columns [j0, j1) of act(A·B + bias) with B packed by
// nb_pack_b_bf16; path 2 selects the AMX kernel (the caller has checked the
// CPU and obtained the tile state), 1 the AVX512_BF16 one, 0 the plain-C loop.
void nb_gemm_bf16(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, const uint16_t *bp,
                  const float *bias, int relu, float *c, int64_t ldc, int path) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (path == 2) {
        gemm_bf16_amx(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
        return;
    }
    if (path == 1) {
        gemm_bf16_avx512(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
        return;
    }
#endif
    (void)path;
    gemm_bf16_base(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
}
