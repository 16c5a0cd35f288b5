#include "kernels.h"

#include <float.h>
#include <math.h>
#include <string.h>

// 8-lane vectors for the max-pool argmax select (GCC vector extensions; the
// x86-64 baseline lowers them to SSE pairs)
#pragma GCC diagnostic ignored "-Wpsabi"  // the vectors never cross a call boundary
typedef float pv8f __attribute__((vector_size(32)));
typedef int32_t pv8i __attribute__((vector_size(32)));

void nb_im2col(const float *in, int64_t n, int64_t h, int64_t w, int64_t c,
               int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow,
               int64_t r0, int64_t nr, float *col) {
    (void)n;
    const int64_t kc = k * c;       // one kernel row of taps, contiguous in NHWC
    const int64_t K = k * kc;       // columns of the im2col matrix
    const int64_t plane = oh * ow;
    for (int64_t rr = 0; rr < nr; rr++) {
        const int64_t r = r0 + rr;
        const int64_t img = r / plane, pix = r % plane;
        const int64_t oy = pix / ow, ox = pix % ow;
        const int64_t iy0 = oy * s - p, ix0 = ox * s - p;
        // valid kx range [kx0, kx1): 0 <= ix0+kx < w
        int64_t kx0 = ix0 < 0 ? -ix0 : 0;
        int64_t kx1 = w - ix0 < k ? w - ix0 : k;
        if (kx1 < kx0) kx1 = kx0;
        float *dst = col + rr * K;
        const float *base = in + img * h * w * c;
        for (int64_t ky = 0; ky < k; ky++) {
            const int64_t iy = iy0 + ky;
            float *d = dst + ky * kc;
            if (iy < 0 || iy >= h || kx0 >= kx1) {
                memset(d, 0, (size_t)kc * sizeof(float));
                continue;
            }
            if (kx0 > 0) memset(d, 0, (size_t)(kx0 * c) * sizeof(float));
            memcpy(d + kx0 * c, base + (iy * w + ix0 + kx0) * c, (size_t)((kx1 - kx0) * c) * sizeof(float));
            if (kx1 < k) memset(d + kx1 * c, 0, (size_t)((k - kx1) * c) * sizeof(float));
        }
    }
}

void nb_col2im(const float *col, int64_t n, int64_t h, int64_t w, int64_t c,
               int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow,
               int64_t r0, int64_t nr, float *din) {
    (void)n;
    const int64_t kc = k * c, K = k * kc, plane = oh * ow;
    for (int64_t rr = 0; rr < nr; rr++) {
        const int64_t r = r0 + rr;
        const int64_t img = r / plane, pix = r % plane;
        const int64_t oy = pix / ow, ox = pix % ow;
        const int64_t iy0 = oy * s - p, ix0 = ox * s - p;
        int64_t kx0 = ix0 < 0 ? -ix0 : 0;
        int64_t kx1 = w - ix0 < k ? w - ix0 : k;
        if (kx1 <= kx0) continue;
        const float *src = col + rr * K;
        float *base = din + img * h * w * c;
        for (int64_t ky = 0; ky < k; ky++) {
            const int64_t iy = iy0 + ky;
            if (iy < 0 || iy >= h) continue;
            const float *sp = src + ky * kc + kx0 * c;
            float *dp = base + (iy * w + ix0 + kx0) * c;
            const int64_t len = (kx1 - kx0) * c;
            for (int64_t j = 0; j < len; j++) dp[j] += sp[j];
        }
    }
}

// Clones of a loop body per ISA level, the vectoriser choosing the
// registers: the same operations per element in the same order, so every
// level gives the same bits.
#if defined(__x86_64__) && defined(__GNUC__)
#define NB_AVX2 __attribute__((target("avx2,fma")))
#define NB_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define NB_CLONES(name, PARAMS, ARGS)                                  \
    static void name##_base PARAMS { name##_body ARGS; }               \
    NB_AVX2 static void name##_avx2 PARAMS { name##_body ARGS; }       \
    NB_AVX512 static void name##_avx512 PARAMS { name##_body ARGS; }   \
    static void name##_isa PARAMS {                                    \
        const int l = nb_isa_level();                                  \
        if (l >= NB_ISA_AVX512) name##_avx512 ARGS;                    \
        else if (l >= NB_ISA_AVX2) name##_avx2 ARGS;                   \
        else name##_base ARGS;                                         \
    }
