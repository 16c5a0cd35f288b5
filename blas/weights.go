package blas

import (
	"math"

	"github.com/ninbatch/ninbatch/native"
)

// Weights is the right operand B (k, n) of products C = act(A·B + bias)
// whose left operand changes on every call and whose right one does not: a
// layer's weights, laid out once (and again after they change) for the
// kernel that multiplies them.
//
// Packed weights run on native.GemmPacked, which packs nothing per call,
// reads A in place, fuses the bias and ReLU, and picks its instruction set
// at run time (native.Current). Unpacked weights run on OpenBLAS (Sgemm)
// followed by the bias pass; they reference the source instead of copying it,
// so Load must be called again only when the source slice is replaced.
type Weights struct {
	k, n   int
	packed []float32 // PackLen(k, n) floats; nil: OpenBLAS or bf16
	bf16   []uint16  // PackLenBF16(k, n) bf16 values: the AMX kernel
	int8   []int8    // PackLenInt8(k, n) s8 values: the int8 kernel
	sw     []float32 // (n) per-column weight scales of int8
	sa     float32   // the activation scale of int8
	zp     int       // its zero point (0 after a ReLU)
	corr   []float32 // (n) −zp·sa·sw[j]·Σ_p qB[p][j]: the zero point's share, removed
	qbuf   []int8    // (k, n) quantised source, reused by Load
	b      []float32 // the source (OpenBLAS)
	ldb    int
	trans  bool
}

// NewWeights allocates a (k, n) operand for the packed kernel when packed,
// else for OpenBLAS. Load fills it.
func NewWeights(k, n int, packed bool) *Weights {
	w := &Weights{k: k, n: n}
	if packed {
		w.packed = make([]float32, native.PackLen(k, n))
	}
	return w
}

// NewWeightsBF16 allocates a (k, n) operand rounded to bf16 for the AMX
// kernel (native.GemmBF16); the caller has checked native.BF16Kernel.
func NewWeightsBF16(k, n int) *Weights {
	return &Weights{k: k, n: n, bf16: make([]uint16, native.PackLenBF16(k, n))}
}

// NewWeightsInt8 allocates a (k, n) operand quantised to s8 with one
// symmetric scale per column (output channel), sw[j] = its step, for
// native.GemmInt8, whose A operand is quantised to u8 with the step sa and
// zero point zp (a signed input; 0 for one after a ReLU). Load
// rounds B[p][j]/sw[j] to the nearest integer (ties to even), clamped to
// ±127.
func NewWeightsInt8(k, n int, sa float32, zp int, sw []float32) *Weights {
	if len(sw) != n || !(sa > 0) || zp < 0 || zp > 255 {
		panic("blas: int8 weights need a positive activation scale, a zero point in 0..255 and one weight scale per column")
	}
	return &Weights{k: k, n: n, int8: make([]int8, native.PackLenInt8(k, n)), sw: sw, sa: sa, zp: zp,
		corr: make([]float32, n), qbuf: make([]int8, k*n)}
}

// Packed reports whether the products run on a packed kernel (fp32, bf16
// or int8), whose column ranges start on a panel.
func (w *Weights) Packed() bool { return w.packed != nil || w.bf16 != nil || w.int8 != nil }

// BF16 reports whether the products run in bf16.
func (w *Weights) BF16() bool { return w.bf16 != nil }

// Load sets the operand to B[p][j] = b[p·ldb + j], or b[j·ldb + p] when
// trans (b is then (n, k): one row of k per output channel, the layout of
// conv weights).
func (w *Weights) Load(b []float32, ldb int, trans bool) {
	if w.packed != nil {
		native.PackB(w.packed, b, w.k, w.n, ldb, trans)
		return
	}
	if w.bf16 != nil {
		native.PackBF16(w.bf16, b, w.k, w.n, ldb, trans)
		return
	}
	if w.int8 != nil {
		QuantizeWeights(w.qbuf, b, w.k, w.n, ldb, trans, w.sw)
		native.PackInt8(w.int8, w.qbuf, w.k, w.n, w.n, false)
		for j := range w.corr {
			var cs int64
			for p := 0; p < w.k; p++ {
				cs += int64(w.qbuf[p*w.n+j])
			}
			w.corr[j] = -float32(w.zp) * w.sa * w.sw[j] * float32(cs)
		}
		return
	}
	w.b, w.ldb, w.trans = b, ldb, trans
}

// Mul computes columns [j0, j1) of act(A·B + bias):
//
//	c[i·ldc + j−j0] = act(Σ_p a[i·lda + p]·B[p][j] + bias[j−j0])   for i < m
//
// bias may be nil (then relu must be false). With packed weights j0 is a
// multiple of native.PanelCols.
//
//	a: (m, lda), the first k columns used   c: (m, ldc), j1−j0 columns written
func (w *Weights) Mul(c []float32, ldc int, a []float32, lda, m, j0, j1 int, bias []float32, relu bool) {
	if bias == nil && relu {
		panic("blas: ReLU without a bias")
	}
	if w.packed != nil {
		native.GemmPacked(c, ldc, a, lda, w.packed, w.k, w.n, j0, j1, m, bias, relu)
		return
	}
	if w.bf16 != nil {
		native.GemmBF16(c, ldc, a, lda, w.bf16, w.k, w.n, j0, j1, m, bias, relu)
		return
	}
	if w.int8 != nil {
		var corr []float32
		if w.zp != 0 {
			corr = w.corr[j0:j1]
		}
		native.GemmInt8(c, ldc, a, lda, w.sa, w.zp, w.int8, w.sw[j0:j1], w.k, w.n, j0, j1, m, bias, corr, relu)
		return
	}
	if m == 0 || j1 == j0 {
		return
	}
	b := w.b[j0:]
	if w.trans {
		b = w.b[j0*w.ldb:]
	}
	Sgemm(false, w.trans, m, j1-j0, w.k, 1, a, lda, b, w.ldb, 0, c, ldc)
	if bias != nil {
		native.BiasAct(c, m, j1-j0, ldc, bias, relu)
	}
}

// QuantizeWeights writes q[p·n + j] = clamp(round(B[p][j]/sw[j]), −127, 127)
// (ties to even; B laid out as for Load): the s8 weights of a column with
// symmetric step sw[j].
//
//	q: (k, n)
func QuantizeWeights(q []int8, b []float32, k, n, ldb int, trans bool, sw []float32) {
	for p := 0; p < k; p++ {
		for j := 0; j < n; j++ {
			var v float32
			if trans {
				v = b[j*ldb+p]
			} else {
				v = b[p*ldb+j]
			}
			q[p*n+j] = QuantizeWeight(v, sw[j])
		}
	}
}

// QuantizeWeight is one s8 weight of step s: round(v/s) clamped to ±127.
func QuantizeWeight(v, s float32) int8 {
	x := math.RoundToEven(float64(v / s))
	return int8(max(-127, min(127, x)))
}

// WeightScale is the symmetric per-channel step of weights w: max|w|/127,
// so the largest weight maps to ±127; 1 for an all-zero channel.
func WeightScale(w []float32) float32 {
	var m float32
	for _, v := range w {
		m = max(m, float32(math.Abs(float64(v))))
	}
	if m == 0 {
		return 1
	}
	return m / 127
}
