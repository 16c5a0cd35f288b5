// Package native holds ninbatch's C kernels over NHWC float32 tensors:
// im2col/col2im, pooling with Caffe rounding, fused bias+activation, global
// average pooling and softmax.
//
// Each Go wrapper validates its arguments in a fixed order and then makes
// exactly one C call for the whole batch-level operation. C never allocates
// and never keeps a Go pointer. Invalid arguments are programming errors and
// panic with a constant message ("native: short out"), as gonum does; user
// input is validated long before it reaches this package.
//
// Package nativeref holds the plain-Go reference of every kernel; the
// conformance test compares the two over a grid of shapes.
package native

/*
#cgo CFLAGS: -O3 -std=c11 -Wall
#cgo LDFLAGS: -lm
#include "kernels.h"
*/
import "C"

import (
	"math"
	"unsafe"
)

// Geom is the geometry of a k×k window operation (convolution or pooling)
// with stride S and symmetric zero padding P over an NHWC tensor
// (N, H, W, C), producing an (N, OH, OW, ·) tensor.
type Geom struct {
	N, H, W, C int // input
	K, S, P    int // window size, stride, padding
	OH, OW     int // output spatial size
}

// Rows is the number of output pixels N·OH·OW (the im2col row count).
func (g Geom) Rows() int { return g.N * g.OH * g.OW }

// Cols is K·K·C, the im2col column count.
func (g Geom) Cols() int { return g.K * g.K * g.C }

// InLen is N·H·W·C.
func (g Geom) InLen() int { return g.N * g.H * g.W * g.C }

// PoolOutLen is N·OH·OW·C, the length of a pooling output.
func (g Geom) PoolOutLen() int { return g.Rows() * g.C }

// OutSize is the output length of a window op along one axis:
// floor((in + 2p − k)/s) + 1, or with ceil=true Caffe's pooling rule
// ceil((in + 2p − k)/s) + 1, dropping a last window that would start in the
// bottom padding. It returns 0 when the window does not fit.
func OutSize(in, k, s, p int, ceil bool) int {
	span := in + 2*p - k
	if in <= 0 || k <= 0 || s <= 0 || p < 0 || span < 0 {
		return 0
	}
	var o int
	if ceil {
		o = (span+s-1)/s + 1
		if p > 0 && (o-1)*s >= in+p {
			o--
		}
	} else {
		o = span/s + 1
	}
	return o
}

const maxElems = math.MaxInt32 // argmax indices are int32; no NIN tensor comes near this

func (g Geom) check() {
	switch {
	case g.N < 0 || g.H < 1 || g.W < 1 || g.C < 1:
		panic("native: bad input shape")
	case g.K < 1:
		panic("native: bad window")
	case g.S < 1:
		panic("native: bad stride")
	case g.P < 0 || g.P >= g.K:
		panic("native: bad pad")
	case g.OH < 1 || g.OW < 1:
		panic("native: bad output shape")
	case (g.OH-1)*g.S-g.P >= g.H || (g.OW-1)*g.S-g.P >= g.W:
		panic("native: window starts outside the input")
	case g.InLen() > maxElems || g.Rows()*g.Cols() > math.MaxInt64/8:
		panic("native: tensor too large")
	}
}

