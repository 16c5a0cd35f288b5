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
// jj < nc of act(s + Σ_p a[i·lda + p]·bq[p·16 + jj] + bb[jj]), where s is 0,
// or with acc the partial sum already in c (an earlier K block's, stored
// without bias and ReLU).
TGT INLINE void micro(const int mr, int64_t k, const float *a, int64_t lda, const float *bq,
                      const float *bb, int relu, float *c, int64_t ldc, int nc, int acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    if (acc) {
#define NB_LOAD(i, u0, u1)                                                   \
    if (mr > i) {                                                            \
        const float *cr = c + i * ldc;                                       \
        if (nc == NB_NR) {                                                   \
            u0 = _mm256_loadu_ps(cr), u1 = _mm256_loadu_ps(cr + 8);          \
        } else {                                                             \
            float t[NB_NR] = {0};                                            \
            memcpy(t, cr, (size_t)nc * sizeof(float));                       \
            u0 = _mm256_loadu_ps(t), u1 = _mm256_loadu_ps(t + 8);            \
        }                                                                    \
    }
        NB_LOAD(0, c00, c01) NB_LOAD(1, c10, c11) NB_LOAD(2, c20, c21)
        NB_LOAD(3, c30, c31) NB_LOAD(4, c40, c41) NB_LOAD(5, c50, c51)
#undef NB_LOAD
    }
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

// Blocking with B packed in advance. A rows are taken in blocks of up to
// nb_mc_bytes of A (kept in L2); within a row block, panel by panel, and
// within a panel, 6 rows at a time: the panel stays in L1 across the
// block's rows, and the block's rows stay in L2 across its panels. A
// Winograd product or a chain tile (tens to a few hundred rows, K ≤ 512)
// is one block, so each panel is read once per call.
//
// A long K makes the row blocks short (6 rows at K = 3456), and B is then
// read once per block: from L3 when it fits there, at little cost, but
// nin-imagenet's batch-1 im2col conv4 (36 × 1024 × 3456, 14 MB of packed
// weights) read its weights from memory 6 times and ran at 24 GFLOP/s.
// When the B a call reads is over nb_b_stream_bytes (4 MiB) and K over
// NB_KC_MAX, K is cut into even blocks of at most NB_KC, whose partial
// sums go through C (the float32 accumulator is stored and reloaded
// unchanged, so the result is bit-identical to one pass; bias and ReLU
// come with the last block), and the row blocks grow to match: that conv
// reads its weights once and runs at 48–50 GFLOP/s. On B that fits in L3
// (nin-imagenet's 1024 × 1024 1×1 convs, the im2col convs under
// --winograd off) K blocks were no faster, and 0.85–0.9× on 288 × 384 ×
// 2304.
static int64_t nb_mc_bytes = 128 << 10;  // set from the detected L2 (native.tuneCaches)
#define NB_KC_MAX 512
#define NB_KC 384
static int64_t nb_b_stream_bytes = 4 << 20;

int64_t nb_gemm_set_block_bytes(int64_t n) {
    const int64_t old = nb_mc_bytes;
    nb_mc_bytes = n;
    return old;
}

int64_t nb_gemm_set_stream_bytes(int64_t n) {
    const int64_t old = nb_b_stream_bytes;
    nb_b_stream_bytes = n;
    return old;
}

// gemm_blocks: the K block length and the rows of a row block (a multiple
// of the micro-kernel's mr) for a call over nc columns.
static void gemm_blocks(int64_t k, int64_t nc, int64_t mr, int64_t *kc, int64_t *mc) {
    const int64_t bbytes = k * ((nc + NB_NR - 1) / NB_NR * NB_NR) * (int64_t)sizeof(float);
    const int64_t nkb = k > NB_KC_MAX && bbytes > nb_b_stream_bytes ? (k + NB_KC - 1) / NB_KC : 1;
    *kc = (k + nkb - 1) / nkb;
    *mc = nb_mc_bytes / (int64_t)sizeof(float) / (*kc > 0 ? *kc : 1) / mr * mr;
    if (*mc < mr) *mc = mr;
}

TGT static void gemm_avx2(GEMM_ARGS) {
    int64_t kc, mc;
    gemm_blocks(k, j1 - j0, NB_MR, &kc, &mc);
    for (int64_t i0 = 0; i0 < m; i0 += mc) {
        const int64_t i1 = m - i0 < mc ? m : i0 + mc;
        int64_t p0 = 0;
        do {  // K blocks (one, of length 0, when k = 0: C = act(bias))
            const int64_t kl = k - p0 < kc ? k - p0 : kc;
            const int acc = p0 > 0, last = p0 + kl >= k;
            for (int64_t j = j0; j < j1; j += NB_NR) {
                const int nc = j1 - j < NB_NR ? (int)(j1 - j) : NB_NR;
                float bb[NB_NR] = {0};
                if (bias && last) memcpy(bb, bias + (j - j0), (size_t)nc * sizeof(float));
                const int act = relu && last;
                const float *bq = bp + (j / NB_NR) * NB_NR * k + p0 * NB_NR;
                for (int64_t i = i0; i < i1; i += NB_MR) {
                    const int mr = i1 - i < NB_MR ? (int)(i1 - i) : NB_MR;
                    const float *ai = a + i * lda + p0;
                    float *cij = c + i * ldc + (j - j0);
                    switch (mr) {
                    case 6: micro(6, kl, ai, lda, bq, bb, act, cij, ldc, nc, acc); break;
                    case 5: micro(5, kl, ai, lda, bq, bb, act, cij, ldc, nc, acc); break;
                    case 4: micro(4, kl, ai, lda, bq, bb, act, cij, ldc, nc, acc); break;
                    case 3: micro(3, kl, ai, lda, bq, bb, act, cij, ldc, nc, acc); break;
                    case 2: micro(2, kl, ai, lda, bq, bb, act, cij, ldc, nc, acc); break;
                    default: micro(1, kl, ai, lda, bq, bb, act, cij, ldc, nc, acc); break;
                    }
                }
            }
            p0 += kl;
        } while (p0 < k);
    }
}

// AVX-512: a 12 × 32 block of C (two 16-column panels) in 24 of the 32 zmm
// registers, 2 B vectors and a broadcast beside them; tails are masked
// (columns) or shorter blocks (rows, a constant after inlining), so there
// is no scalar loop. Same blocking as the AVX2 kernel: the same packed
// panels, row blocks of nb_mc_bytes, K blocks through C for streamed B.
#define TGT512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define NB_MR512 12

TGT512 INLINE void micro512(const int mr, const int np, int64_t k, const float *a, int64_t lda,
                            const float *bq, int64_t pstride, const float *bb, int relu, float *c,
                            int64_t ldc, __mmask16 m0, __mmask16 m1, int acc) {
    const __m512 z = _mm512_setzero_ps();
#define NB_DECL(i) __m512 c##i##a = z, c##i##b = z;
    NB_DECL(0) NB_DECL(1) NB_DECL(2) NB_DECL(3) NB_DECL(4) NB_DECL(5)
    NB_DECL(6) NB_DECL(7) NB_DECL(8) NB_DECL(9) NB_DECL(10) NB_DECL(11)
#undef NB_DECL
    if (acc) {
#define NB_LOAD(i)                                                         \
    if (mr > i) {                                                          \
        c##i##a = _mm512_maskz_loadu_ps(m0, c + i * ldc);                  \
        if (np > 1) c##i##b = _mm512_maskz_loadu_ps(m1, c + i * ldc + 16); \
    }
        NB_LOAD(0) NB_LOAD(1) NB_LOAD(2) NB_LOAD(3) NB_LOAD(4) NB_LOAD(5)
        NB_LOAD(6) NB_LOAD(7) NB_LOAD(8) NB_LOAD(9) NB_LOAD(10) NB_LOAD(11)
#undef NB_LOAD
    }
    const float *bq1 = bq + pstride;
#pragma GCC unroll 2
    for (int64_t p = 0; p < k; p++) {
        const __m512 b0 = _mm512_loadu_ps(bq + p * NB_NR);
        const __m512 b1 = np > 1 ? _mm512_loadu_ps(bq1 + p * NB_NR) : z;
#define NB_FMA(i)                                                  \
    if (mr > i) {                                                  \
        const __m512 x = _mm512_set1_ps(a[i * lda + p]);           \
        c##i##a = _mm512_fmadd_ps(x, b0, c##i##a);                 \
        if (np > 1) c##i##b = _mm512_fmadd_ps(x, b1, c##i##b);     \
    }
        NB_FMA(0) NB_FMA(1) NB_FMA(2) NB_FMA(3) NB_FMA(4) NB_FMA(5)
        NB_FMA(6) NB_FMA(7) NB_FMA(8) NB_FMA(9) NB_FMA(10) NB_FMA(11)
#undef NB_FMA
    }
    const __m512 bb0 = _mm512_loadu_ps(bb), bb1 = _mm512_loadu_ps(bb + 16);
#define NB_ROW(i)                                                              \
    if (mr > i) {                                                              \
        __m512 u = _mm512_add_ps(c##i##a, bb0);                                \
        if (relu) u = _mm512_max_ps(u, z);                                     \
        _mm512_mask_storeu_ps(c + i * ldc, m0, u);                             \
        if (np > 1) {                                                          \
            __m512 w = _mm512_add_ps(c##i##b, bb1);                            \
            if (relu) w = _mm512_max_ps(w, z);                                 \
            _mm512_mask_storeu_ps(c + i * ldc + 16, m1, w);                    \
        }                                                                      \
    }
    NB_ROW(0) NB_ROW(1) NB_ROW(2) NB_ROW(3) NB_ROW(4) NB_ROW(5)
    NB_ROW(6) NB_ROW(7) NB_ROW(8) NB_ROW(9) NB_ROW(10) NB_ROW(11)
#undef NB_ROW
}

// rows: every mr ≤ 12 as its own constant-folded copy, for np 1 or 2.
#define NB_CASES(NP)                                                                           \
    switch (mr) {                                                                              \
    case 12: micro512(12, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;   \
    case 11: micro512(11, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;   \
    case 10: micro512(10, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;   \
    case 9: micro512(9, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;     \
    case 8: micro512(8, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;     \
    case 7: micro512(7, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;     \
    case 6: micro512(6, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;     \
    case 5: micro512(5, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;     \
    case 4: micro512(4, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;     \
    case 3: micro512(3, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;     \
    case 2: micro512(2, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;     \
    default: micro512(1, NP, kl, ai, lda, bq, ps, bb, act, cij, ldc, m0, m1, acc); break;    \
    }

TGT512 static void gemm_avx512(GEMM_ARGS) {
    int64_t kc, mc;
    gemm_blocks(k, j1 - j0, NB_MR512, &kc, &mc);
    const int64_t ps = NB_NR * k;  // one panel
    for (int64_t i0 = 0; i0 < m; i0 += mc) {
        const int64_t i1 = m - i0 < mc ? m : i0 + mc;
        int64_t p0 = 0;
        do {
            const int64_t kl = k - p0 < kc ? k - p0 : kc;
            const int acc = p0 > 0, last = p0 + kl >= k;
            for (int64_t j = j0; j < j1; j += 2 * NB_NR) {
                const int nc = j1 - j < 2 * NB_NR ? (int)(j1 - j) : 2 * NB_NR;
                float bb[2 * NB_NR] = {0};
                if (bias && last) memcpy(bb, bias + (j - j0), (size_t)nc * sizeof(float));
                const int act = relu && last;
                const __mmask16 m0 = nc >= NB_NR ? 0xFFFF : (__mmask16)((1u << nc) - 1);
                const __mmask16 m1 = nc >= 2 * NB_NR ? 0xFFFF : nc > NB_NR ? (__mmask16)((1u << (nc - NB_NR)) - 1) : 0;
                const float *bq = bp + (j / NB_NR) * NB_NR * k + p0 * NB_NR;
                for (int64_t i = i0; i < i1; i += NB_MR512) {
                    const int mr = i1 - i < NB_MR512 ? (int)(i1 - i) : NB_MR512;
                    const float *ai = a + i * lda + p0;
                    float *cij = c + i * ldc + (j - j0);
                    if (nc > NB_NR) {
                        NB_CASES(2)
                    } else {
                        NB_CASES(1)
                    }
                }
            }
            p0 += kl;
        } while (p0 < k);
    }
}
#undef NB_CASES

// Weight gradients: C += Aᵀ·B over rows, A (rows, m) and B (rows, n) both
// row-major (dW = dYᵀ·X: the output gradient and the input or its im2col
// tile, one row a pixel). A 12 × 32 block of C in 24 zmm registers takes,
// for each row r, two (masked) vectors of B's row and 12 broadcasts of A's,
// so neither operand is packed. Rows go in chunks of nb_atb_rows, small
// enough that a chunk's 32-column strip of B (128 bytes a row) stays in L1
// across the chunk's 12-row blocks of C, large enough that loading and
// storing the C block once a chunk is noise.
#define NB_ATB_PF 12  // rows of B prefetched ahead
static int64_t nb_atb_rows = 192;  // set from the detected L1d (native.tuneCaches)

int64_t nb_gemm_atb_set_rows(int64_t n) {
    const int64_t old = nb_atb_rows;
    nb_atb_rows = n;
    return old;
}

TGT512 INLINE void micro_atb512(const int mr, const int np, int64_t rows, const float *a, int64_t lda,
                                const float *b, int64_t ldb, float *c, int64_t ldc, __mmask16 m0,
                                __mmask16 m1, int pf) {
    const __m512 z = _mm512_setzero_ps();
#define NB_DECL(i) __m512 c##i##a = z, c##i##b = z;
    NB_DECL(0) NB_DECL(1) NB_DECL(2) NB_DECL(3) NB_DECL(4) NB_DECL(5)
    NB_DECL(6) NB_DECL(7) NB_DECL(8) NB_DECL(9) NB_DECL(10) NB_DECL(11)
#undef NB_DECL
#define NB_LOAD(i)                                                         \
    if (mr > i) {                                                          \
        c##i##a = _mm512_maskz_loadu_ps(m0, c + i * ldc);                  \
        if (np > 1) c##i##b = _mm512_maskz_loadu_ps(m1, c + i * ldc + 16); \
    }
    NB_LOAD(0) NB_LOAD(1) NB_LOAD(2) NB_LOAD(3) NB_LOAD(4) NB_LOAD(5)
    NB_LOAD(6) NB_LOAD(7) NB_LOAD(8) NB_LOAD(9) NB_LOAD(10) NB_LOAD(11)
#undef NB_LOAD
#pragma GCC unroll 2
    for (int64_t r = 0; r < rows; r++) {
        const float *br = b + r * ldb, *ar = a + r * lda;
        if (pf) {  // B comes from L3 or memory on a chunk's first row block
            _mm_prefetch((const char *)(br + NB_ATB_PF * ldb), _MM_HINT_T0);
            if (np > 1) _mm_prefetch((const char *)(br + NB_ATB_PF * ldb + 16), _MM_HINT_T0);
        }
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, br);
        const __m512 b1 = np > 1 ? _mm512_maskz_loadu_ps(m1, br + 16) : z;
#define NB_FMA(i)                                              \
    if (mr > i) {                                              \
        const __m512 x = _mm512_set1_ps(ar[i]);                \
        c##i##a = _mm512_fmadd_ps(x, b0, c##i##a);             \
        if (np > 1) c##i##b = _mm512_fmadd_ps(x, b1, c##i##b); \
    }
        NB_FMA(0) NB_FMA(1) NB_FMA(2) NB_FMA(3) NB_FMA(4) NB_FMA(5)
        NB_FMA(6) NB_FMA(7) NB_FMA(8) NB_FMA(9) NB_FMA(10) NB_FMA(11)
#undef NB_FMA
    }
#define NB_STORE(i)                                                        \
    if (mr > i) {                                                          \
        _mm512_mask_storeu_ps(c + i * ldc, m0, c##i##a);                   \
        if (np > 1) _mm512_mask_storeu_ps(c + i * ldc + 16, m1, c##i##b);  \
    }
    NB_STORE(0) NB_STORE(1) NB_STORE(2) NB_STORE(3) NB_STORE(4) NB_STORE(5)
    NB_STORE(6) NB_STORE(7) NB_STORE(8) NB_STORE(9) NB_STORE(10) NB_STORE(11)
#undef NB_STORE
}

#define NB_CASES(NP)                                                                 \
    switch (mr) {                                                                    \
    case 12: micro_atb512(12, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;   \
    case 11: micro_atb512(11, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;   \
    case 10: micro_atb512(10, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;   \
    case 9: micro_atb512(9, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;     \
    case 8: micro_atb512(8, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;     \
    case 7: micro_atb512(7, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;     \
    case 6: micro_atb512(6, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;     \
    case 5: micro_atb512(5, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;     \
    case 4: micro_atb512(4, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;     \
    case 3: micro_atb512(3, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;     \
    case 2: micro_atb512(2, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;     \
    default: micro_atb512(1, NP, rl, ar, lda, br, ldb, cij, ldc, m0, m1, i == 0); break;    \
    }

TGT512 static void gemm_atb_avx512(int64_t m, int64_t n, int64_t rows, const float *a, int64_t lda,
                                   const float *b, int64_t ldb, float *c, int64_t ldc) {
    const int64_t rc = nb_atb_rows > 0 ? nb_atb_rows : 1;
    for (int64_t r0 = 0; r0 < rows; r0 += rc) {
        const int64_t rl = rows - r0 < rc ? rows - r0 : rc;
        for (int64_t j = 0; j < n; j += 2 * NB_NR) {
            const int nc = n - j < 2 * NB_NR ? (int)(n - j) : 2 * NB_NR;
            const __mmask16 m0 = nc >= NB_NR ? 0xFFFF : (__mmask16)((1u << nc) - 1);
            const __mmask16 m1 = nc >= 2 * NB_NR ? 0xFFFF : nc > NB_NR ? (__mmask16)((1u << (nc - NB_NR)) - 1) : 0;
            const float *br = b + r0 * ldb + j;
            for (int64_t i = 0; i < m; i += NB_MR512) {
                const int mr = m - i < NB_MR512 ? (int)(m - i) : NB_MR512;
                const float *ar = a + r0 * lda + i;
                float *cij = c + i * ldc + j;
                if (nc > NB_NR) {
                    NB_CASES(2)
                } else {
                    NB_CASES(1)
                }
            }
        }
    }
}
#undef NB_CASES
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
    if (!generic && nb_isa_level() >= NB_ISA_AVX512) {
        gemm_avx512(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
        return;
    }
    if (!generic && nb_have_avx2_fma()) {
        gemm_avx2(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
        return;
    }
#endif
    (void)generic;
    gemm_base(m, k, j0, j1, a, lda, bp, bias, relu, c, ldc);
}

// Scalar baseline of nb_gemm_atb: row by row, the same order of sums.
static void gemm_atb_base(int64_t m, int64_t n, int64_t rows, const float *a, int64_t lda,
                          const float *b, int64_t ldb, float *c, int64_t ldc) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < m; i++) {
            const float x = a[r * lda + i];
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] += x * b[r * ldb + j];
        }
}

int nb_gemm_atb_fast(void) {
#ifdef NB_GEMM_AVX2
    return nb_isa_level() >= NB_ISA_AVX512;
#else
    return 0;
#endif
}

void nb_gemm_atb(int64_t m, int64_t n, int64_t rows, const float *a, int64_t lda, const float *b,
                 int64_t ldb, float *c, int64_t ldc, int generic) {
#ifdef NB_GEMM_AVX2
    if (!generic && nb_isa_level() >= NB_ISA_AVX512) {
        gemm_atb_avx512(m, n, rows, a, lda, b, ldb, c, ldc);
        return;
    }
#endif
    (void)generic;
    gemm_atb_base(m, n, rows, a, lda, b, ldb, c, ldc);
}
