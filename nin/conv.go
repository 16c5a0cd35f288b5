package nin

import (
	"fmt"

	"github.com/ninbatch/ninbatch/blas"
	"github.com/ninbatch/ninbatch/native"
)

// conv is one conv layer + bias + ReLU, the kernel Net and Trainer share.
// It owns the weight forms it derives from its parameters (rebuilt by
// reload), computes the forward pass over row ranges, and, when built for
// training, the input and weight gradients.
//
// The forward form is one of: Winograd F(m×m, k×k) (wino), the direct
// kernel for few input channels (direct), or im2col + GEMM, which for a
// 1×1/s1/p0 conv is a plain GEMM over the activations (w).
//
//	src: (n, H, W, Cin)  dst: (n, OH, OW, Cout)  W: (Cout, K, K, Cin)
type conv struct {
	name     string
	g        native.Geom // N is set per call
	p        *ConvParams
	relu     bool
	oneByOne bool
	tileRows int  // GEMM rows per im2col tile, or per 1×1 GEMM call
	packed   bool // GEMMs on native's kernels (weight gradients too), not OpenBLAS
	int8     bool // the forward GEMM is u8×s8 (w holds int8 weights)

	wino   *wino         // Winograd form, or nil
	direct []float32     // (K·K·Cin, ws) direct-kernel weights, or nil
	ws     int           // row stride of direct
	w      *blas.Weights // (K·K·Cin, Cout) = Wᵀ: the GEMM form, or nil

	// gradient forms (Trainer only)
	wt     *blas.Weights // (Cout, K·K·Cin) = W: the input-gradient GEMM, or nil
	winoIn *wino         // the input gradient as a Winograd conv, or nil
	winoDW bool          // the weight gradient is computed in wino's transform domain
}

// convPlan is what a conv's forms are chosen from.
type convPlan struct {
	micro     int // images per call
	tileBytes int // im2col tile budget
	winograd  Winograd
	winoTile  int
	direct    DirectConv
	packed    bool   // GEMMs on the packed-weight kernel
	bf16      bool   // inference GEMMs in bf16 on AMX (Options.Precision)
	quant     *Quant // int8: the layers it marks int8 run as u8×s8 GEMMs, or nil
}

// weights is a forward GEMM operand for the plan's kernel and precision.
func (cp convPlan) weights(k, n int) *blas.Weights {
	if cp.bf16 {
		return blas.NewWeightsBF16(k, n)
	}
	return blas.NewWeights(k, n, cp.packed)
}

// scratch is the per-stream working memory of the conv kernels.
type scratch struct {
	col  []float32 // (tileRows, K·K·Cin) im2col tile, or the direct kernel's padded input
	dcol []float32 // (tileRows, K·K·Cin) the tile's gradient (training)
	wv   []float32 // (a·a, WinoStride(chunk, Cin)) Winograd input transform
	wm   []float32 // (a·a, WinoStride(chunk, Cout)) Winograd products
}

// scratchSize is the floats each scratch buffer needs, grown by need.
type scratchSize struct{ col, dcol, wv, wm int }

func (s *scratchSize) alloc() scratch {
	return scratch{col: make([]float32, s.col), dcol: make([]float32, s.dcol),
		wv: make([]float32, s.wv), wm: make([]float32, s.wm)}
}

func (s *scratchSize) wino(w *wino) {
	if w != nil {
		aa := w.w.A * w.w.A
		s.wv = max(s.wv, aa*native.WinoStride(w.chunk, w.p.Cin))
		s.wm = max(s.wm, aa*native.WinoStride(w.chunk, w.p.Cout))
	}
}

// newConv builds layer l's conv over parameters p and chooses its forward
// form; the weights are laid out by reload, which newConv calls.
func newConv(l Layer, p *ConvParams, relu bool, cp convPlan) (*conv, error) {
	if p.Cin != l.In.C || p.Cout != l.Out.C || p.K != l.k {
		return nil, fmt.Errorf("parameters of %s do not match the spec", l.Name)
	}
	c := &conv{name: l.Name, g: l.geom(0), p: p, relu: relu, oneByOne: l.oneByOne(), packed: cp.packed}
	width := l.GemmK
	if c.oneByOne {
		width = max(l.In.C, l.Out.C)
	}
	c.tileRows = min(max(64, cp.tileBytes/(4*width)), l.Out.H*l.Out.W*cp.micro)
	var err error
	if l.Head { // the fc head is one GEMM row per image: no Winograd or direct form pays
		cp.winograd, cp.direct = WinogradOff, DirectOff
	}
	if q := cp.quant.layer(l.Name); q != nil && q.Precision == PrecisionInt8 {
		// int8 runs as GEMMs: the Winograd transforms would amplify the
		// quantisation error, and the direct kernel is fp32
		c.w = blas.NewWeightsInt8(l.GemmK, p.Cout, q.InputScale, q.InputZeroPoint, q.WeightScales)
		c.int8 = true
		c.reload()
		return c, nil
	}
	if c.wino, err = newWino(l, p, relu, cp); err != nil {
		return nil, fmt.Errorf("%s: %w", l.Name, err)
	}
	switch {
	case c.wino != nil:
	case useDirect(cp.direct, l.k, p.Cin, cp.packed):
		c.direct, c.ws = native.DirectWeights(p.W, p.Cout, l.GemmK)
	default:
		c.w = cp.weights(l.GemmK, p.Cout)
	}
	c.reload()
	return c, nil
}

