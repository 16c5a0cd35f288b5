// Winograd F(m×m, r×r) input and output transforms (see kernels.h).
//
// Each tile is transformed 8 (AVX2) or 16 (AVX-512) channels at a time, the
// whole a×a patch held as vectors: Bᵀ d B (input) and Aᵀ X A (output) are a few dozen
// broadcast multiply-adds per vector, zero matrix entries skipped. The body
// is specialised for the tile sizes in use (a = 4, 6 with m = 2, 4) so the
// loops unroll, and compiled three times: AVX-512 and AVX2+FMA, picked at
// run time by the ISA level, and the x86-64 baseline.
#include "kernels.h"

#include <string.h>

#pragma GCC diagnostic ignored "-Wpsabi"  // v8 helpers are always inlined; no ABI crosses a call

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define INLINE static inline __attribute__((always_inline))

// 16-float vectors for the AVX-512 copies: one zmm register each.
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

// Loads and stores of n ≤ W floats (W = 8 or 16); the full vector is the
// common, fast case. The stores are macros: a vector passed by value to a
// function draws GCC's -Wpsabi note in every build.
#define NB_LD(W)                                                          \
    INLINE v##W ld##W(const float *p, int64_t n) {                        \
        v##W v = {0};                                                     \
        if (n == W) memcpy(&v, p, sizeof v);                              \
        else memcpy(&v, p, (size_t)n * sizeof(float));                    \
        return v;                                                         \
    }
NB_LD(8)
NB_LD(16)
#undef NB_LD
#define NB_ST(W, p, v, n)                                                 \
    do {                                                                  \
        const __typeof__(v) nb_st_v = (v);                                \
        if ((n) == W) memcpy((p), &nb_st_v, sizeof nb_st_v);              \
        else memcpy((p), &nb_st_v, (size_t)(n) * sizeof(float));          \
    } while (0)
#define st8(p, v, n) NB_ST(8, p, v, n)
#define st16(p, v, n) NB_ST(16, p, v, n)

// 8 floats a vector: the baseline and AVX2 copies
#define VT v8
#define VTI v8i
#define VW 8
#define VLD ld8
#define VST st8
#define WINO_NAME_UNROLLED(x) x
#define WINO_NAME_GENERIC(x) x##_generic
#include "wino_inst.h"

// 16 floats a vector: the AVX-512 copies
#define VT v16
#define VTI v16i
#define VW 16
#define VLD ld16
#define VST st16
#define WINO_NAME_UNROLLED(x) x##_w16
#define WINO_NAME_GENERIC(x) x##_w16_generic
#include "wino_inst.h"

// The transforms of native.WinoMatrices for the tile sizes in use, as
// float32 (TestWinoTablesMatchGo keeps them equal, bit for bit). A call whose
// matrix equals one of these runs a body with the table constant-folded:
// loops unrolled, zero entries gone at compile time.
static const float AT_2_3[8] = {1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.0f, -1.0f, 1.0f};
static const float BT_2_3[16] = {1.0f, 0.0f, -1.0f, 0.0f, 0.0f, 0.5f, 0.5f, 0.0f, 0.0f, -0.5f, 0.5f, 0.0f, 0.0f, -1.0f, 0.0f, 1.0f};
static const float AT_2_5[12] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 1.0f};
static const float BT_6[36] = {1.0f, 0.0f, -1.25f, 0.0f, 0.25f, 0.0f, 0.0f, 0.6666667f, 0.6666667f, -0.16666667f, -0.16666667f, 0.0f, 0.0f, -0.6666667f, 0.6666667f, 0.16666667f, -0.16666667f, 0.0f, 0.0f, -0.083333336f, -0.041666668f, 0.083333336f, 0.041666668f, 0.0f, 0.0f, 0.083333336f, -0.041666668f, -0.083333336f, 0.041666668f, 0.0f, 0.0f, 4.0f, 0.0f, -5.0f, -0.0f, 1.0f};
static const float AT_4_5[32] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 0.5f, -0.5f, 0.0f, 0.0f, 1.0f, 1.0f, 4.0f, 4.0f, 0.25f, 0.25f, 0.0f, 0.0f, 1.0f, -1.0f, 8.0f, -8.0f, 0.125f, -0.125f, 1.0f};
static const float BT_8[64] = {1.0f, 0.0f, -5.25f, 0.0f, 5.25f, 0.0f, -1.0f, 0.0f, 0.0f, -0.222222224f, -0.222222224f, 0.944444418f, 0.944444418f, -0.222222224f, -0.222222224f, 0.0f, 0.0f, 0.222222224f, -0.222222224f, -0.944444418f, 0.944444418f, 0.222222224f, -0.222222224f, 0.0f, 0.0f, 0.00555555569f, 0.00277777785f, -0.027777778f, -0.013888889f, 0.0222222228f, 0.0111111114f, 0.0f, 0.0f, -0.00555555569f, 0.00277777785f, 0.027777778f, -0.013888889f, -0.0222222228f, 0.0111111114f, 0.0f, 0.0f, 1.42222226f, 2.84444451f, -1.77777779f, -3.55555558f, 0.355555564f, 0.711111128f, 0.0f, 0.0f, -1.42222226f, 2.84444451f, 1.77777779f, -3.55555558f, -0.355555564f, 0.711111128f, 0.0f, 0.0f, -1.0f, 0.0f, 5.25f, -0.0f, -5.25f, 0.0f, 1.0f};
static const float AT_4_3[24] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 0.0f, 0.0f, 1.0f, 1.0f, 4.0f, 4.0f, 0.0f, 0.0f, 1.0f, -1.0f, 8.0f, -8.0f, 1.0f};

