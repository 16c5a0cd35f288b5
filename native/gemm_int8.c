// int8 GEMM: C = act(sa·sw[j]·(qA·qB) + bias + corr) with
//   qA = clamp(round(A/sa) + zp, 0, 255)  (u8: zp = 0 after a ReLU; a signed
//        input takes a zero point, whose Σ zp·B the caller's corr removes)
//   qB = s8 weights, one scale sw[j] per output column, packed once;
// int32 sums (TDPBUSD), the scale, bias and ReLU fused in the epilogue,
// fp32 out. Tiles: C in four 16 × 16 int32 tiles (a 32 × 32 block), A in
// two 16 × 64 u8 tiles, B in two 16 × (16 × 4) s8 tiles: four tile products
// per 64 of K. A plain-C twin computes the same integers and the same
// epilogue (explicit fused multiply-adds), so the two agree bit for bit.
//
// Packed B: 16-column panels, K padded to a multiple of 64, each K step of
// a panel 16 rows of 16 columns × 4 consecutive k (TDPBUSD's second source).
#include "kernels.h"

#include <math.h>
#include <string.h>

#define NB_NR 16
#define NB_K8 64     // K per tile step
#define NB_AK8 4096  // the K up to which a row block of A is quantised once (128 KiB)

int64_t nb_pack_int8_len(int64_t k, int64_t n) {
    return (n + NB_NR - 1) / NB_NR * NB_NR * ((k + NB_K8 - 1) / NB_K8 * NB_K8);
}

void nb_pack_b_int8(const int8_t *b, int64_t k, int64_t n, int64_t ldb, int trans, int8_t *bp) {
    const int64_t panels = (n + NB_NR - 1) / NB_NR, kp = (k + NB_K8 - 1) / NB_K8 * NB_K8;
    for (int64_t q = 0; q < panels; q++) {
        int8_t *dst = bp + q * NB_NR * kp;
        for (int64_t p = 0; p < kp; p++)
            for (int64_t jj = 0; jj < NB_NR; jj++) {
                const int64_t j = q * NB_NR + jj;
                int8_t v = 0;
                if (j < n && p < k) v = trans ? b[j * ldb + p] : b[p * ldb + j];
                dst[(p / 4) * 4 * NB_NR + jj * 4 + (p & 3)] = v;
            }
    }
}

// nb_quant_u8 is the activation quantiser all kernels use: round(a/sa) +
// zp (ties to even, as VCVTPS2DQ) clamped to 0..255; NaN is 0.
static inline uint8_t nb_quant_u8(float a, float inv, int zp) {
    const float y = a * inv;
    if (!(y == y)) return 0;
    const float q = nearbyintf(fminf(y, (float)(255 - zp))) + (float)zp;
    return q > 0.0f ? (uint8_t)q : 0;  // −∞ and large negatives: 0
}

// nb_bias8 is column j's epilogue offset: its bias plus the zero point's
// correction (−zp·sa·sw[j]·Σ_p B[p][j], from the caller).
static inline float nb_bias8(const float *bias, const float *corr, int64_t j) {
    return (bias ? bias[j] : 0.0f) + (corr ? corr[j] : 0.0f);
}

static void gemm_int8_base(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, float sa, int zp,
                           const int8_t *bp, const float *sw, const float *bias, const float *corr, int relu, float *c,
                           int64_t ldc) {
    const int64_t kp = (k + NB_K8 - 1) / NB_K8 * NB_K8;
    const float inv = 1.0f / sa;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = j0; j < j1; j++) {
            const int8_t *bq = bp + (j / NB_NR) * NB_NR * kp;
            const int64_t jj = j % NB_NR;
            int32_t s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (int32_t)nb_quant_u8(a[i * lda + p], inv, zp) * (int32_t)bq[(p / 4) * 4 * NB_NR + jj * 4 + (p & 3)];
            float v = fmaf((float)s, sa * sw[j - j0], nb_bias8(bias, corr, j - j0));
            if (relu && !(v > 0.0f)) v = 0.0f;
            c[i * ldc + (j - j0)] = v;
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TGT8 __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl")))

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} nb_amxcfg8;