// needs grows s by what c's forward pass uses.
func (c *conv) needs(s *scratchSize) {
	switch {
	case c.wino != nil:
		s.wino(c.wino)
	case c.direct != nil:
		s.col = max(s.col, native.DirectPadLen(c.g))
	case !c.oneByOne:
		s.col = max(s.col, c.tileRows*c.g.Cols())
	}
}

// enableGrad adds the forms of the gradients: the input gradient (unless
// first, the network's first conv, which needs none) as a Winograd conv
// where that is eligible, else as a GEMM with W; the weight gradient in the
// Winograd transform domain when both passes are Winograd, else as
// im2col GEMMs. It grows s by what the backward pass uses.
func (c *conv) enableGrad(l Layer, first bool, cp convPlan, s *scratchSize) error {
	if !first {
		if !l.Head { // the fc head's output is 1×1: no transposed conv to tile
			w, err := newWinoInputGrad(l, c.p, cp)
			if err != nil {
				return fmt.Errorf("%s input gradient: %w", l.Name, err)
			}
			c.winoIn = w
		}
		if c.winoIn == nil {
			c.wt = blas.NewWeights(c.p.Cout, l.GemmK, cp.packed)
		}
	}
	c.winoDW = c.wino != nil && (first || c.winoIn != nil)
	for _, o := range []*wino{c.wino, c.winoIn} {
		if o != nil {
			o.retain = true
		}
	}
	s.wino(c.winoIn)
	if !c.oneByOne && !c.winoDW {
		s.col = max(s.col, c.tileRows*l.GemmK)
		s.dcol = max(s.dcol, c.tileRows*l.GemmK)
	}
	c.reload()
	return nil
}

// reload recomputes every weight form from the parameters (after they
// change in place, as training does every step).
func (c *conv) reload() {
	k := c.g.Cols()
	switch {
	case c.wino != nil:
		c.wino.transformFilters()
	case c.direct != nil:
		native.DirectWeightsInto(c.direct, c.p.W, c.p.Cout, k)
	default:
		c.w.Load(c.p.W, k, true)
	}
	if c.wt != nil {
		c.wt.Load(c.p.W, k, false)
	}
	if c.winoIn != nil {
		flipTranspose(c.winoIn.p.W, c.p)
		c.winoIn.transformFilters()
	}
}

func (c *conv) forward(st *stream, dst, src []float32, n int) {
	c.compute(&st.scratch, dst, src, n, whole)
}

func (c *conv) forwardPart(st *stream, dst, src []float32, n int, w part) {
	c.compute(&st.scratch, dst, src, n, w)
}

// compute is w's units of the forward pass: for Winograd, see
// wino.forwardPart; else tiles of rows for all channels, or, when
// byChannels says so, (row tile, channel group) pairs, each part making the
// im2col of a tile once for all the groups of it that it claims.
func (c *conv) compute(st *scratch, dst, src []float32, n int, w part) {
	if c.wino != nil {
		c.wino.forwardPart(st, dst, src, n, w)
		return
	}
	g := c.g
	g.N = n
	rows, cout, k := g.Rows(), c.p.Cout, g.Cols()
	if c.direct != nil {
		tile := splitRows(rows, rows, w.cut(rows*k*cout))
		us := w.units((rows + tile - 1) / tile)
		for u, ok := us.take(); ok; u, ok = us.take() {
			lo, hi := u*tile, min((u+1)*tile, rows)
			native.ConvDirect(dst[lo*cout:hi*cout], src, c.direct, c.ws, c.p.B, g, cout, c.relu, lo, hi-lo, st.col)
		}
		return
	}
	cut := w.cut(rows * k * cout)
	tile, cw := splitRows(rows, c.tileRows, cut), cout
	if byChannels(rows, cout, w.parts) {
		tile, cw = c.tileRows, splitCols(cout, cut)
	}
	groups := (cout + cw - 1) / cw
	us := w.units((rows + tile - 1) / tile * groups)
	have := -1 // the row tile in st.col
	for u, ok := us.take(); ok; u, ok = us.take() {
		t, c0 := u/groups, u%groups*cw
		c1 := min(c0+cw, cout)
		r0 := t * tile
		nr := min(tile, rows-r0)
		var a []float32 // (nr, k): the activations themselves for a 1×1 conv
		if c.oneByOne {
			a = src[r0*k : (r0+nr)*k]
		} else {
			a = st.col[:nr*k]
			if t != have {
				native.Im2col(a, src, g, r0, nr)
				have = t
			}
		}
		c.gemm(dst[r0*cout+c0:(r0+nr-1)*cout+c1], a, nr, k, c0, c1)
	}
}

