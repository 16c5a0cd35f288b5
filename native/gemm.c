// Packed-weight GEMM: C = act(A·B + bias) with B packed once, when the
// weights are loaded, into panels of 16 columns.
//
// OpenBLAS packs both operands on every call. For NIN's 1×1 convs and
// Winograd products (K and N of 48..384, and few rows at batch 1) that
// packing, its call overhead and the separate bias+ReLU pass are a large
// share of the layer: OpenBLAS ran them at 30–70 GFLOP/s on one Zen3 core,
// where this kernel, whose only packing is the weights' (done once), runs at
// 80–90 (BenchmarkGemmPacked). The micro-kernel keeps a 6 × 16 block of C
// in 12 AVX2 registers and reads A in place (rows of NHWC activations or of
// an im2col tile), so nothing is copied per call.
//
// Two builds of the same loops: AVX2+FMA intrinsics, picked at run time
// when the CPU has them, and a scalar baseline.
#include "kernels.h"

#include <string.h>

#define NB_NR 16  // columns per packed panel
#define NB_MR 6   // rows per micro-kernel call

int64_t nb_pack_len(int64_t k, int64_t n) { return (n + NB_NR - 1) / NB_NR * NB_NR * k; }

void nb_pack_b(const float *b, int64_t k, int64_t n, int64_t ldb, int trans, float *bp) {
    const int64_t panels = (n + NB_NR - 1) / NB_NR;
    for (int64_t q = 0; q < panels; q++) {
        float *dst = bp + q * NB_NR * k;
        for (int64_t p = 0; p < k; p++) {
            for (int64_t jj = 0; jj < NB_NR; jj++) {
                const int64_t j = q * NB_NR + jj;
                float v = 0.0f;
                if (j < n) v = trans ? b[j * ldb + p] : b[p * ldb + j];
                dst[p * NB_NR + jj] = v;
            }
        }
    }
}

#define GEMM_ARGS                                                                              \
    int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, const float *bp, \
        const float *bias, int relu, float *c, int64_t ldc