func f32(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

// Im2col writes rows [r0, r0+nr) of the im2col matrix of in into col.
//
//	in:  (N, H, W, C)
//	col: (nr, K·K·C), column (ky·K + kx)·C + c; out-of-image taps are 0
func Im2col(col, in []float32, g Geom, r0, nr int) {
	g.check()
	if r0 < 0 || nr < 0 || r0+nr > g.Rows() {
		panic("native: bad row range")
	}
	if len(in) < g.InLen() {
		panic("native: short in")
	}
	if len(col) < nr*g.Cols() {
		panic("native: short col")
	}
	if nr == 0 {
		return
	}
	C.nb_im2col(f32(in), C.int64_t(g.N), C.int64_t(g.H), C.int64_t(g.W), C.int64_t(g.C),
		C.int64_t(g.K), C.int64_t(g.S), C.int64_t(g.P), C.int64_t(g.OH), C.int64_t(g.OW),
		C.int64_t(r0), C.int64_t(nr), f32(col))
}

// Col2im is the adjoint of Im2col: it adds rows [r0, r0+nr) of col into din.
//
//	col: (nr, K·K·C)
//	din: (N, H, W, C), accumulated (+=)
func Col2im(din, col []float32, g Geom, r0, nr int) {
	g.check()
	if r0 < 0 || nr < 0 || r0+nr > g.Rows() {
		panic("native: bad row range")
	}
	if len(din) < g.InLen() {
		panic("native: short din")
	}
	if len(col) < nr*g.Cols() {
		panic("native: short col")
	}
	if nr == 0 {
		return
	}
	C.nb_col2im(f32(col), C.int64_t(g.N), C.int64_t(g.H), C.int64_t(g.W), C.int64_t(g.C),
		C.int64_t(g.K), C.int64_t(g.S), C.int64_t(g.P), C.int64_t(g.OH), C.int64_t(g.OW),
		C.int64_t(r0), C.int64_t(nr), f32(din))
}

// BiasAct adds bias to the first c columns of every row of x and applies
// ReLU when relu is set (ld > c: a column slice of a wider matrix).
//
//	x:    (rows, ld), in place, columns [0, c)
//	bias: (c)
func BiasAct(x []float32, rows, c, ld int, bias []float32, relu bool) {
	if rows < 0 || c < 1 || ld < c {
		panic("native: bad shape")
	}
	if rows > 0 && len(x) < (rows-1)*ld+c {
		panic("native: short x")
	}
	if len(bias) < c {
		panic("native: short bias")
	}
	if rows == 0 {
		return
	}
	r := C.int(0)
	if relu {
		r = 1
	}
	C.nb_bias_act(f32(x), C.int64_t(rows), C.int64_t(c), C.int64_t(ld), f32(bias), r)
}

// MaxPool is Caffe max pooling. argmax may be nil; otherwise it receives,
// per output element, the flat index into in of the chosen input element.
//
//	in:     (N, H, W, C)
//	out:    (N, OH, OW, C)
//	argmax: (N, OH, OW, C) or nil
func MaxPool(out []float32, argmax []int32, in []float32, g Geom) {
	g.check()
	if len(in) < g.InLen() {
		panic("native: short in")
	}
	if len(out) < g.PoolOutLen() {
		panic("native: short out")
	}
	var am *C.int32_t
	if argmax != nil {
		if len(argmax) < g.PoolOutLen() {
			panic("native: short argmax")
		}
		if len(argmax) > 0 {
			am = (*C.int32_t)(unsafe.Pointer(&argmax[0]))
		}
	}
	if g.N == 0 {
		return
	}
	C.nb_maxpool(f32(in), C.int64_t(g.N), C.int64_t(g.H), C.int64_t(g.W), C.int64_t(g.C),
		C.int64_t(g.K), C.int64_t(g.S), C.int64_t(g.P), C.int64_t(g.OH), C.int64_t(g.OW),
		f32(out), am)
}

// AvePool is Caffe average pooling: a window hanging over the edge averages
// over its part inside [−P, H+P) (the in-bounds part when P is 0).
//
//	in:  (N, H, W, C)
//	out: (N, OH, OW, C)
func AvePool(out, in []float32, g Geom) {
	g.check()
	if len(in) < g.InLen() {
		panic("native: short in")
	}
	if len(out) < g.PoolOutLen() {
		panic("native: short out")
	}
	if g.N == 0 {
		return
	}
	C.nb_avepool(f32(in), C.int64_t(g.N), C.int64_t(g.H), C.int64_t(g.W), C.int64_t(g.C),
		C.int64_t(g.K), C.int64_t(g.S), C.int64_t(g.P), C.int64_t(g.OH), C.int64_t(g.OW),
		f32(out))
}

// GAP is global average pooling.
//
//	in:  (n, hw, c)
//	out: (n, c)
func GAP(out, in []float32, n, hw, c int) {
	if n < 0 || hw < 1 || c < 1 {
		panic("native: bad shape")
	}
	if len(in) < n*hw*c {
		panic("native: short in")
	}
	if len(out) < n*c {
		panic("native: short out")
	}
	if n == 0 {
		return
	}
	C.nb_gap(f32(in), C.int64_t(n), C.int64_t(hw), C.int64_t(c), f32(out))
}

// Softmax is a numerically stable row-wise softmax; out may alias in.
//
//	in, out: (n, c)
func Softmax(out, in []float32, n, c int) {
	if n < 0 || c < 1 {
		panic("native: bad shape")
	}
	if len(in) < n*c {
		panic("native: short in")
	}
	if len(out) < n*c {
		panic("native: short out")
	}
	if n == 0 {
		return
	}
	C.nb_softmax(f32(in), C.int64_t(n), C.int64_t(c), f32(out))
}

// BiasActBackward turns the gradient w.r.t. a ReLU output into the gradient
// w.r.t. its input (zero where y <= 0, when relu is set) in place and adds
// its column sums to db.
//
//	dy: (rows, c), in place   y: (rows, c) ReLU output   db: (c), accumulated
func BiasActBackward(dy, y []float32, rows, c int, db []float32, relu bool) {
	if rows < 0 || c < 1 {
		panic("native: bad shape")
	}
	if len(dy) < rows*c {
		panic("native: short dy")
	}
	if relu && len(y) < rows*c {
		panic("native: short y")
	}
	if len(db) < c {
		panic("native: short db")
	}
	if rows == 0 {
		return
	}
	r := C.int(0)
	yp := (*C.float)(nil)
	if relu {
		r, yp = 1, f32(y)
	}
	C.nb_bias_act_bwd(f32(dy), yp, C.int64_t(rows), C.int64_t(c), f32(db), r)
}

// MaxPoolBackward scatters dout through the argmax of the forward pass.
//
//	dout, argmax: (N, OH, OW, C)   din: (N, H, W, C), accumulated
func MaxPoolBackward(din, dout []float32, argmax []int32, g Geom) {
	g.check()
	n := g.PoolOutLen()
	if len(dout) < n || len(argmax) < n {
		panic("native: short dout or argmax")
	}
	if len(din) < g.InLen() {
		panic("native: short din")
	}
	for _, a := range argmax[:n] { // an index out of range would corrupt memory
		if a < 0 || int(a) >= g.InLen() {
			panic("native: argmax out of range")
		}
	}
	if n == 0 {
		return
	}
	C.nb_maxpool_bwd(f32(dout), (*C.int32_t)(unsafe.Pointer(&argmax[0])), C.int64_t(n), f32(din))
}

// AvePoolBackward spreads dout evenly over each window (Caffe divisor).
//
//	dout: (N, OH, OW, C)   din: (N, H, W, C), accumulated
func AvePoolBackward(din, dout []float32, g Geom) {
	g.check()
	if len(dout) < g.PoolOutLen() {
		panic("native: short dout")
	}
	if len(din) < g.InLen() {
		panic("native: short din")
	}
	if g.N == 0 {
		return
	}
	C.nb_avepool_bwd(f32(dout), C.int64_t(g.N), C.int64_t(g.H), C.int64_t(g.W), C.int64_t(g.C),
		C.int64_t(g.K), C.int64_t(g.S), C.int64_t(g.P), C.int64_t(g.OH), C.int64_t(g.OW), f32(din))
}

// GAPBackward broadcasts dout/hw over every position.
//
//	dout: (n, c)   din: (n, hw, c), overwritten
func GAPBackward(din, dout []float32, n, hw, c int) {
	if n < 0 || hw < 1 || c < 1 {
		panic("native: bad shape")
	}
	if len(dout) < n*c {
		panic("native: short dout")
	}
	if len(din) < n*hw*c {
		panic("native: short din")
	}
	if n == 0 {
		return
	}
	C.nb_gap_bwd(f32(dout), C.int64_t(n), C.int64_t(hw), C.int64_t(c), f32(din))
}

// SoftmaxXent computes probs = softmax(logits), dlogits = (probs −
// onehot(labels))·scale and returns the summed cross-entropy loss.
//
//	logits, probs, dlogits: (n, c)   labels: (n), each in [0, c)
func SoftmaxXent(probs, dlogits, logits []float32, labels []int32, n, c int, scale float32) float64 {
	if n < 0 || c < 1 {
		panic("native: bad shape")
	}
	if len(logits) < n*c || len(probs) < n*c || len(dlogits) < n*c {
		panic("native: short logits, probs or dlogits")
	}
	if len(labels) < n {
		panic("native: short labels")
	}
	for _, l := range labels[:n] {
		if l < 0 || int(l) >= c {
			panic("native: label out of range")
		}
	}
	if n == 0 {
		return 0
	}
	return float64(C.nb_softmax_xent(f32(logits), (*C.int32_t)(unsafe.Pointer(&labels[0])), C.int64_t(n), C.int64_t(c),
		f32(probs), f32(dlogits), C.float(scale)))
}

// Mul multiplies x by m elementwise (dropout with a pre-scaled mask).
func Mul(x, m []float32) {
	if len(m) < len(x) {
		panic("native: short mask")
	}
	if len(x) == 0 {
		return
	}
	C.nb_mul(f32(x), f32(m), C.int64_t(len(x)))
}

// Wino describes a Winograd F(M×M, R×R) stride-1 convolution over the
// geometry G (G.K = R, G.S = 1): A = M + R − 1 transform points, and the
// output cut into TH × TW tiles of M × M per image.
type Wino struct {
	G      Geom
	M, A   int
	TH, TW int
}

// NewWino validates a Winograd geometry.
func NewWino(g Geom, m int) Wino {
	g.check()
	w := Wino{G: g, M: m, A: m + g.K - 1}
	switch {
	case g.S != 1:
		panic("native: Winograd needs stride 1")
	case m < 1 || g.K < 2 || w.A > C.NB_WINO_MAXA:
		panic("native: bad Winograd tile")
	}
	w.TH, w.TW = (g.OH+m-1)/m, (g.OW+m-1)/m
	return w
}

// Tiles is the number of tiles N·TH·TW.
func (w Wino) Tiles() int { return w.G.N * w.TH * w.TW }

func (w Wino) checkRange(t0, nt int) {
	if t0 < 0 || nt < 0 || t0+nt > w.Tiles() {
		panic("native: bad tile range")
	}
}

// WinoStride is the stride between transform positions for nt tiles of
// c channels: nt·c, padded by 64 bytes when it is a multiple of 4 KiB (the
// a·a values of one tile would otherwise share one cache set).
func WinoStride(nt, c int) int {
	s := nt * c
	if s%1024 == 0 {
		s += 16
	}
	return s
}

// winoTable is the built-in float32 table of Aᵀ (kind 0) or Bᵀ (kind 1) of
// F(m, r) that the kernels specialise on, nil if none.
func winoTable(kind, m, r int) []float32 {
	var n C.int
	p := C.nb_wino_table(C.int(kind), C.int(m), C.int(r), &n)
	if p == nil {
		return nil
	}
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), int(n))...)
}