#else
#define NB_CLONES(name, PARAMS, ARGS) \
    static void name##_isa PARAMS { name##_body ARGS; }
#endif

static inline __attribute__((always_inline)) void bias_act_body(float *x, int64_t rows, int64_t c, int64_t ld,
                                                                const float *bias, int relu) {
    if (relu) {
        for (int64_t r = 0; r < rows; r++) {
            float *row = x + r * ld;
            for (int64_t j = 0; j < c; j++) {
                float v = row[j] + bias[j];
                row[j] = v > 0.0f ? v : 0.0f;
            }
        }
    } else {
        for (int64_t r = 0; r < rows; r++) {
            float *row = x + r * ld;
            for (int64_t j = 0; j < c; j++) row[j] += bias[j];
        }
    }
}
NB_CLONES(bias_act, (float *x, int64_t rows, int64_t c, int64_t ld, const float *bias, int relu),
          (x, rows, c, ld, bias, relu))

void nb_bias_act(float *x, int64_t rows, int64_t c, int64_t ld, const float *bias, int relu) {
    bias_act_isa(x, rows, c, ld, bias, relu);
}

// Caffe pooling window of output (py, px): the in-bounds rows [y0, y1) and
// columns [x0, x1), and the average-pool divisor (the window clipped to
// [-p, h+p) x [-p, w+p) before clipping to the image).
static inline int64_t pool_window(int64_t h, int64_t w, int64_t k, int64_t s, int64_t p,
                                  int64_t py, int64_t px, int64_t *y0, int64_t *y1,
                                  int64_t *x0, int64_t *x1) {
    int64_t ys = py * s - p, ye = ys + k, xs = px * s - p, xe = xs + k;
    if (ye > h + p) ye = h + p;
    if (xe > w + p) xe = w + p;
    const int64_t div = (ye - ys) * (xe - xs);
    *y0 = ys < 0 ? 0 : ys;
    *y1 = ye > h ? h : ye;
    *x0 = xs < 0 ? 0 : xs;
    *x1 = xe > w ? w : xe;
    return div;
}

// One output pixel of max pooling with argmax: the running max and its
// index stay in registers over the window, one store each at the end. Ties
// keep the first element in window order; a window of only NaN or values
// <= -FLT_MAX points at its first element. The 8-lane body needs AVX2: on
// the x86-64 baseline GCC expands 32-byte vectors piecewise, which ran 15x
// slower than the scalar loop, so the baseline build is scalar.
#define MAXPOOL_ARGMAX_ARGS const float *src, int64_t w, int64_t c, int64_t y0, int64_t y1, \
                            int64_t x0, int64_t x1, int32_t base, float *restrict dst,    \
                            int32_t *restrict am

static inline __attribute__((always_inline)) void maxpool_argmax_tail(MAXPOOL_ARGMAX_ARGS, int64_t j) {
    for (; j < c; j++) {
        float best = -FLT_MAX;
        int32_t bi = base + (int32_t)((y0 * w + x0) * c + j);
        for (int64_t y = y0; y < y1; y++) {
            for (int64_t x = x0; x < x1; x++) {
                const int64_t off = (y * w + x) * c + j;
                const int gt = src[off] > best;
                best = gt ? src[off] : best;
                bi = gt ? base + (int32_t)off : bi;
            }
        }
        dst[j] = best;
        am[j] = bi;
    }
}

static void maxpool_argmax_base(MAXPOOL_ARGMAX_ARGS) { maxpool_argmax_tail(src, w, c, y0, y1, x0, x1, base, dst, am, 0); }

#if defined(__x86_64__) && defined(__GNUC__)
typedef float pv16f __attribute__((vector_size(64)));
typedef int32_t pv16i __attribute__((vector_size(64)));