const float *nb_wino_table(int kind, int m, int r, int *len) {
#define NB_TABLE(t) do { *len = (int)(sizeof(t) / sizeof(float)); return t; } while (0)
    if (kind == 0) {
        if (m == 2 && r == 3) NB_TABLE(AT_2_3);
        if (m == 2 && r == 5) NB_TABLE(AT_2_5);
        if (m == 4 && r == 3) NB_TABLE(AT_4_3);
        if (m == 4 && r == 5) NB_TABLE(AT_4_5);
    } else {
        if (m == 2 && r == 3) NB_TABLE(BT_2_3);
        if ((m == 2 && r == 5) || (m == 4 && r == 3)) NB_TABLE(BT_6);
        if (m == 4 && r == 5) NB_TABLE(BT_8);
    }
#undef NB_TABLE
    *len = 0;
    return NULL;
}

// Specialisations: constant (m, a) and matrices let the compiler unroll the
// transforms and drop the zero entries.
#define SAME(x, table) (memcmp((x), (table), sizeof(table)) == 0)
#define WINO_IN_CASES(fn)                                                              \
    if (a == 4 && SAME(bt, BT_2_3)) fn(in, h, w, c, p, th, tw, m, 4, BT_2_3, t0, nt, vs, v);  \
    else if (a == 6 && SAME(bt, BT_6)) fn(in, h, w, c, p, th, tw, m, 6, BT_6, t0, nt, vs, v); \
    else if (a == 8 && SAME(bt, BT_8)) fn(in, h, w, c, p, th, tw, m, 8, BT_8, t0, nt, vs, v); \
    else fn##_generic(in, h, w, c, p, th, tw, m, a, bt, t0, nt, vs, v);
#define WINO_OUT_CASES(fn)                                                                          \
    if (m == 2 && a == 4 && SAME(at, AT_2_3))                                                       \
        fn(mm, oh, ow, cout, th, tw, 2, 4, AT_2_3, bias, relu, t0, nt, ms, ldo, out);                         \
    else if (m == 2 && a == 6 && SAME(at, AT_2_5))                                                  \
        fn(mm, oh, ow, cout, th, tw, 2, 6, AT_2_5, bias, relu, t0, nt, ms, ldo, out);                         \
    else if (m == 4 && a == 6 && SAME(at, AT_4_3))                                                  \
        fn(mm, oh, ow, cout, th, tw, 4, 6, AT_4_3, bias, relu, t0, nt, ms, ldo, out);                         \
    else if (m == 4 && a == 8 && SAME(at, AT_4_5))                                                  \
        fn(mm, oh, ow, cout, th, tw, 4, 8, AT_4_5, bias, relu, t0, nt, ms, ldo, out);                         \
    else fn##_generic(mm, oh, ow, cout, th, tw, m, a, at, bias, relu, t0, nt, ms, ldo, out);

#define WINO_DY_CASES(fn)                                                                  \
    if (m == 2 && a == 4 && SAME(at, AT_2_3)) fn(dy, oh, ow, c, th, tw, 2, 4, AT_2_3, t0, nt, ys, yh); \
    else if (m == 2 && a == 6 && SAME(at, AT_2_5)) fn(dy, oh, ow, c, th, tw, 2, 6, AT_2_5, t0, nt, ys, yh); \
    else if (m == 4 && a == 6 && SAME(at, AT_4_3)) fn(dy, oh, ow, c, th, tw, 4, 6, AT_4_3, t0, nt, ys, yh); \
    else if (m == 4 && a == 8 && SAME(at, AT_4_5)) fn(dy, oh, ow, c, th, tw, 4, 8, AT_4_5, t0, nt, ys, yh); \
    else fn##_generic(dy, oh, ow, c, th, tw, m, a, at, t0, nt, ys, yh);
