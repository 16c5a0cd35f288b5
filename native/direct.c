// Direct convolution for inputs with few channels (see kernels.h).
//
// The first conv of every NIN preset has c = 1 or 3, so its im2col GEMM has
// K = k·k·c = 25, 75 or 363, OpenBLAS's weakest shape (24–52 GFLOP/s on one
// core). Here a step computes 4 neighbouring output pixels × 24 output
// channels in twelve 8-float accumulators: per tap, three weight vectors
// are loaded once for the 4 pixels and each pixel broadcasts its input
// value. The image is first copied into a zero-padded scratch so no tap
// needs a bounds test. The body is specialised on the pixel and vector
// counts so the accumulators stay in registers, and compiled twice:
// AVX2+FMA, picked at run time when the CPU has it, and the x86-64 baseline.
#include "kernels.h"

#include <string.h>

#pragma GCC diagnostic ignored "-Wpsabi"  // v8 helpers are always inlined; no ABI crosses a call
#pragma GCC optimize("fp-contract=fast")   // x·w + acc as one FMA (-std=c11 turns contraction off)

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define INLINE static inline __attribute__((always_inline))
#define NP 4  // output pixels per step (along an output row)
#define NV 3  // 8-float accumulators per pixel: 24 output channels per pass

// Output pixels [ox0, ox0+np) of row oy of one image, channels [j0, j0+8·nv):
// np·nv accumulators, each tap one broadcast per pixel and nv weight loads.
// img points at the image, zero-padded by the caller so every tap is in
// bounds: (hp, wp, c).
INLINE void direct_step(const float *img, int64_t wp, int64_t c, int64_t k, int64_t s,
                        int64_t oy, int64_t ox0, const float *wt, int64_t ws, const float *bias,
                        int64_t j0, int64_t nlast, int relu, float *out, int64_t ostride,
                        const int np, const int nv) {
    v8 acc[NP][NV];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) {
        v8 b = {0};
        memcpy(&b, bias + j0 + 8 * v, (size_t)(v == nv - 1 ? nlast : 8) * sizeof(float));
#pragma GCC unroll 4
        for (int q = 0; q < np; q++) acc[q][v] = b;
    }
    const int64_t xs = s * c;  // input step between neighbouring output pixels
    for (int64_t ky = 0; ky < k; ky++) {
        const float *xrow = img + ((oy * s + ky) * wp + ox0 * s) * c;
        const float *wrow = wt + ky * k * c * ws + j0;
        for (int64_t t = 0; t < k * c; t++) {  // (kx, ci) pairs, contiguous in NHWC
            v8 wv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) memcpy(&wv[v], wrow + t * ws + 8 * v, sizeof(v8));
#pragma GCC unroll 4
            for (int q = 0; q < np; q++) {
                const float x = xrow[q * xs + t];
                const v8 xb = {x, x, x, x, x, x, x, x};
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++) acc[q][v] += xb * wv[v];
            }
        }
    }
#pragma GCC unroll 4
    for (int q = 0; q < np; q++) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            v8 a = acc[q][v];
            if (relu) a = (v8)((v8i)a & (a > 0));  // lanes ≤ 0 (and NaN) become +0
            memcpy(out + q * ostride + 8 * v, &a, (size_t)(v == nv - 1 ? nlast : 8) * sizeof(float));
        }
    }
}

#define STEP(P, V) direct_step(img, wp, c, k, s, oy, ox, wt, ws, bias, j0, nlast, relu, o, cout, P, V)

#define DIRECT_ARGS const float *in, int64_t h, int64_t w, int64_t c, int64_t k, int64_t s, \
                    int64_t p, int64_t oh, int64_t ow, const float *wt, int64_t ws,          \
                    const float *bias, int64_t cout, int relu, int64_t r0, int64_t nr,        \
                    float *pad, float *out