// W channels a vector (8: AVX2, 16: AVX-512), the scalar tail after; the
// same comparisons at every width (ties keep the first), so the same
// values and indices.
#define NB_ARGMAX(W, TGT)                                                                  \
    TGT static void maxpool_argmax_w##W(MAXPOOL_ARGMAX_ARGS) {                             \
        pv##W##i lane;                                                                     \
        pv##W##f lowest;                                                                   \
        for (int q = 0; q < W; q++) lane[q] = q, lowest[q] = -FLT_MAX;                     \
        int64_t j = 0;                                                                     \
        for (; j + W <= c; j += W) {                                                       \
            pv##W##f best = lowest;                                                        \
            pv##W##i bi = lane + (base + (int32_t)((y0 * w + x0) * c + j));                \
            for (int64_t y = y0; y < y1; y++) {                                            \
                for (int64_t x = x0; x < x1; x++) {                                        \
                    const int64_t off = (y * w + x) * c + j;                               \
                    pv##W##f a;                                                            \
                    memcpy(&a, src + off, sizeof a);                                       \
                    const pv##W##i cand = lane + (base + (int32_t)off);                    \
                    const pv##W##i gt = a > best; /* all ones where a > best */            \
                    best = (pv##W##f)(((pv##W##i)a & gt) | ((pv##W##i)best & ~gt));        \
                    bi = (cand & gt) | (bi & ~gt);                                         \
                }                                                                          \
            }                                                                              \
            memcpy(dst + j, &best, sizeof best);                                           \
            memcpy(am + j, &bi, sizeof bi);                                                \
        }                                                                                  \
        maxpool_argmax_tail(src, w, c, y0, y1, x0, x1, base, dst, am, j);                  \
    }
NB_ARGMAX(8, NB_AVX2)
NB_ARGMAX(16, NB_AVX512)
#undef NB_ARGMAX
#endif

static void maxpool_argmax_px(MAXPOOL_ARGMAX_ARGS) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (nb_isa_level() >= NB_ISA_AVX512) {
        maxpool_argmax_w16(src, w, c, y0, y1, x0, x1, base, dst, am);
        return;
    }
    if (nb_have_avx2_fma()) {
        maxpool_argmax_w8(src, w, c, y0, y1, x0, x1, base, dst, am);
        return;
    }
#endif
    maxpool_argmax_base(src, w, c, y0, y1, x0, x1, base, dst, am);
}

// One output pixel of max (is_max) or average pooling without argmax:
// blocks of POOL_BLK channels accumulate in a local array that GCC keeps in
// vector registers (8 ymm with AVX2) over the whole window, one store per
// channel at the end. The old loop read-modify-wrote dst once per window
// element: 6.6 GB/s for cifar pool1 against 12.5 for max pooling with
// argmax. Same order of operations as before, so the same bits: the max
// keeps dst when v is NaN, the sum runs over y then x.
#define POOL_BLK 64
#define POOL_ARGS const float *src, int64_t w, int64_t c, int64_t y0, int64_t y1, int64_t x0, \
                  int64_t x1, float scale, float *restrict dst

static inline __attribute__((always_inline)) void pool_block(POOL_ARGS, int64_t j0, const int64_t nb,
                                                             const int is_max) {
    float acc[POOL_BLK];
    for (int64_t j = 0; j < nb; j++) acc[j] = is_max ? -FLT_MAX : 0.0f;
    for (int64_t y = y0; y < y1; y++) {
        for (int64_t x = x0; x < x1; x++) {
            const float *restrict v = src + (y * w + x) * c + j0;
            for (int64_t j = 0; j < nb; j++) acc[j] = is_max ? (v[j] > acc[j] ? v[j] : acc[j]) : acc[j] + v[j];
        }
    }
    for (int64_t j = 0; j < nb; j++) dst[j0 + j] = is_max ? acc[j] : acc[j] * scale;
}