// Scalar baseline: the same panel walk, one output at a time.
static void gemm_base(GEMM_ARGS) {
    for (int64_t i = 0; i < m; i++) {
        const float *ar = a + i * lda;
        for (int64_t j = j0; j < j1; j++) {
            const float *bq = bp + (j / NB_NR) * NB_NR * k + j % NB_NR;
            float s = 0.0f;
            for (int64_t p = 0; p < k; p++) s += ar[p] * bq[p * NB_NR];
            if (bias) s += bias[j - j0];
            if (relu && !(s > 0.0f)) s = 0.0f;
            c[i * ldc + (j - j0)] = s;
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NB_GEMM_AVX2 1
#define TGT __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

// One mr × 16 block (mr ≤ 6, a constant after inlining): c[i·ldc + jj] for
// jj < nc of act(Σ_p a[i·lda + p]·bq[p·16 + jj] + bb[jj]).
TGT INLINE void micro(const int mr, int64_t k, const float *a, int64_t lda, const float *bq,
                      const float *bb, int relu, float *c, int64_t ldc, int nc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda;
    const float *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
    // 12 accumulators + 2 B vectors + 1 broadcast: 15 of the 16 registers.
    // Unrolled 4 deep; without the unroll the loop ran at 2/3 the speed.
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        const __m256 b0 = _mm256_loadu_ps(bq + p * NB_NR), b1 = _mm256_loadu_ps(bq + p * NB_NR + 8);
        __m256 x = _mm256_broadcast_ss(a0 + p);
        c00 = _mm256_fmadd_ps(x, b0, c00), c01 = _mm256_fmadd_ps(x, b1, c01);
        if (mr > 1) x = _mm256_broadcast_ss(a1 + p), c10 = _mm256_fmadd_ps(x, b0, c10), c11 = _mm256_fmadd_ps(x, b1, c11);
        if (mr > 2) x = _mm256_broadcast_ss(a2 + p), c20 = _mm256_fmadd_ps(x, b0, c20), c21 = _mm256_fmadd_ps(x, b1, c21);
        if (mr > 3) x = _mm256_broadcast_ss(a3 + p), c30 = _mm256_fmadd_ps(x, b0, c30), c31 = _mm256_fmadd_ps(x, b1, c31);
        if (mr > 4) x = _mm256_broadcast_ss(a4 + p), c40 = _mm256_fmadd_ps(x, b0, c40), c41 = _mm256_fmadd_ps(x, b1, c41);
        if (mr > 5) x = _mm256_broadcast_ss(a5 + p), c50 = _mm256_fmadd_ps(x, b0, c50), c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    const __m256 bb0 = _mm256_loadu_ps(bb), bb1 = _mm256_loadu_ps(bb + 8), z = _mm256_setzero_ps();
    // Each row by name, not through an array: an array of the accumulators
    // made GCC spill one of them inside the k loop (half the speed).
#define NB_ROW(i, u0, u1)                                                          \
    if (mr > i) {                                                                  \
        __m256 u = _mm256_add_ps(u0, bb0), w = _mm256_add_ps(u1, bb1);             \
        if (relu) u = _mm256_max_ps(u, z), w = _mm256_max_ps(w, z);                \
        float *cr = c + i * ldc;                                                   \
        if (nc == NB_NR) {                                                         \
            _mm256_storeu_ps(cr, u), _mm256_storeu_ps(cr + 8, w);                  \
        } else {                                                                   \
            float t[NB_NR];                                                        \
            _mm256_storeu_ps(t, u), _mm256_storeu_ps(t + 8, w);                    \
            memcpy(cr, t, (size_t)nc * sizeof(float));                             \
        }                                                                          \
    }
    NB_ROW(0, c00, c01) NB_ROW(1, c10, c11) NB_ROW(2, c20, c21)
    NB_ROW(3, c30, c31) NB_ROW(4, c40, c41) NB_ROW(5, c50, c51)
#undef NB_ROW
}

// A rows are taken in blocks of up to NB_MC_BYTES (kept in L2); within a
// block, panel by panel, and within a panel, 6 rows at a time: the panel
// (16·k floats) stays in L1 across the block's rows and the block's rows
// stay in L2 across its panels. A Winograd product or a chain tile (tens
// to a few hundred rows) is one block, so each panel is read once per call.
#define NB_MC_BYTES (128 << 10)
TGT static void gemm_avx2(GEMM_ARGS) {
    int64_t mc = NB_MC_BYTES / (int64_t)sizeof(float) / (k > 0 ? k : 1) / NB_MR * NB_MR;
    if (mc < NB_MR) mc = NB_MR;
    for (int64_t i0 = 0; i0 < m; i0 += mc) {
        const int64_t i1 = m - i0 < mc ? m : i0 + mc;
        for (int64_t j = j0; j < j1; j += NB_NR) {
            const int nc = j1 - j < NB_NR ? (int)(j1 - j) : NB_NR;
            float bb[NB_NR] = {0};
            if (bias) memcpy(bb, bias + (j - j0), (size_t)nc * sizeof(float));
            const float *bq = bp + (j / NB_NR) * NB_NR * k;
            for (int64_t i = i0; i < i1; i += NB_MR) {
                const int mr = i1 - i < NB_MR ? (int)(i1 - i) : NB_MR;
                const float *ai = a + i * lda;
                float *cij = c + i * ldc + (j - j0);
                switch (mr) {
                case 6: micro(6, k, ai, lda, bq, bb, relu, cij, ldc, nc); break;
                case 5: micro(5, k, ai, lda, bq, bb, relu, cij, ldc, nc); break;
                case 4: micro(4, k, ai, lda, bq, bb, relu, cij, ldc, nc); break;
                case 3: micro(3, k, ai, lda, bq, bb, relu, cij, ldc, nc); break;
                case 2: micro(2, k, ai, lda, bq, bb, relu, cij, ldc, nc); break;
                default: micro(1, k, ai, lda, bq, bb, relu, cij, ldc, nc); break;
                }
            }
        }
    }
}
#endif

int nb_gemm_fast(void) {
#ifdef NB_GEMM_AVX2
    return nb_have_avx2_fma();
#else
    return 0;
#endif
}

void nb_gemm_packed(GEMM_ARGS, int generic) {
#ifdef NB_GEMM_AVX2
    if (!generic && nb_have_avx2_fma()) {
        gemm_avx2(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
        return;
    }
#endif
    (void)generic;
    gemm_base(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
}
