// ninbatch native kernels over NHWC float32 tensors.
// Contract: callers (the Go wrappers in this package) validate every size and
// length first; kernels never allocate and never keep a pointer after return.
#ifndef NINBATCH_KERNELS_H
#define NINBATCH_KERNELS_H
#include <stdint.h>

// Rows [r0, r0+nr) of the im2col matrix of an NHWC input in (n, h, w, c):
// row r = (img, oy, ox) over (n, oh, ow); column (ky*k + kx)*c + ci.
// Taps outside the image are zero.  col: (nr, k*k*c)
void nb_im2col(const float *in, int64_t n, int64_t h, int64_t w, int64_t c,
               int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow,
               int64_t r0, int64_t nr, float *col);

// Adjoint of nb_im2col: accumulates rows [r0, r0+nr) of col into din (+=).
void nb_col2im(const float *col, int64_t n, int64_t h, int64_t w, int64_t c,
               int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow,
               int64_t r0, int64_t nr, float *din);

// x[r·ld + j] = max(0, x[r·ld + j] + bias[j]) (relu != 0) or x[r·ld + j] + bias[j],
// j < c ≤ ld: the first c columns of a (rows, ld) matrix.
void nb_bias_act(float *x, int64_t rows, int64_t c, int64_t ld, const float *bias, int relu);

// Caffe max pooling, NHWC.  in: (n, h, w, c)  out: (n, oh, ow, c)
// argmax (nullable): (n, oh, ow, c) index into in of the chosen element.
void nb_maxpool(const float *in, int64_t n, int64_t h, int64_t w, int64_t c,
                int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow,
                float *out, int32_t *argmax);

// Caffe average pooling, NHWC: the divisor counts the window clipped to
// [-p, h+p) (so in-bounds only when p == 0).
void nb_avepool(const float *in, int64_t n, int64_t h, int64_t w, int64_t c,
                int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow,
                float *out);

// Global average pooling.  in: (n, hw, c)  out: (n, c)
void nb_gap(const float *in, int64_t n, int64_t hw, int64_t c, float *out);

// Row-wise numerically stable softmax.  in, out: (n, c); may alias.
void nb_softmax(const float *in, int64_t n, int64_t c, float *out);


// ---- backward passes ----

// ReLU + bias backward over (rows, c): dy[r, j] = 0 where y[r, j] <= 0
// (relu != 0), then db[j] += Σ_r dy[r, j].  y is the ReLU output.
void nb_bias_act_bwd(float *dy, const float *y, int64_t rows, int64_t c, float *db, int relu);

// Max pooling backward: din[argmax[i]] += dout[i] for i < nout.
void nb_maxpool_bwd(const float *dout, const int32_t *argmax, int64_t nout, float *din);

// Average pooling backward (Caffe divisor): din += dout / window size.
void nb_avepool_bwd(const float *dout, int64_t n, int64_t h, int64_t w, int64_t c,
                    int64_t k, int64_t s, int64_t p, int64_t oh, int64_t ow, float *din);

// GAP backward: din[img, i, j] = dout[img, j] / hw.  din: (n, hw, c)
void nb_gap_bwd(const float *dout, int64_t n, int64_t hw, int64_t c, float *din);

// Softmax + cross-entropy: probs = softmax(logits); dlogits = (probs −
// onehot(label)) · scale; returns Σ −log probs[label] (float64).
double nb_softmax_xent(const float *logits, const int32_t *labels, int64_t n, int64_t c,
                       float *probs, float *dlogits, float scale);

// x[i] *= m[i] for i < len (dropout forward and backward with a scaled mask).
void nb_mul(float *x, const float *m, int64_t len);

// ---- Winograd F(m×m, r×r) convolution transforms (stride 1) ----
// a = m + r − 1 ≤ NB_WINO_MAXA. The output (oh, ow) is cut into th × tw tiles of
// m × m (th = ceil(oh/m), tw = ceil(ow/m)); tile t = (img·th + ty)·tw + tx reads
// the a × a input patch at rows ty·m − p + [0, a), cols tx·m − p + [0, a)
// (zero outside the image).
#define NB_WINO_MAXA 8