// 16 rows × 64 of A from K p0, quantised to u8 (zeros past mr and k).
TGT8 static inline void quant_a(uint8_t *t, const float *a, int64_t lda, int mr, int64_t p0, int64_t k, float inv,
                                int zp) {
    const int kl = k - p0 < NB_K8 ? (int)(k - p0) : NB_K8;
    const __m512 vi = _mm512_set1_ps(inv), top = _mm512_set1_ps((float)(255 - zp));
    const __m512i z = _mm512_setzero_si512(), vz = _mm512_set1_epi32(zp);
    for (int r = 0; r < 16; r++) {
        for (int v = 0; v < 4; v++) {
            const int lo = v * 16, n = kl - lo <= 0 ? 0 : kl - lo >= 16 ? 16 : kl - lo;
            __m128i q = _mm_setzero_si128();
            if (r < mr && n > 0) {
                const __mmask16 mk = n == 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
                const __m512 x = _mm512_maskz_loadu_ps(mk, a + r * lda + p0 + lo);
                // min(255 − zp, x) keeps a NaN (it becomes INT_MIN, then 0), like the C twin
                const __m512i w = _mm512_max_epi32(
                    _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(top, _mm512_mul_ps(x, vi))), vz), z);
                q = _mm512_cvtusepi32_epi8(w);  // saturates at 255
            }
            _mm_storeu_si128((__m128i *)(t + r * NB_K8 + lo), q);
        }
    }
}

TGT8 static inline void store_c8(const int32_t *t, const float *scale, const float *bb, int relu, float *c,
                                 int64_t ldc, int mr, int nc) {
    const __mmask16 mk = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
    const __m512 s = _mm512_maskz_loadu_ps(mk, scale), b = _mm512_maskz_loadu_ps(mk, bb), z = _mm512_setzero_ps();
    for (int r = 0; r < mr; r++) {
        __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(t + r * 16)), s, b);
        if (relu) v = _mm512_max_ps(v, z);
        _mm512_mask_storeu_ps(c + r * ldc, mk, v);
    }
}

TGT8 static void gemm_int8_amx(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, float sa,
                               int zp, const int8_t *bp, const float *sw, const float *bias, const float *corr, int relu,
                               float *c, int64_t ldc) {
    nb_amxcfg8 cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    _tile_loadconfig(&cfg);
    const int64_t kp = (k + NB_K8 - 1) / NB_K8 * NB_K8, ps = NB_NR * kp;
    const float inv = 1.0f / sa;
    // A's 32-row block quantised once for all its column tiles when its K
    // fits (128 KiB of stack), else K step by K step for each
    uint8_t ab[2 * (NB_AK8 / NB_K8) * 16 * NB_K8] __attribute__((aligned(64)));
    const int whole = kp <= NB_AK8;
    int32_t ct[16 * 16] __attribute__((aligned(64)));
    for (int64_t i = 0; i < m; i += 32) {
        const int mr0 = m - i < 16 ? (int)(m - i) : 16;
        const int mr1 = m - i - 16 <= 0 ? 0 : m - i - 16 < 16 ? (int)(m - i - 16) : 16;
        if (whole)
            for (int64_t p0 = 0; p0 < kp; p0 += NB_K8) {
                uint8_t *t = ab + (p0 / NB_K8) * 2 * 16 * NB_K8;
                quant_a(t, a + i * lda, lda, mr0, p0, k, inv, zp);
                if (mr1) quant_a(t + 16 * NB_K8, a + (i + 16) * lda, lda, mr1, p0, k, inv, zp);
            }
        for (int64_t j = j0; j < j1; j += 2 * NB_NR) {
            const int nc = j1 - j < 2 * NB_NR ? (int)(j1 - j) : 2 * NB_NR;
            const int8_t *b0 = bp + (j / NB_NR) * ps, *b1 = b0 + ps;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t p0 = 0; p0 < kp; p0 += NB_K8) {
                uint8_t *t = ab;
                if (whole) {
                    t += (p0 / NB_K8) * 2 * 16 * NB_K8;
                } else {
                    quant_a(t, a + i * lda, lda, mr0, p0, k, inv, zp);
                    if (mr1) quant_a(t + 16 * NB_K8, a + (i + 16) * lda, lda, mr1, p0, k, inv, zp);
                }
                _tile_loadd(4, t, 64);
                if (mr1) _tile_loadd(5, t + 16 * NB_K8, 64);
                _tile_loadd(6, b0 + p0 * NB_NR, 64);
                _tile_dpbusd(0, 4, 6);
                if (mr1) _tile_dpbusd(2, 5, 6);
                if (nc > NB_NR) {
                    _tile_loadd(7, b1 + p0 * NB_NR, 64);
                    _tile_dpbusd(1, 4, 7);
                    if (mr1) _tile_dpbusd(3, 5, 7);
                }
            }
            float sc[2 * NB_NR] = {0}, bb[2 * NB_NR] = {0};
            for (int q = 0; q < nc; q++) {
                sc[q] = sa * sw[j - j0 + q];
                bb[q] = nb_bias8(bias, corr, j - j0 + q);
            }
            float *cij = c + i * ldc + (j - j0);
            const int nc0 = nc < NB_NR ? nc : NB_NR, nc1 = nc - nc0;
            _tile_stored(0, ct, 64);
            store_c8(ct, sc, bb, relu, cij, ldc, mr0, nc0);
            if (nc1) {
                _tile_stored(1, ct, 64);
                store_c8(ct, sc + NB_NR, bb + NB_NR, relu, cij + NB_NR, ldc, mr0, nc1);
            }
            if (mr1) {
                _tile_stored(2, ct, 64);
                store_c8(ct, sc, bb, relu, cij + 16 * ldc, ldc, mr1, nc0);
                if (nc1) {
                    _tile_stored(3, ct, 64);
                    store_c8(ct, sc + NB_NR, bb + NB_NR, relu, cij + 16 * ldc + NB_NR, ldc, mr1, nc1);
                }
            }
        }
    }
    _tile_release();
}