static inline __attribute__((always_inline)) void pool_px_body(POOL_ARGS, const int is_max) {
    int64_t j0 = 0;
    for (; j0 + POOL_BLK <= c; j0 += POOL_BLK) pool_block(src, w, c, y0, y1, x0, x1, scale, dst, j0, POOL_BLK, is_max);
    if (j0 < c) pool_block(src, w, c, y0, y1, x0, x1, scale, dst, j0, c - j0, is_max);
}

static void maxpool_px_base(POOL_ARGS) { pool_px_body(src, w, c, y0, y1, x0, x1, scale, dst, 1); }
static void avepool_px_base(POOL_ARGS) { pool_px_body(src, w, c, y0, y1, x0, x1, scale, dst, 0); }
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void maxpool_px_avx2(POOL_ARGS) {
    pool_px_body(src, w, c, y0, y1, x0, x1, scale, dst, 1);
}
__attribute__((target("avx2,fma"))) static void avepool_px_avx2(POOL_ARGS) {
    pool_px_body(src, w, c, y0, y1, x0, x1, scale, dst, 0);
}
NB_AVX512 static void maxpool_px_avx512(POOL_ARGS) { pool_px_body(src, w, c, y0, y1, x0, x1, scale, dst, 1); }
NB_AVX512 static void avepool_px_avx512(POOL_ARGS) { pool_px_body(src, w, c, y0, y1, x0, x1, scale, dst, 0); }
#endif

typedef void (*pool_px_fn)(POOL_ARGS);

static pool_px_fn pool_px(int is_max) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (nb_isa_level() >= NB_ISA_AVX512) return is_max ? maxpool_px_avx512 : avepool_px_avx512;
    if (nb_have_avx2_fma()) return is_max ? maxpool_px_avx2 : avepool_px_avx2;
#endif
    return is_max ? maxpool_px_base : avepool_px_base;
}

void nb_maxpool(const float *in, int64_t n, int64_t h, int64_t w, int64_t c,
                int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow,
                float *out, int32_t *argmax) {
    const pool_px_fn maxpx = pool_px(1);
    for (int64_t img = 0; img < n; img++) {
        const float *src = in + img * h * w * c;
        for (int64_t py = 0; py < oh; py++) {
            for (int64_t px = 0; px < ow; px++) {
                int64_t y0, y1, x0, x1;
                pool_window(h, w, k, s, p, py, px, &y0, &y1, &x0, &x1);
                const int64_t o = ((img * oh + py) * ow + px) * c;
                float *restrict dst = out + o;
                if (!argmax) {
                    maxpx(src, w, c, y0, y1, x0, x1, 1.0f, dst);
                    continue;
                }
                maxpool_argmax_px(src, w, c, y0, y1, x0, x1, (int32_t)(img * h * w * c), dst, argmax + o);
            }
        }
    }
}

void nb_avepool(const float *in, int64_t n, int64_t h, int64_t w, int64_t c,
                int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow,
                float *out) {
    const pool_px_fn ave = pool_px(0);
    for (int64_t img = 0; img < n; img++) {
        const float *src = in + img * h * w * c;
        for (int64_t py = 0; py < oh; py++) {
            for (int64_t px = 0; px < ow; px++) {
                int64_t y0, y1, x0, x1;
                const int64_t div = pool_window(h, w, k, s, p, py, px, &y0, &y1, &x0, &x1);
                ave(src, w, c, y0, y1, x0, x1, 1.0f / (float)div, out + ((img * oh + py) * ow + px) * c);
            }
        }
    }
}

static inline __attribute__((always_inline)) void gap_body(const float *in, int64_t n, int64_t hw, int64_t c,
                                                           float *out) {
    const float inv = 1.0f / (float)hw;
    for (int64_t img = 0; img < n; img++) {
        const float *src = in + img * hw * c;
        float *dst = out + img * c;
        for (int64_t j = 0; j < c; j++) dst[j] = 0.0f;
        for (int64_t i = 0; i < hw; i++)
            for (int64_t j = 0; j < c; j++) dst[j] += src[i * c + j];
        for (int64_t j = 0; j < c; j++) dst[j] *= inv;
    }
}
NB_CLONES(gap, (const float *in, int64_t n, int64_t hw, int64_t c, float *out), (in, n, hw, c, out))

