package nin

import (
	"github.com/ninbatch/ninbatch/blas"
	"github.com/ninbatch/ninbatch/native"
)

// wino is a stride-1 k×k conv + bias + ReLU as Winograd F(m×m, k×k): per
// chunk of tiles, the input transform, one GEMM per transform position
// (a·a of them, each (tiles, Cin) × (Cin, Cout)) and the output transform
// with bias and ReLU fused.
//
//	src: (n, H, W, Cin)  dst: (n, OH, OW, Cout)
type wino struct {
	w      native.Wino // N is set per call
	p      *ConvParams
	u      []float32       // (a·a, Cin, Cout) transformed filters; nil when packed (built per reload)
	retain bool            // packed: keep the reload's u (training reloads every step)
	ut     []float32       // (Cout, Cin) scratch of the transpose
	ws     []*blas.Weights // per transform position: its (Cin, Cout) block of u
	at, bt []float32       // (m, a) and (a, a) transforms
	gm     []float64       // (a, k) filter transform
	k      int
	relu   bool
	chunk  int // tiles per chunk
}

// winoTile is the Winograd output tile m of a k×k stride-1 conv with an
// oh × ow output: forced when 2 or 4, else the m of F(2×2, k×k) and
// F(4×4, k×k) that needs fewer multiplications, tiles·(m+k−1)², counting the
// padding of partial edge tiles (ties go to 2: cheaper transforms, smaller
// error). The float32 error of all four stays within 1e-5 of the output's
// scale (native.TestWinoConvMatchesDirect).
func winoTile(k, oh, ow, forced int) int {
	if forced != 0 {
		return forced
	}
	cost := func(m int) int {
		a := m + k - 1
		return ((oh + m - 1) / m) * ((ow + m - 1) / m) * a * a
	}
	if cost(4) < cost(2) {
		return 4
	}
	return 2
}

// newWino builds the Winograd form of layer l, or returns nil when the
// switch and the layer's shapes say otherwise. Its filters are
// transformed by transformFilters.
func newWino(l Layer, p *ConvParams, relu bool, cp convPlan) (*wino, error) {
	if cp.winograd == WinogradOff || l.s != 1 || (l.k != 3 && l.k != 5) {
		return nil, nil
	}
	m := winoTile(l.k, l.Out.H, l.Out.W, cp.winoTile)
	tilesPerImage := ((l.Out.H + m - 1) / m) * ((l.Out.W + m - 1) / m)
	if cp.winograd == WinogradAuto && (p.Cin < 16 || tilesPerImage*cp.micro < 16) {
		return nil, nil
	}
	at, gm, bt, err := native.WinoMatrices(m, l.k)
	if err != nil {
		return nil, err
	}
	w := native.NewWino(l.geom(cp.micro), m)
	aa := w.A * w.A
	o := &wino{w: w, p: p, relu: relu, at: native.Float32s(at), bt: native.Float32s(bt), gm: gm, k: l.k,
		ut: make([]float32, p.Cout*p.Cin)}
	if !cp.packed { // OpenBLAS reads u itself; the packed kernel a copy
		o.u = make([]float32, aa*p.Cout*p.Cin)
	}
	for range aa {
		o.ws = append(o.ws, cp.weights(p.Cin, p.Cout))
	}
	o.chunk = winoChunk(w, p, cp)
	return o, nil
}

// winoChunk is the tiles per chunk: within twice the im2col tile budget,
// balanced, since the chunk is the M of every product and OpenBLAS runs
// the K = Cin products far below its peak at M = 32. The packed kernel
// runs near its peak from M = 16, so there the transform buffers shrink to
// the size of the transformed filters, which every chunk reads once, when
// that is smaller (at least 512 KiB): see docs/engine.md, "Winograd".
func winoChunk(w native.Wino, p *ConvParams, cp convPlan) int {
	aa := w.A * w.A
	budget := 2 * cp.tileBytes
	if cp.packed {
		budget = min(budget, max(512<<10, 4*aa*p.Cin*p.Cout))
	}
	chunk := min(w.Tiles(), max(8, budget/(4*aa*(p.Cin+p.Cout))))
	chunks := (w.Tiles() + chunk - 1) / chunk
	return (w.Tiles() + chunks - 1) / chunks
}

// newWinoInputGrad builds the input-gradient form of a stride-1 conv: the
// gradient w.r.t. the input is the conv, with padding k−1−p, of the output
// gradient (n, OH, OW, Cout) with the filters flipped in space and with
// in/out channels swapped, which has the shape of a forward Winograd conv.
// nil when the layer is not eligible (the forward rule, with Cout for Cin).
func newWinoInputGrad(l Layer, p *ConvParams, cp convPlan) (*wino, error) {
	if l.s != 1 || (l.k != 3 && l.k != 5) {
		return nil, nil
	}
	bl := l
	bl.In, bl.Out = l.Out, l.In
	bl.p = l.k - 1 - l.p
	bl.Name = l.Name + " (input gradient)"
	bp := &ConvParams{Name: p.Name, Cout: p.Cin, K: p.K, Cin: p.Cout,
		W: make([]float32, len(p.W)), B: make([]float32, p.Cin)}
	return newWino(bl, bp, false, cp)
}