// AVX-512 VNNI (Zen 4/5, Ice Lake and later without AMX): VPDPBUSD adds
// four u8×s8 products into each int32 lane, and a packed K step of a panel
// (16 columns × 4 consecutive k) is exactly its s8 operand. A register
// block of 12 rows × 32 columns: 24 accumulators, two B vectors, one
// broadcast of 4 u8 of a row per product. A's 12-row block is quantised
// once, row by row, for all the block's columns.
#define TGTV __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define NB_VMR 12
#define NB_VSTACK 4096  // the K up to which A's block is on the stack (48 KiB)

// Rows [0, mr) of A × K [0, k) quantised to u8 into t, row r at t[r·ks]
// (ks ≥ k, a multiple of 4). Past k a row holds leftovers, which meet B's
// zero padding; rows from mr on are computed but never stored.
TGTV static void quant_rows_vnni(uint8_t *t, int64_t ks, const float *a, int64_t lda, int mr, int64_t k, float inv,
                                int zp) {
    const __m512 vi = _mm512_set1_ps(inv), top = _mm512_set1_ps((float)(255 - zp));
    const __m512i z = _mm512_setzero_si512(), vz = _mm512_set1_epi32(zp);
    for (int r = 0; r < mr; r++) {
        const float *ar = a + r * lda;
        uint8_t *tr = t + r * ks;
        for (int64_t p = 0; p < k; p += 16) {
            const int n = k - p >= 16 ? 16 : (int)(k - p);
            const __mmask16 mk = n == 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
            const __m512 x = _mm512_maskz_loadu_ps(mk, ar + p);
            const __m512i w =
                _mm512_max_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(top, _mm512_mul_ps(x, vi))), vz), z);
            _mm_mask_storeu_epi8(tr + p, mk, _mm512_cvtusepi32_epi8(w));
        }
    }
}