void nb_gap(const float *in, int64_t n, int64_t hw, int64_t c, float *out) { gap_isa(in, n, hw, c, out); }

void nb_softmax(const float *in, int64_t n, int64_t c, float *out) {
    for (int64_t r = 0; r < n; r++) {
        const float *x = in + r * c;
        float *y = out + r * c;
        float m = x[0];
        for (int64_t j = 1; j < c; j++) m = x[j] > m ? x[j] : m;
        double sum = 0.0;
        for (int64_t j = 0; j < c; j++) {
            const float e = expf(x[j] - m);
            y[j] = e;
            sum += e;
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < c; j++) y[j] *= inv;
    }
}

// restrict: without it GCC assumed db could alias dy and kept the loop scalar.
static inline __attribute__((always_inline)) void bias_act_bwd_body(float *restrict dy, const float *restrict y,
                                                                    int64_t rows, int64_t c,
                                                                    float *restrict db, int relu) {
    for (int64_t r = 0; r < rows; r++) {
        float *restrict d = dy + r * c;
        if (relu) {
            const float *restrict v = y + r * c;
            for (int64_t j = 0; j < c; j++) {
                d[j] = v[j] > 0.0f ? d[j] : 0.0f;
                db[j] += d[j];
            }
        } else {
            for (int64_t j = 0; j < c; j++) db[j] += d[j];
        }
    }
}
NB_CLONES(bias_act_bwd, (float *restrict dy, const float *restrict y, int64_t rows, int64_t c, float *restrict db, int relu),
          (dy, y, rows, c, db, relu))

void nb_bias_act_bwd(float *dy, const float *y, int64_t rows, int64_t c, float *db, int relu) {
    bias_act_bwd_isa(dy, y, rows, c, db, relu);
}

void nb_maxpool_bwd(const float *dout, const int32_t *argmax, int64_t nout, float *din) {
    for (int64_t i = 0; i < nout; i++) din[argmax[i]] += dout[i];
}

void nb_avepool_bwd(const float *dout, int64_t n, int64_t h, int64_t w, int64_t c,
                    int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow, float *din) {
    for (int64_t img = 0; img < n; img++) {
        float *dst = din + img * h * w * c;
        for (int64_t py = 0; py < oh; py++) {
            for (int64_t px = 0; px < ow; px++) {
                int64_t y0, y1, x0, x1;
                const float inv = 1.0f / (float)pool_window(h, w, k, s, p, py, px, &y0, &y1, &x0, &x1);
                const float *g = dout + ((img * oh + py) * ow + px) * c;
                for (int64_t y = y0; y < y1; y++)
                    for (int64_t x = x0; x < x1; x++) {
                        float *d = dst + (y * w + x) * c;
                        for (int64_t j = 0; j < c; j++) d[j] += g[j] * inv;
                    }
            }
        }
    }
}

void nb_gap_bwd(const float *dout, int64_t n, int64_t hw, int64_t c, float *din) {
    const float inv = 1.0f / (float)hw;
    for (int64_t img = 0; img < n; img++) {
        const float *g = dout + img * c;
        float *d = din + img * hw * c;
        for (int64_t i = 0; i < hw; i++)
            for (int64_t j = 0; j < c; j++) d[i * c + j] = g[j] * inv;
    }
}

double nb_softmax_xent(const float *logits, const int32_t *labels, int64_t n, int64_t c,
                       float *probs, float *dlogits, float scale) {
    nb_softmax(logits, n, c, probs);
    double loss = 0.0;
    for (int64_t r = 0; r < n; r++) {
        const float *pr = probs + r * c;
        float *d = dlogits + r * c;
        const int32_t lab = labels[r];
        const double pl = (double)pr[lab];
        loss += -log(pl > 1e-30 ? pl : 1e-30);
        for (int64_t j = 0; j < c; j++) d[j] = pr[j] * scale;
        d[lab] -= scale;
    }
    return loss;
}

void nb_mul(float *x, const float *m, int64_t len) {
    for (int64_t i = 0; i < len; i++) x[i] *= m[i];
}