#define DY_ARGS const float *dy, int64_t oh, int64_t ow, int64_t c, int64_t th, int64_t tw, int64_t m, \
                int64_t a, const float *at, int64_t t0, int64_t nt, int64_t ys, float *yh

#define IN_ARGS const float *in, int64_t h, int64_t w, int64_t c, int64_t p, int64_t th, int64_t tw, \
                int64_t m, int64_t a, const float *bt, int64_t t0, int64_t nt, int64_t vs, float *v
#define OUT_ARGS const float *mm, int64_t oh, int64_t ow, int64_t cout, int64_t th, int64_t tw, \
                 int64_t m, int64_t a, const float *at, const float *bias, int relu, int64_t t0,   \
                 int64_t nt, int64_t ms, int64_t ldo, float *out

static void wino_in_base(IN_ARGS) { WINO_IN_CASES(wino_in_body) }
static void wino_out_base(OUT_ARGS) { WINO_OUT_CASES(wino_out_body) }
static void wino_dy_base(DY_ARGS) { WINO_DY_CASES(wino_dy_body) }

#if defined(__x86_64__) && defined(__GNUC__)
#define NB_HAVE_AVX2_PATH 1
__attribute__((target("avx2,fma"))) static void wino_in_avx2(IN_ARGS) { WINO_IN_CASES(wino_in_body) }
__attribute__((target("avx2,fma"))) static void wino_out_avx2(OUT_ARGS) { WINO_OUT_CASES(wino_out_body) }
__attribute__((target("avx2,fma"))) static void wino_dy_avx2(DY_ARGS) { WINO_DY_CASES(wino_dy_body) }
#define TGT512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
TGT512 static void wino_in_avx512(IN_ARGS) { WINO_IN_CASES(wino_in_body_w16) }
TGT512 static void wino_out_avx512(OUT_ARGS) { WINO_OUT_CASES(wino_out_body_w16) }
TGT512 static void wino_dy_avx512(DY_ARGS) { WINO_DY_CASES(wino_dy_body_w16) }
#endif

void nb_wino_in(IN_ARGS) {
#ifdef NB_HAVE_AVX2_PATH
    if (nb_isa_level() >= NB_ISA_AVX512) {
        wino_in_avx512(in, h, w, c, p, th, tw, m, a, bt, t0, nt, vs, v);
        return;
    }
    if (nb_have_avx2_fma()) {
        wino_in_avx2(in, h, w, c, p, th, tw, m, a, bt, t0, nt, vs, v);
        return;
    }
#endif
    wino_in_base(in, h, w, c, p, th, tw, m, a, bt, t0, nt, vs, v);
}

void nb_wino_out(OUT_ARGS) {
#ifdef NB_HAVE_AVX2_PATH
    if (nb_isa_level() >= NB_ISA_AVX512) {
        wino_out_avx512(mm, oh, ow, cout, th, tw, m, a, at, bias, relu, t0, nt, ms, ldo, out);
        return;
    }
    if (nb_have_avx2_fma()) {
        wino_out_avx2(mm, oh, ow, cout, th, tw, m, a, at, bias, relu, t0, nt, ms, ldo, out);
        return;
    }
#endif
    wino_out_base(mm, oh, ow, cout, th, tw, m, a, at, bias, relu, t0, nt, ms, ldo, out);
}

void nb_wino_dy(DY_ARGS) {
#ifdef NB_HAVE_AVX2_PATH
    if (nb_isa_level() >= NB_ISA_AVX512) {
        wino_dy_avx512(dy, oh, ow, c, th, tw, m, a, at, t0, nt, ys, yh);
        return;
    }
    if (nb_have_avx2_fma()) {
        wino_dy_avx2(dy, oh, ow, c, th, tw, m, a, at, t0, nt, ys, yh);
        return;
    }
#endif
    wino_dy_base(dy, oh, ow, c, th, tw, m, a, at, t0, nt, ys, yh);
}

// Four input channels at a time, their double lanes side by side, so the
// loops over (ξ, ν, k, l) run on vectors of 4 (the du reads for 4
// consecutive ci are contiguous).
typedef double v4d __attribute__((vector_size(32)));