// WinoIn writes the input transform of tiles [t0, t0+nt).
//
//	in: (N, H, W, C)
//	bt: (A, A) the transform Bᵀ, row-major
//	v:  (A·A, vs) with vs = WinoStride(nt, C): v[(ξ·A+ν)·vs + (t−t0)·C + c] =
//	    (Bᵀ d B)[ξ, ν] of tile t's patch d
func WinoIn(v, in []float32, w Wino, bt []float32, t0, nt int) {
	w.checkRange(t0, nt)
	g := w.G
	if len(in) < g.InLen() {
		panic("native: short in")
	}
	if len(bt) < w.A*w.A {
		panic("native: short bt")
	}
	vs := WinoStride(nt, g.C)
	if len(v) < (w.A*w.A-1)*vs+nt*g.C {
		panic("native: short v")
	}
	if nt == 0 {
		return
	}
	C.nb_wino_in(f32(in), C.int64_t(g.H), C.int64_t(g.W), C.int64_t(g.C), C.int64_t(g.P),
		C.int64_t(w.TH), C.int64_t(w.TW), C.int64_t(w.M), C.int64_t(w.A), f32(bt),
		C.int64_t(t0), C.int64_t(nt), C.int64_t(vs), f32(v))
}

// WinoOut writes the output transform of tiles [t0, t0+nt) with bias and
// optional ReLU fused: out[img, ty·M+i, tx·M+j, co] = act((Aᵀ X A)[i, j] + bias[co])
// where X[ξ, ν] = mm[(ξ·A+ν)·ms + (t−t0)·cout + co], ms = WinoStride(nt, cout);
// tile parts outside the image are dropped.
//
//	mm:   (A·A, ms)
//	at:   (M, A) the transform Aᵀ, row-major
//	bias: (cout)
//	out:  (N, OH, OW, ldo), channels [0, cout) of each pixel (ldo ≥ cout)
func WinoOut(out, mm []float32, w Wino, cout, ldo int, at, bias []float32, relu bool, t0, nt int) {
	w.checkRange(t0, nt)
	g := w.G
	switch {
	case cout < 1 || ldo < cout:
		panic("native: bad cout")
	case len(mm) < (w.A*w.A-1)*WinoStride(nt, cout)+nt*cout:
		panic("native: short mm")
	case len(at) < w.M*w.A:
		panic("native: short at")
	case len(bias) < cout:
		panic("native: short bias")
	case len(out) < (g.N*g.OH*g.OW-1)*ldo+cout:
		panic("native: short out")
	}
	if nt == 0 {
		return
	}
	r := C.int(0)
	if relu {
		r = 1
	}
	C.nb_wino_out(f32(mm), C.int64_t(g.OH), C.int64_t(g.OW), C.int64_t(cout),
		C.int64_t(w.TH), C.int64_t(w.TW), C.int64_t(w.M), C.int64_t(w.A), f32(at), f32(bias), r,
		C.int64_t(t0), C.int64_t(nt), C.int64_t(WinoStride(nt, cout)), C.int64_t(ldo), f32(out))
}