#if defined(__x86_64__) && defined(__GNUC__)
// 1 when the CPU has AVX2 and FMA: the kernels built for them may run
// (checked once; defined in winograd.c).
// Instruction-set levels (native.ISA): the kernels run the widest one at
// or below the level set, and nb_set_isa clamps to what the CPU supports.
#define NB_ISA_SCALAR 0
#define NB_ISA_AVX2 1
#define NB_ISA_AVX512 2
int nb_isa_supported(void);
int nb_set_isa(int level);
int nb_isa_level(void);
int nb_have_avx2_fma(void);
void nb_relax(int n);
int64_t nb_gemm_set_block_bytes(int64_t n);
#endif

// nb_wino_table returns the float32 transform table the Winograd kernels
// specialise on: kind 0 = Aᵀ, 1 = Bᵀ of F(m, r); NULL when none is built in.
// *len receives its length.
const float *nb_wino_table(int kind, int m, int r, int *len);

// Input transform of tiles [t0, t0+nt): v[(ξ·a+ν)·vs + (t−t0)·c + ci] =
// (Bᵀ d B)[ξ, ν] for the patch d of channel ci; vs ≥ nt·c is the stride
// between transform positions (padded off multiples of 4 KiB, or the a·a
// stores of a tile all land in one cache set).  in: (n, h, w, c)  bt: (a, a)
void nb_wino_in(const float *in, int64_t h, int64_t w, int64_t c, int64_t p,
                int64_t th, int64_t tw, int64_t m, int64_t a, const float *bt,
                int64_t t0, int64_t nt, int64_t vs, float *v);

// Output transform of tiles [t0, t0+nt) with the fused epilogue:
// out[img, ty·m+i, tx·m+j, co] = act((Aᵀ M A)[i, j] + bias[co]) for the
// in-image part of the tile, M[ξ, ν] = mm[(ξ·a+ν)·ms + (t−t0)·cout + co],
// ms ≥ nt·cout.  at: (m, a)  out: (n, oh, ow, ldo), channels [0, cout) of
// each pixel written (ldo ≥ cout: a channel slice of a wider map).
void nb_wino_out(const float *mm, int64_t oh, int64_t ow, int64_t cout,
                 int64_t th, int64_t tw, int64_t m, int64_t a, const float *at,
                 const float *bias, int relu, int64_t t0, int64_t nt, int64_t ms, int64_t ldo,
                 float *out);

// Output-gradient transform for the weight gradient, tiles [t0, t0+nt):
// yh[(ξ·a+ν)·ys + (t−t0)·c + co] = (A D Aᵀ)[ξ, ν] for the m × m tile D of dy
// at rows ty·m + [0, m), cols tx·m + [0, m) (zero outside the map), A = (Aᵀ)ᵀ.
// This is the gradient of the products M[ξ, ν] that nb_wino_out maps to
// that tile, so Σ_t yh[ξν]ᵀ·v[ξν] is the gradient of the transformed filters.
// dy: (n, oh, ow, c)  at: (m, a)
void nb_wino_dy(const float *dy, int64_t oh, int64_t ow, int64_t c,
                int64_t th, int64_t tw, int64_t m, int64_t a, const float *at,
                int64_t t0, int64_t nt, int64_t ys, float *yh);

// Filter transform in double: u[ξ·a+ν, co, ci] = Σ_{k,l} g[ξ,k]·w[co, k, l,
// ci]·g[ν,l].  w: (cout, r, r, cin)  g: (a, r)  u: (a·a, cout, cin)
void nb_wino_filter(float *u, const float *w, int64_t cout, int64_t r, int64_t cin, int64_t a,
                    const double *g);

// Filter gradient from transformed-filter gradients, the adjoint of the
// filter transform, in double: dw[co, k, l, ci] += Σ_{ξ,ν} g[ξ,k]·du[ξ·a+ν,
// co, ci]·g[ν,l].  du: (a·a, cout, cin)  g: (a, r)  dw: (cout, r, r, cin)
void nb_wino_filter_grad(float *dw, const float *du, int64_t cout, int64_t r, int64_t cin,
                         int64_t a, const double *g);