// flipTranspose writes p's filters flipped in space with the channel axes
// swapped: wt[ci][ky][kx][co] = W[co][k−1−ky][k−1−kx][ci] (both OHWI).
func flipTranspose(wt []float32, p *ConvParams) {
	k, cin, cout := p.K, p.Cin, p.Cout
	for co := 0; co < cout; co++ {
		for ky := 0; ky < k; ky++ {
			for kx := 0; kx < k; kx++ {
				src := p.W[((co*k+ky)*k+kx)*cin:][:cin]
				for ci, v := range src {
					wt[((ci*k+(k-1-ky))*k+(k-1-kx))*cout+co] = v
				}
			}
		}
	}
}

// transformFilters computes U = G·w·Gᵀ per (Cout, Cin) pair, then each
// transform position's (Cout, Cin) block transposed to (Cin, Cout), so the
// products are NN GEMMs (OpenBLAS ran them 5–15% faster than with the block
// transposed on the fly), and loads each block as that position's weights.
func (o *wino) transformFilters() {
	cin, cout, aa := o.p.Cin, o.p.Cout, o.w.A*o.w.A
	u := o.u
	if u == nil { // packed: u is only the packing's source
		u = make([]float32, aa*cout*cin)
		if o.retain { // a fresh 1–14 MB each step cost page faults and GC
			o.u = u
		}
	}
	native.WinoFilter(u, o.p.W, cout, o.k, cin, o.gm)
	for pos := 0; pos < aa; pos++ {
		blk := u[pos*cout*cin : (pos+1)*cout*cin]
		copy(o.ut, blk)
		for co := 0; co < cout; co++ {
			for ci, v := range o.ut[co*cin : (co+1)*cin] {
				blk[ci*cout+co] = v
			}
		}
		o.ws[pos].Load(blk, cout, false)
	}
}

// forwardPart computes w's units: chunks of tiles, or, when byChannels
// says so, (chunk, channel group) pairs, each part transforming a chunk's
// input once for all the groups of it that it claims (the input transform
// is a few % of the layer).
func (o *wino) forwardPart(sc *scratch, dst, src []float32, n int, w part) {
	wg := o.w
	wg.G.N = n
	cin, cout, aa := o.p.Cin, o.p.Cout, wg.A*wg.A
	tiles := wg.Tiles()
	chunk, cw := o.chunk, cout
	units := w.cut(tiles * aa * cin * cout)
	if byChannels(tiles, cout, w.parts) {
		cw = splitCols(cout, units)
	} else if units > 1 {
		chunk = min(chunk, max(16, (tiles+units-1)/units))
	}
	groups := (cout + cw - 1) / cw
	us := w.units((tiles + chunk - 1) / chunk * groups)
	have := -1 // the chunk whose transformed input is in sc.wv
	for u, ok := us.take(); ok; u, ok = us.take() {
		t0, c0 := u/groups*chunk, u%groups*cw
		c1 := min(c0+cw, cout)
		nt, nc := min(chunk, tiles-t0), c1-c0
		vs, ms := native.WinoStride(nt, cin), native.WinoStride(nt, nc)
		v, m := sc.wv[:aa*vs], sc.wm[:aa*ms]
		if t0 != have {
			native.WinoIn(v, src, wg, o.bt, t0, nt)
			have = t0
		}
		for pos := 0; pos < aa; pos++ {
			o.ws[pos].Mul(m[pos*ms:pos*ms+nt*nc], nc, v[pos*vs:pos*vs+nt*cin], cin, nt, c0, c1, nil, false)
		}
		native.WinoOut(dst[c0:], m, wg, nc, cout, o.at, o.p.B[c0:c1], o.relu, t0, nt)
	}
}

// weightGrad adds to du the transformed weight gradient over n images: per
// chunk of tiles, the input transform V and the output-gradient transform
// Ŷ = A·dPre·Aᵀ, one GEMM per transform position accumulating
// dU[ξν] += Ŷ[ξν]ᵀ·V[ξν]. After the step's last micro-batch, filterGrad maps
// it back. For F(4×4, 5×5) that is 6.25× fewer multiplications than the
// im2col GEMM (native.TestWinoWeightGradMatchesDirect bounds the error);
// own: the products on native's kernel (blas.AddAtB).
//
//	dpre: (n, OH, OW, Cout)  in: (n, H, W, Cin)  du: (a·a, Cout, Cin)
func (o *wino) weightGrad(sc *scratch, du, dpre, in []float32, n int, own bool) {
	w := o.w
	w.G.N = n
	cin, cout, aa := o.p.Cin, o.p.Cout, w.A*w.A
	for t0 := 0; t0 < w.Tiles(); t0 += o.chunk {
		nt := min(o.chunk, w.Tiles()-t0)
		vs, ys := native.WinoStride(nt, cin), native.WinoStride(nt, cout)
		v, yh := sc.wv[:aa*vs], sc.wm[:aa*ys]
		native.WinoIn(v, in, w, o.bt, t0, nt)
		native.WinoDy(yh, dpre, w, cout, o.at, t0, nt)
		for pos := 0; pos < aa; pos++ {
			blas.AddAtB(du[pos*cout*cin:(pos+1)*cout*cin], cin, yh[pos*ys:pos*ys+nt*cout], cout,
				v[pos*vs:pos*vs+nt*cin], cin, cout, cin, nt, own)
		}
	}
}

// duLen is the floats of the transform-domain weight gradient.
func (o *wino) duLen() int { return o.w.A * o.w.A * o.p.Cout * o.p.Cin }

// filterGrad adds du mapped back to the filters to dw: dw += Gᵀ·dU·G.
func (o *wino) filterGrad(dw, du []float32) {
	native.WinoFilterGrad(dw, du, o.p.Cout, o.k, o.p.Cin, o.gm)
}