// WinoDy writes the output-gradient transform of tiles [t0, t0+nt) for the
// weight gradient: yh[(ξ·A+ν)·ys + (t−t0)·cout + co] = (A D Aᵀ)[ξ, ν] for
// tile t's M × M block D of dy (zero outside the map), ys = WinoStride(nt,
// cout). With v from WinoIn, the gradient of the transformed filters is
// dU[ξν] = Σ_t yh[ξν]ᵀ · v[ξν] (one GEMM per position), and WinoFilterGrad
// maps it back to the filters.
//
//	dy: (N, OH, OW, cout)  at: (M, A)  yh: (A·A, ys)
func WinoDy(yh, dy []float32, w Wino, cout int, at []float32, t0, nt int) {
	w.checkRange(t0, nt)
	g := w.G
	ys := WinoStride(nt, cout)
	switch {
	case cout < 1:
		panic("native: bad cout")
	case len(dy) < g.N*g.OH*g.OW*cout:
		panic("native: short dy")
	case len(at) < w.M*w.A:
		panic("native: short at")
	case len(yh) < (w.A*w.A-1)*ys+nt*cout:
		panic("native: short yh")
	}
	if nt == 0 {
		return
	}
	C.nb_wino_dy(f32(dy), C.int64_t(g.OH), C.int64_t(g.OW), C.int64_t(cout),
		C.int64_t(w.TH), C.int64_t(w.TW), C.int64_t(w.M), C.int64_t(w.A), f32(at),
		C.int64_t(t0), C.int64_t(nt), C.int64_t(ys), f32(yh))
}