// ---- direct convolution for few input channels ----
// Rows [r0, r0+nr) of conv(in) + bias (ReLU when relu != 0), NHWC:
// out[(r−r0)·cout + j] for output pixel r = (img, oy, ox) over (n, oh, ow).
// wt: (k·k·c, ws) — row (ky·k + kx)·c + ci holds the cout weights of that tap,
// ws ≥ cout is a multiple of 8 and the padding is zero.  in: (n, h, w, c)
// pad: scratch of (h+2p)·(w+2p)·c floats when p > 0 (unused otherwise).
void nb_conv_direct(const float *in, int64_t h, int64_t w, int64_t c, int64_t k, int64_t s,
                    int64_t p, int64_t oh, int64_t ow, const float *wt, int64_t ws,
                    const float *bias, int64_t cout, int relu, int64_t r0, int64_t nr,
                    float *pad, float *out);

// ---- packed-weight GEMM ----
// B (k, n) is packed once into panels of 16 columns: bp[(j/16)·16·k + p·16 +
// j%16] = B[p][j], zero for j ≥ n; nb_pack_len(k, n) floats.  B[p][j] =
// b[p·ldb + j], or b[j·ldb + p] when trans != 0 (b is (n, k): conv weights).
int64_t nb_pack_len(int64_t k, int64_t n);
void nb_pack_b(const float *b, int64_t k, int64_t n, int64_t ldb, int trans, float *bp);

// c[i·ldc + j − j0] = act(Σ_p a[i·lda + p]·B[p][j] + bias[j − j0]) for i < m,
// j0 ≤ j < j1 ≤ n, j0 a multiple of 16; bias nullable (0), ReLU when relu != 0.
// generic != 0 forces the scalar baseline (tests).
void nb_gemm_packed(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda,
                    const float *bp, const float *bias, int relu, float *c, int64_t ldc, int generic);

// 1 when nb_gemm_packed runs its AVX2+FMA build on this CPU.
int nb_gemm_fast(void);
// Sets the packed-B size above which nb_gemm_packed cuts a long K into
// blocks (default 4 MiB; tests set 0 to reach the blocked path with small
// shapes) and returns the previous value. Not thread-safe.
int64_t nb_gemm_set_stream_bytes(int64_t n);

// Weight-gradient GEMM: c[i·ldc + j] += Σ_r a[r·lda + i]·b[r·ldb + j] for
// i < m, j < n, r < rows (C += AᵀB, A (rows, m), B (rows, n)). AVX-512 when
// the ISA level has it and !generic, else a scalar loop.
void nb_gemm_atb(int64_t m, int64_t n, int64_t rows, const float *a, int64_t lda, const float *b,
                 int64_t ldb, float *c, int64_t ldc, int generic);
// 1 when nb_gemm_atb runs its AVX-512 build at the current level.
int nb_gemm_atb_fast(void);

// Instruction throughput loops (peak.c).
float nb_peak(int kind, int64_t n);

// bf16 GEMM on AMX tiles (gemm_bf16.c).
int64_t nb_pack_bf16_len(int64_t k, int64_t n);
uint16_t nb_bf16(float f);
void nb_pack_b_bf16(const float *b, int64_t k, int64_t n, int64_t ldb, int trans, uint16_t *bp);
void nb_gemm_bf16(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, const uint16_t *bp,
                  const float *bias, int relu, float *c, int64_t ldc, int path);

// int8 GEMM on AMX tiles (path 2), AVX-512 VNNI (1) or plain C (0) (gemm_int8.c).
int64_t nb_pack_int8_len(int64_t k, int64_t n);
void nb_pack_b_int8(const int8_t *b, int64_t k, int64_t n, int64_t ldb, int trans, int8_t *bp);
void nb_gemm_int8(int64_t m, int64_t k, int64_t j0, int64_t j1, const float *a, int64_t lda, float sa, int zp,
                  const int8_t *bp, const float *sw, const float *bias, const float *corr, int relu, float *c,
                  int64_t ldc, int path);
int nb_amx_enable(void);
// Sets the rows of one chunk of nb_gemm_atb, returning the old value.
int64_t nb_gemm_atb_set_rows(int64_t n);

#endif