// Walks rows [r0, r0+nr) image by image (padding each into pad when p > 0),
// output row by output row, in steps of up to NP pixels, and per step over
// the channel passes.
#define DIRECT_BODY                                                                            \
    const int64_t hp = h + 2 * p, wp = w + 2 * p, plane = oh * ow;                             \
    int64_t r = r0;                                                                            \
    while (r < r0 + nr) {                                                                      \
        const int64_t im = r / plane;                                                          \
        const int64_t rend = (im + 1) * plane < r0 + nr ? (im + 1) * plane : r0 + nr;          \
        const float *img = in + im * h * w * c;                                                \
        if (p > 0) {                                                                           \
            /* only the padded rows that output rows oyA..oyB read: a chain \
               tile calls this for a few output rows at a time */            \
            const int64_t oyA = (r % plane) / ow, oyB = ((rend - 1) % plane) / ow;            \
            const int64_t pyB = oyB * s + k < hp ? oyB * s + k : hp;                          \
            for (int64_t py = oyA * s; py < pyB; py++) {                                       \
                float *prow = pad + py * wp * c;                                               \
                const int64_t y = py - p;                                                      \
                if (y < 0 || y >= h) {                                                         \
                    memset(prow, 0, (size_t)(wp * c) * sizeof(float));                         \
                    continue;                                                                  \
                }                                                                              \
                memset(prow, 0, (size_t)(p * c) * sizeof(float));                              \
                memcpy(prow + p * c, img + y * w * c, (size_t)(w * c) * sizeof(float));        \
                memset(prow + (p + w) * c, 0, (size_t)((wp - p - w) * c) * sizeof(float));     \
            }                                                                                  \
            img = pad;                                                                         \
        }                                                                                      \
        while (r < rend) {                                                                     \
            const int64_t q = r % plane, oy = q / ow, ox = q % ow;                             \
            const int64_t left = ow - ox < rend - r ? ow - ox : rend - r;                      \
            const int np = left >= NP ? NP : (int)left;                                        \
            float *orow = out + (r - r0) * cout;                                               \
            for (int64_t j0 = 0; j0 < cout; j0 += 8 * NV) {                                    \
                const int64_t rem = cout - j0;                                                 \
                const int nv = rem >= 8 * NV ? NV : (int)((rem + 7) / 8);                      \
                const int64_t nlast = rem - 8 * (nv - 1) > 8 ? 8 : rem - 8 * (nv - 1);         \
                float *o = orow + j0;                                                          \
                switch (np * 4 + nv) {                                                         \
                case 4 * 4 + 3: STEP(4, 3); break;                                             \
                case 4 * 4 + 2: STEP(4, 2); break;                                             \
                case 4 * 4 + 1: STEP(4, 1); break;                                             \
                case 3 * 4 + 3: STEP(3, 3); break;                                             \
                case 3 * 4 + 2: STEP(3, 2); break;                                             \
                case 3 * 4 + 1: STEP(3, 1); break;                                             \
                case 2 * 4 + 3: STEP(2, 3); break;                                             \
                case 2 * 4 + 2: STEP(2, 2); break;                                             \
                case 2 * 4 + 1: STEP(2, 1); break;                                             \
                case 1 * 4 + 3: STEP(1, 3); break;                                             \
                case 1 * 4 + 2: STEP(1, 2); break;                                             \
                default: STEP(1, 1); break;                                                    \
                }                                                                              \
            }                                                                                  \
            r += np;                                                                           \
        }                                                                                      \
    }                                                                                          \
    (void)hp;

static void direct_base(DIRECT_ARGS) { DIRECT_BODY }

#if defined(__x86_64__) && defined(__GNUC__)
#define NB_HAVE_AVX2_PATH 1
__attribute__((target("avx2,fma"))) static void direct_avx2(DIRECT_ARGS) { DIRECT_BODY }

#endif

void nb_conv_direct(DIRECT_ARGS) {
#ifdef NB_HAVE_AVX2_PATH
    if (nb_have_avx2_fma()) {
        direct_avx2(in, h, w, c, k, s, p, oh, ow, wt, ws, bias, cout, relu, r0, nr, pad, out);
        return;
    }
#endif
    direct_base(in, h, w, c, k, s, p, oh, ow, wt, ws, bias, cout, relu, r0, nr, pad, out);
}