// winoFilterTile checks the shapes of a filter transform or its adjoint and
// returns the tile size a: w is (cout, r, r, cin), u is (a·a, cout, cin).
func winoFilterTile(w, u []float32, cout, r, cin int, g []float64) int {
	if cout < 1 || cin < 1 || r < 1 || len(g)%r != 0 {
		panic("native: bad Winograd filter shapes")
	}
	a := len(g) / r
	if a < 1 || a > C.NB_WINO_MAXA || len(w) < cout*r*r*cin || len(u) < a*a*cout*cin {
		panic("native: bad Winograd filter shapes")
	}
	return a
}

// WinoFilter transforms OHWI conv weights for Winograd, in double:
// u[ξ·a+ν, co, ci] = Σ_{k,l} G[ξ,k]·w[co, k, l, ci]·G[ν,l].
//
//	w: (cout, r, r, cin)  g: (a, r)  u: (a·a, cout, cin)
func WinoFilter(u, w []float32, cout, r, cin int, g []float64) {
	a := winoFilterTile(w, u, cout, r, cin, g)
	C.nb_wino_filter(f32(u), f32(w), C.int64_t(cout), C.int64_t(r), C.int64_t(cin), C.int64_t(a),
		(*C.double)(unsafe.Pointer(&g[0])))
}