INLINE void filter_grad_body(float *dw, const float *du, int64_t cout, int64_t r, int64_t cin,
                             int64_t a, const double *g) {
    for (int64_t co = 0; co < cout; co++) {
        for (int64_t c0 = 0; c0 < cin; c0 += 4) {
            const int64_t nc = cin - c0 < 4 ? cin - c0 : 4;
            v4d tmp[NB_WINO_MAXA][NB_WINO_MAXA];  // (a, r): du·G
            for (int64_t xi = 0; xi < a; xi++) {
                v4d d[NB_WINO_MAXA];
                for (int64_t nu = 0; nu < a; nu++) {
                    const float *src = du + ((xi * a + nu) * cout + co) * cin + c0;
                    v4d v = {0, 0, 0, 0};
                    for (int64_t j = 0; j < nc; j++) v[j] = src[j];
                    d[nu] = v;
                }
                for (int64_t l = 0; l < r; l++) {
                    v4d s = {0, 0, 0, 0};
                    for (int64_t nu = 0; nu < a; nu++) s += g[nu * r + l] * d[nu];
                    tmp[xi][l] = s;
                }
            }
            for (int64_t k = 0; k < r; k++) {
                for (int64_t l = 0; l < r; l++) {
                    v4d s = {0, 0, 0, 0};
                    for (int64_t xi = 0; xi < a; xi++) s += g[xi * r + k] * tmp[xi][l];
                    float *dst = dw + ((co * r + k) * r + l) * cin + c0;
                    for (int64_t j = 0; j < nc; j++) dst[j] += (float)s[j];
                }
            }
        }
    }
}

INLINE void filter_body(float *u, const float *w, int64_t cout, int64_t r, int64_t cin, int64_t a,
                        const double *g) {
    for (int64_t co = 0; co < cout; co++) {
        for (int64_t c0 = 0; c0 < cin; c0 += 4) {
            const int64_t nc = cin - c0 < 4 ? cin - c0 : 4;
            v4d tmp[NB_WINO_MAXA][NB_WINO_MAXA];  // (a, r): G·w
            v4d x[NB_WINO_MAXA][NB_WINO_MAXA];    // (r, r): w
            for (int64_t k = 0; k < r; k++) {
                for (int64_t l = 0; l < r; l++) {
                    const float *src = w + ((co * r + k) * r + l) * cin + c0;
                    v4d v = {0, 0, 0, 0};
                    for (int64_t j = 0; j < nc; j++) v[j] = src[j];
                    x[k][l] = v;
                }
            }
            for (int64_t xi = 0; xi < a; xi++) {
                for (int64_t l = 0; l < r; l++) {
                    v4d s = {0, 0, 0, 0};
                    for (int64_t k = 0; k < r; k++) s += g[xi * r + k] * x[k][l];
                    tmp[xi][l] = s;
                }
            }
            for (int64_t xi = 0; xi < a; xi++) {
                for (int64_t nu = 0; nu < a; nu++) {
                    v4d s = {0, 0, 0, 0};
                    for (int64_t l = 0; l < r; l++) s += tmp[xi][l] * g[nu * r + l];
                    float *dst = u + ((xi * a + nu) * cout + co) * cin + c0;
                    for (int64_t j = 0; j < nc; j++) dst[j] = (float)s[j];
                }
            }
        }
    }
}

static void filter_base(float *u, const float *w, int64_t cout, int64_t r, int64_t cin, int64_t a,
                        const double *g) {
    filter_body(u, w, cout, r, cin, a, g);
}

static void filter_grad_base(float *dw, const float *du, int64_t cout, int64_t r, int64_t cin,
                             int64_t a, const double *g) {
    filter_grad_body(dw, du, cout, r, cin, a, g);
}

#ifdef NB_HAVE_AVX2_PATH
__attribute__((target("avx2,fma"))) static void filter_avx2(float *u, const float *w, int64_t cout, int64_t r,
                                                            int64_t cin, int64_t a, const double *g) {
    filter_body(u, w, cout, r, cin, a, g);
}
__attribute__((target("avx2,fma"))) static void filter_grad_avx2(float *dw, const float *du, int64_t cout,
                                                                 int64_t r, int64_t cin, int64_t a,
                                                                 const double *g) {
    filter_grad_body(dw, du, cout, r, cin, a, g);
}
#endif

void nb_wino_filter_grad(float *dw, const float *du, int64_t cout, int64_t r, int64_t cin,
                         int64_t a, const double *g) {
#ifdef NB_HAVE_AVX2_PATH
    if (nb_have_avx2_fma()) {
        filter_grad_avx2(dw, du, cout, r, cin, a, g);
        return;
    }
#endif
    filter_grad_base(dw, du, cout, r, cin, a, g);
}

void nb_wino_filter(float *u, const float *w, int64_t cout, int64_t r, int64_t cin, int64_t a,
                    const double *g) {
#ifdef NB_HAVE_AVX2_PATH
    if (nb_have_avx2_fma()) {
        filter_avx2(u, w, cout, r, cin, a, g);
        return;
    }
#endif
    filter_base(u, w, cout, r, cin, a, g);
}
