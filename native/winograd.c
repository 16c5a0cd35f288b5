// Winograd F(m×m, r×r) input and output transforms (see kernels.h).
//
// Both loop over tiles and, inside a tile, over channel blocks of WCB so the
// a×a×WCB patch and its half-transformed copy stay in L1; every innermost
// loop runs over contiguous channels (NHWC) and vectorizes. Zero entries of
// the transform matrices are skipped (Bᵀ and Aᵀ are about half zeros).
#include "kernels.h"

#include <string.h>

#define WCB 64

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NB_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define NB_CLONES
#endif

NB_CLONES
void nb_wino_in(const float *in, int64_t h, int64_t w, int64_t c, int64_t p,
                int64_t th, int64_t tw, int64_t m, int64_t a, const float *bt,
                int64_t t0, int64_t nt, float *v) {
    float d[NB_WINO_MAXA * NB_WINO_MAXA * WCB];   // (a, a, cb) input patch
    float t1[NB_WINO_MAXA * NB_WINO_MAXA * WCB];  // (a, a, cb) Bᵀ d
    float acc[WCB];
    const int64_t vstride = nt * c;  // between transform positions in v
    const int64_t plane = th * tw;
    for (int64_t tt = 0; tt < nt; tt++) {
        const int64_t t = t0 + tt;
        const int64_t img = t / plane, r = t % plane;
        const int64_t iy0 = (r / tw) * m - p, ix0 = (r % tw) * m - p;
        const float *base = in + img * h * w * c;
        for (int64_t c0 = 0; c0 < c; c0 += WCB) {
            const int64_t cb = c - c0 < WCB ? c - c0 : WCB;
            for (int64_t i = 0; i < a; i++) {
                const int64_t y = iy0 + i;
                for (int64_t j = 0; j < a; j++) {
                    const int64_t x = ix0 + j;
                    float *dd = d + (i * a + j) * WCB;
                    if (y < 0 || y >= h || x < 0 || x >= w)
                        memset(dd, 0, (size_t)cb * sizeof(float));
                    else
                        memcpy(dd, base + (y * w + x) * c + c0, (size_t)cb * sizeof(float));
                }
            }
            // t1[i, j] = Σ_k Bᵀ[i, k] d[k, j]
            for (int64_t i = 0; i < a; i++) {
                for (int64_t j = 0; j < a; j++) {
                    float *o = t1 + (i * a + j) * WCB;
                    for (int64_t q = 0; q < cb; q++) o[q] = 0;
                    for (int64_t k = 0; k < a; k++) {
                        const float b = bt[i * a + k];
                        if (b == 0) continue;
                        const float *s = d + (k * a + j) * WCB;
                        for (int64_t q = 0; q < cb; q++) o[q] += b * s[q];
                    }
                }
            }
            // v[i, j] = Σ_k t1[i, k] Bᵀ[j, k]
            for (int64_t i = 0; i < a; i++) {
                for (int64_t j = 0; j < a; j++) {
                    for (int64_t q = 0; q < cb; q++) acc[q] = 0;
                    for (int64_t k = 0; k < a; k++) {
                        const float b = bt[j * a + k];
                        if (b == 0) continue;
                        const float *s = t1 + (i * a + k) * WCB;
                        for (int64_t q = 0; q < cb; q++) acc[q] += b * s[q];
                    }
                    memcpy(v + (i * a + j) * vstride + tt * c + c0, acc, (size_t)cb * sizeof(float));
                }
            }
        }
    }
}

NB_CLONES
void nb_wino_out(const float *mm, int64_t oh, int64_t ow, int64_t cout,
                 int64_t th, int64_t tw, int64_t m, int64_t a, const float *at,
                 const float *bias, int relu, int64_t t0, int64_t nt, float *out) {
    float t1[NB_WINO_MAXA * NB_WINO_MAXA * WCB];  // (m, a, cb) Aᵀ M
    float acc[WCB];
    const int64_t mstride = nt * cout;
    const int64_t plane = th * tw;
    for (int64_t tt = 0; tt < nt; tt++) {
        const int64_t t = t0 + tt;
        const int64_t img = t / plane, r = t % plane;
        const int64_t oy0 = (r / tw) * m, ox0 = (r % tw) * m;
        float *obase = out + img * oh * ow * cout;
        for (int64_t c0 = 0; c0 < cout; c0 += WCB) {
            const int64_t cb = cout - c0 < WCB ? cout - c0 : WCB;
            const float *src = mm + tt * cout + c0;
            // t1[i, j] = Σ_k Aᵀ[i, k] M[k, j]
            for (int64_t i = 0; i < m; i++) {
                for (int64_t j = 0; j < a; j++) {
                    float *o = t1 + (i * a + j) * WCB;
                    for (int64_t q = 0; q < cb; q++) o[q] = 0;
                    for (int64_t k = 0; k < a; k++) {
                        const float b = at[i * a + k];
                        if (b == 0) continue;
                        const float *s = src + (k * a + j) * mstride;
                        for (int64_t q = 0; q < cb; q++) o[q] += b * s[q];
                    }
                }
            }
            // y[i, j] = act(Σ_k t1[i, k] Aᵀ[j, k] + bias)
            for (int64_t i = 0; i < m && oy0 + i < oh; i++) {
                for (int64_t j = 0; j < m && ox0 + j < ow; j++) {
                    for (int64_t q = 0; q < cb; q++) acc[q] = bias[c0 + q];
                    for (int64_t k = 0; k < a; k++) {
                        const float b = at[j * a + k];
                        if (b == 0) continue;
                        const float *s = t1 + (i * a + k) * WCB;
                        for (int64_t q = 0; q < cb; q++) acc[q] += b * s[q];
                    }
                    if (relu)
                        for (int64_t q = 0; q < cb; q++) acc[q] = acc[q] > 0 ? acc[q] : 0;
                    memcpy(obase + ((oy0 + i) * ow + ox0 + j) * cout + c0, acc, (size_t)cb * sizeof(float));
                }
            }
        }
    }
}