// WinoFilterGrad adds to dw the filter gradient of transformed-filter
// gradients du, in float64: the adjoint of WinoFilter,
// dw[co, k, l, ci] += Σ_{ξ,ν} G[ξ,k]·du[ξ·a+ν, co, ci]·G[ν,l].
//
//	du: (a·a, cout, cin)  g: (a, r)  dw: (cout, r, r, cin)
func WinoFilterGrad(dw, du []float32, cout, r, cin int, g []float64) {
	a := winoFilterTile(dw, du, cout, r, cin, g)
	C.nb_wino_filter_grad(f32(dw), f32(du), C.int64_t(cout), C.int64_t(r), C.int64_t(cin), C.int64_t(a),
		(*C.double)(unsafe.Pointer(&g[0])))
}

// DirectWeights lays out conv weights for ConvDirect: w is (cout, k·k·c)
// (OHWI, the im2col GEMM's layout); wt is (k·k·c, ws) with ws = cout
// rounded up to 8 and zero padding.
func DirectWeights(w []float32, cout, kkc int) (wt []float32, ws int) {
	if cout < 1 || kkc < 1 {
		panic("native: bad direct-conv weights")
	}
	ws = (cout + 7) &^ 7
	wt = make([]float32, kkc*ws)
	DirectWeightsInto(wt, w, cout, kkc)
	return wt, ws
}

// DirectWeightsInto rewrites wt, laid out by DirectWeights, from w.
func DirectWeightsInto(wt, w []float32, cout, kkc int) {
	ws := (cout + 7) &^ 7
	if cout < 1 || kkc < 1 || len(w) < cout*kkc || len(wt) < kkc*ws {
		panic("native: bad direct-conv weights")
	}
	for t := 0; t < kkc; t++ {
		row := wt[t*ws : (t+1)*ws]
		for o := 0; o < cout; o++ {
			row[o] = w[o*kkc+t]
		}
	}
}

// ConvDirect writes rows [r0, r0+nr) of a conv + bias (+ ReLU) computed
// directly, without im2col: the fast path for inputs with few channels,
// where the im2col GEMM's K = k·k·C is OpenBLAS's weak shape.
//
//	in:   (N, H, W, C)
//	wt:   (K·K·C, ws) from DirectWeights
//	bias: (cout)
//	out:  (nr, cout), row r − r0 is output pixel r of (N, OH, OW)
//	pad:  scratch of DirectPadLen(g) floats
func ConvDirect(out, in, wt []float32, ws int, bias []float32, g Geom, cout int, relu bool, r0, nr int, pad []float32) {
	g.check()
	switch {
	case cout < 1 || ws < cout || ws%8 != 0:
		panic("native: bad cout or weight stride")
	case r0 < 0 || nr < 0 || r0+nr > g.Rows():
		panic("native: bad row range")
	case len(in) < g.InLen():
		panic("native: short in")
	case len(wt) < g.Cols()*ws:
		panic("native: short weights")
	case len(bias) < cout:
		panic("native: short bias")
	case len(out) < nr*cout:
		panic("native: short out")
	case len(pad) < DirectPadLen(g):
		panic("native: short pad")
	}
	if nr == 0 {
		return
	}
	var pp *C.float
	if g.P > 0 {
		pp = f32(pad)
	}
	r := C.int(0)
	if relu {
		r = 1
	}
	C.nb_conv_direct(f32(in), C.int64_t(g.H), C.int64_t(g.W), C.int64_t(g.C), C.int64_t(g.K),
		C.int64_t(g.S), C.int64_t(g.P), C.int64_t(g.OH), C.int64_t(g.OW), f32(wt), C.int64_t(ws),
		f32(bias), C.int64_t(cout), r, C.int64_t(r0), C.int64_t(nr), pp, f32(out))
}

// DirectPadLen is the scratch ConvDirect needs: one zero-padded image.
func DirectPadLen(g Geom) int {
	if g.P == 0 {
		return 0
	}
	return (g.H + 2*g.P) * (g.W + 2*g.P) * g.C
}