// The int32 sums of one 12 × 32 block over ng K steps of t (rows ks
// apart), added to
// part when init, else from zero, into part (row r's two panels at
// part[(2r + q)·16]). B's second panel is b1 (b0 again for a lone panel).
// Kept apart from the epilogue and the 24 accumulators named and updated
// in place by inline asm: otherwise GCC 12 copied and spilled them every
// step (3× slower).
#define NB_R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
TGTV __attribute__((noinline)) static void vnni_dot(const uint8_t *t, int64_t ks, int64_t ng, const int8_t *b0,
                                                    const int8_t *b1, int32_t *part, int init) {
#define NB_DECL(r) __m512i x##r = _mm512_setzero_si512(), y##r = _mm512_setzero_si512();
    NB_R12(NB_DECL)
#define NB_LOAD(r)                                       \
    x##r = _mm512_loadu_si512(part + (2 * r + 0) * 16); \
    y##r = _mm512_loadu_si512(part + (2 * r + 1) * 16);
    if (init) {
        NB_R12(NB_LOAD)
    }
    for (int64_t g = 0; g < ng; g++) {
        const __m512i v0 = _mm512_loadu_si512(b0 + g * 64), v1 = _mm512_loadu_si512(b1 + g * 64);
        const uint8_t *tg = t + 4 * g;
#define NB_DOT(r)                                                       \
    {                                                                   \
        int32_t q4;                                                     \
        memcpy(&q4, tg + r * ks, 4);                                    \
        const __m512i av = _mm512_set1_epi32(q4);                       \
        __asm__("vpdpbusd %2, %1, %0" : "+v"(x##r) : "v"(av), "v"(v0)); \
        __asm__("vpdpbusd %2, %1, %0" : "+v"(y##r) : "v"(av), "v"(v1)); \
    }
        NB_R12(NB_DOT)
    }
#define NB_KEEP(r)                                        \
    _mm512_storeu_si512(part + (2 * r + 0) * 16, x##r); \
    _mm512_storeu_si512(part + (2 * r + 1) * 16, y##r);
    NB_R12(NB_KEEP)
#undef NB_DECL
#undef NB_LOAD
#undef NB_DOT
#undef NB_KEEP
}

// The epilogue of a block's sums: rows [0, mr), columns [0, nc).
TGTV static void vnni_out(const int32_t *part, const float *sc, const float *bb, int relu, float *c, int64_t ldc,
                          int mr, int nc) {
    const __m512 z = _mm512_setzero_ps();
    for (int q = 0; q < 2 && 16 * q < nc; q++) {
        const int n = nc - 16 * q >= 16 ? 16 : nc - 16 * q;
        const __mmask16 mk = n == 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
        const __m512 s = _mm512_loadu_ps(sc + 16 * q), b = _mm512_loadu_ps(bb + 16 * q);
        for (int r = 0; r < mr; r++) {
            __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(part + (2 * r + q) * 16)), s, b);
            if (relu) v = _mm512_max_ps(v, z);
            _mm512_mask_storeu_ps(c + r * ldc + 16 * q, mk, v);
        }
    }
}

TGTV static void gemm_int8_vnni(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, float sa,
                                int zp, const int8_t *bp, const float *sw, const float *bias, const float *corr,
                                int relu, float *c, int64_t ldc) {
    const int64_t kp = (k + NB_K8 - 1) / NB_K8 * NB_K8, ps = NB_NR * kp, ng = (k + 3) / 4;
    const float inv = 1.0f / sa;
    // A's 12-row block quantised once for all its columns when its K fits
    // the buffer, else chunk by chunk for each 32 columns, the sums kept
    uint8_t t[NB_VMR * NB_VSTACK] __attribute__((aligned(64)));
    const int64_t chunk = NB_VSTACK / 4, whole = ng <= chunk, ks = whole ? 4 * ng : NB_VSTACK;
    int32_t part[NB_VMR * 2 * 16] __attribute__((aligned(64)));
    for (int64_t i = 0; i < m; i += NB_VMR) {
        const int mr = m - i < NB_VMR ? (int)(m - i) : NB_VMR;
        const float *ai = a + i * lda;
        if (whole) quant_rows_vnni(t, ks, ai, lda, mr, k, inv, zp);
        for (int64_t j = j0; j < j1; j += 2 * NB_NR) {
            const int nc = j1 - j < 2 * NB_NR ? (int)(j1 - j) : 2 * NB_NR;
            float sc[2 * NB_NR] = {0}, bb[2 * NB_NR] = {0};
            for (int q = 0; q < nc; q++) {
                sc[q] = sa * sw[j - j0 + q];
                bb[q] = nb_bias8(bias, corr, j - j0 + q);
            }
            const int8_t *b0 = bp + (j / NB_NR) * ps;
            float *cij = c + i * ldc + (j - j0);
            const int np = nc > NB_NR ? 2 : 1;
            for (int64_t g0 = 0; g0 < ng; g0 += chunk) {
                const int64_t gn = ng - g0 < chunk ? ng - g0 : chunk;
                if (!whole) quant_rows_vnni(t, ks, ai + 4 * g0, lda, mr, (k - 4 * g0 < 4 * gn ? k - 4 * g0 : 4 * gn), inv, zp);
                const int init = g0 > 0, keep = g0 + gn < ng;
                vnni_dot(t, ks, gn, b0 + g0 * 64, (np > 1 ? b0 + ps : b0) + g0 * 64, part, init);
                if (!keep) vnni_out(part, sc, bb, relu, cij, ldc, mr, nc);
            }
        }
    }
}
#endif

void nb_gemm_int8(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, float sa, int zp,
                  const int8_t *bp, const float *sw, const float *bias, const float *corr, int relu, float *c,
                  int64_t ldc, int path) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (path == 2) {
        gemm_int8_amx(m, k, j0, j1, a, lda, sa, zp, bp, sw, bias, corr, relu, c, ldc);
        return;
    }
    if (path == 1) {
        gemm_int8_vnni(m, k, j0, j1, a, lda, sa, zp, bp, sw, bias, corr, relu, c, ldc);
        return;
    }
#endif
    (void)path;
    gemm_int8_base(m, k, j0, j1, a, lda, sa, zp, bp, sw, bias, corr, relu, c, ldc);
}