// rows computes output pixels [r0, r0+nr) of n images, every channel, into
// out (nr, Cout), with the direct or GEMM form (a chain's first stage).
func (c *conv) rows(st *scratch, out, src []float32, n, r0, nr int) {
	g := c.g
	g.N = n
	cout := c.p.Cout
	switch {
	case c.direct != nil:
		native.ConvDirect(out, src, c.direct, c.ws, c.p.B, g, cout, c.relu, r0, nr, st.col)
	case c.oneByOne:
		c.gemm(out, src[r0*c.p.Cin:(r0+nr)*c.p.Cin], nr, c.p.Cin, 0, cout)
	default:
		k := g.Cols()
		for t0 := r0; t0 < r0+nr; t0 += c.tileRows {
			tn := min(c.tileRows, r0+nr-t0)
			native.Im2col(st.col[:tn*k], src, g, t0, tn)
			c.gemm(out[(t0-r0)*cout:(t0-r0+tn)*cout], st.col[:tn*k], tn, k, 0, cout)
		}
	}
}

// gemm computes channels [c0, c1) of act(a·Wᵀ + bias) for a (nr, k):
// out[r·Cout + c − c0], an (nr, Cout) map starting at channel c0.
func (c *conv) gemm(out, a []float32, nr, k, c0, c1 int) {
	c.w.Mul(out, c.p.Cout, a, k, nr, c0, c1, c.p.B[c0:c1], c.relu)
}

// backward takes dpre, the gradient at the conv's output with the ReLU
// already applied (native.BiasActBackward, which also sums the bias
// gradient), adds the weight gradient to dw (or, in the Winograd domain, to
// du, which the caller maps back after the step) and, when din is not nil,
// writes the gradient w.r.t. the input.
//
//	dpre: (n, OH, OW, Cout)  in, din: (n, H, W, Cin)  dw: (Cout, K·K·Cin)
//	du: (a·a, Cout, Cin)
func (c *conv) backward(sc *scratch, din, dw, du, dpre, in []float32, n int) {
	if c.winoDW {
		c.wino.weightGrad(sc, du, dpre, in, n, c.packed)
	} else {
		c.weightGrad(sc, dw, dpre, in, n)
	}
	switch {
	case din == nil:
	case c.winoIn != nil:
		c.winoIn.forwardPart(sc, din, dpre, n, whole)
	default:
		c.inputGrad(sc, din, dpre, n)
	}
}

// weightGrad adds dpreᵀ · im2col(in) to dw, tile by tile.
func (c *conv) weightGrad(sc *scratch, dw, dpre, in []float32, n int) {
	g := c.g
	g.N = n
	rows, k, cout := g.Rows(), g.Cols(), c.p.Cout
	if c.oneByOne {
		blas.AddAtB(dw, k, dpre, cout, in, k, cout, k, rows, c.packed)
		return
	}
	for r0 := 0; r0 < rows; r0 += c.tileRows {
		nr := min(c.tileRows, rows-r0)
		col := sc.col[:nr*k]
		native.Im2col(col, in, g, r0, nr)
		blas.AddAtB(dw, k, dpre[r0*cout:(r0+nr)*cout], cout, col, k, cout, k, nr, c.packed)
	}
}

// inputGrad writes din = col2im(dpre · W), tile by tile (a 1×1 conv: the
// product itself).
func (c *conv) inputGrad(sc *scratch, din, dpre []float32, n int) {
	g := c.g
	g.N = n
	rows, k, cout := g.Rows(), g.Cols(), c.p.Cout
	if c.oneByOne {
		c.wt.Mul(din, k, dpre, cout, rows, 0, k, nil, false)
		return
	}
	clear(din)
	for r0 := 0; r0 < rows; r0 += c.tileRows {
		nr := min(c.tileRows, rows-r0)
		dcol := sc.dcol[:nr*k]
		c.wt.Mul(dcol, k, dpre[r0*cout:(r0+nr)*cout], cout, nr, 0, k, nil, false)
		native.Col2im(din, dcol, g, r0, nr)
	}
}
