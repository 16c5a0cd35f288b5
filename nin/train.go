package nin

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/ninbatch/ninbatch/blas"
	"github.com/ninbatch/ninbatch/native"
)

// TrainOptions configure a Trainer.
type TrainOptions struct {
	MaxBatch    int     // images per step (the batch size)
	Threads     int     // data-parallel streams, each with OpenBLAS at 1 thread
	Momentum    float64 // SGD momentum (Caffe: 0.9)
	WeightDecay float64 // L2 on weights, none on biases (Caffe decay_mult 1/0)
	Seed        uint64  // dropout masks derive from (Seed, step, image)
	NoDropout   bool    // disable dropout (debugging, gradient checks)
	TileBytes   int     // im2col tile budget (default 2 MiB)
	// MicroBatch is how many images of a stream's share of the batch go
	// through forward and backward together (default 16): activations are
	// kept for one micro-batch only, and each layer's output is consumed
	// while it is still in cache. Gradients accumulate over micro-batches.
	MicroBatch int
	// Winograd, WinoTile and Direct pick the forward pass of k×k convs as
	// in inference (defaults WinogradAuto and DirectAuto); the input
	// gradients of the Winograd-eligible convs run as Winograd convs too,
	// the weight gradients as im2col GEMMs. The derived weights (Winograd-transformed
	// filters, transposed direct weights) are rebuilt from the parameters
	// before every forward pass.
	Winograd Winograd
	WinoTile int // Winograd output tile: 2, 4 or 0 (per layer, as Options.WinoTile)
	Direct   DirectConv
	// GEMM picks the forward and input-gradient GEMMs of the convs as in
	// inference (Options.GEMM; auto: the packed-weight kernel on AVX2
	// CPUs). Weights are repacked before every forward pass. The weight
	// gradients (long reductions over the batch's pixels) stay on OpenBLAS.
	GEMM GEMM
}

// Trainer trains a model's parameters in place with SGD + momentum.
// Each stream holds the activations of its share of the batch; gradients
// are summed over streams in a fixed order, so a run is deterministic for a
// given seed and thread count. Dropout masks are a pure function of
// (seed, step, image index), so resuming needs no random-number state.
type Trainer struct {
	spec    Spec
	layers  []Layer
	params  *Params // the model's weights, updated in place
	vel     *Params // momentum buffers, same layout
	opt     TrainOptions
	inLen   int
	classes int
	lastCv  int // index of the last conv layer
	streams []*tstream
	fast    []op // per layer: the forward op of a Winograd or direct conv, else nil
	// per layer: the input gradient of a stride-1 conv as a Winograd conv of
	// the output gradient with the flipped, transposed filters, else nil
	bwd []*winoOp
	// per layer, for convs on the packed GEMM that have no fast op: W
	// packed for the forward GEMM, (K·K·Cin, Cout); and for the input
	// gradient, (Cout, K·K·Cin), unless bwd runs it; nil otherwise
	fwdPack, bwdPack [][]float32
}

// tstream is one data-parallel worker: activations of up to n images (one
// micro-batch).
type tstream struct {
	n       int
	acts    [][]float32 // per layer: (n, OH, OW, C) output; dropout aliases its input
	argmax  [][]int32   // per max-pool layer: (n, OH, OW, C)
	masks   [][]float32 // per dropout layer: (n, H, W, C) 0 or 1/(1−p)
	dA, dB  []float32   // (n, maxAct) gradient ping-pong
	col     []float32   // (tileRows, maxK) im2col tile
	dcol    []float32   // (tileRows, maxK) its gradient
	logits  []float32   // (n, classes)
	probs   []float32   // (n, classes)
	dlogits []float32   // (n, classes)
	grads   *Params     // this stream's gradient sums
	fs      *stream     // scratch of the fast forward ops (col as pad, wv, wm)
	du      [][]float32 // per Winograd conv: (a·a, Cout, Cin) transformed filter gradient, summed over the step's micro-batches
	tiles   []int       // per layer: rows per im2col/GEMM tile (k×k convs)
	loss    float64
	correct int
	alive   int // positive outputs of the last conv (dead-ReLU detector)
}

// StepResult reports one training step.
type StepResult struct {
	Loss      float64 // mean cross-entropy over the batch
	Correct   int     // top-1 hits in the batch (training mode, with dropout)
	AliveFrac float64 // fraction of positive outputs of the last conv's ReLU
}

// NewTrainer prepares training buffers for m; m.Params are updated in place.
func NewTrainer(m *Model, opt TrainOptions) (*Trainer, error) {
	if err := native.ISAError(); err != nil {
		return nil, err
	}
	if m == nil || m.Params == nil {
		return nil, errors.New("nin: model has no parameters")
	}
	layers, err := m.Spec.Plan()
	if err != nil {
		return nil, err
	}
	if opt.Threads == 0 {
		opt.Threads = 1
	}
	if opt.TileBytes == 0 {
		opt.TileBytes = 2 << 20
	}
	if opt.MicroBatch == 0 {
		opt.MicroBatch = 16
	}
	switch {
	case opt.MicroBatch < 0:
		return nil, fmt.Errorf("nin: micro-batch %d is negative", opt.MicroBatch)
	case opt.MaxBatch < 1 || opt.MaxBatch > 1<<14:
		return nil, fmt.Errorf("nin: batch %d out of range 1..16384", opt.MaxBatch)
	case opt.Threads < 1 || opt.Threads > 256:
		return nil, fmt.Errorf("nin: threads %d out of range 1..256", opt.Threads)
	case !(opt.Momentum >= 0 && opt.Momentum < 1):
		return nil, fmt.Errorf("nin: momentum %g out of range [0, 1)", opt.Momentum)
	case !(opt.WeightDecay >= 0 && opt.WeightDecay < 1):
		return nil, fmt.Errorf("nin: weight decay %g out of range [0, 1)", opt.WeightDecay)
	}
	if err := fastPathDefaults(&opt.Winograd, &opt.Direct, opt.WinoTile); err != nil {
		return nil, err
	}
	packed, err := usePacked(opt.GEMM, ModeStreams)
	if err != nil {
		return nil, err
	}
	vel, err := NewParams(&m.Spec)
	if err != nil {
		return nil, err
	}
	t := &Trainer{spec: m.Spec, layers: layers, params: m.Params, vel: vel, opt: opt,
		inLen: m.Spec.Input.Len(), classes: m.Spec.Classes()}
	// buffers for one micro-batch of a stream's share of the batch
	per := min(opt.MicroBatch, (opt.MaxBatch+opt.Threads-1)/opt.Threads)
	t.fast = make([]op, len(layers))
	t.bwd = make([]*winoOp, len(layers))
	t.fwdPack, t.bwdPack = make([][]float32, len(layers)), make([][]float32, len(layers))
	var maxPad, maxWV, maxWM int
	ci := 0
	for i, l := range layers {
		if l.kind != kindConv {
			continue
		}
		t.lastCv = i
		p := &m.Params.Convs[ci]
		ci++
		if packed { // dropped below when a fast op or bwd takes the GEMM
			t.fwdPack[i] = make([]float32, native.PackLen(l.GemmK, p.Cout))
			if ci > 1 { // the first conv needs no input gradient
				t.bwdPack[i] = make([]float32, native.PackLen(p.Cout, l.GemmK))
			}
		}
		if l.oneByOne() {
			continue
		}
		g := l.geom(per)
		relu := !(i+1 < len(layers) && layers[i+1].kind == kindGAP && m.Spec.NoFinalReLU)
		wo, err := newWinoOp(l, g, p, relu, packed, Options{Winograd: opt.Winograd, WinoTile: opt.WinoTile, MicroBatch: per, TileBytes: opt.TileBytes})
		switch {
		case err != nil:
			return nil, fmt.Errorf("nin: %s: %w", l.Name, err)
		case wo != nil:
			aa := wo.w.A * wo.w.A
			maxWV = max(maxWV, aa*native.WinoStride(wo.chunk, p.Cin))
			maxWM = max(maxWM, aa*native.WinoStride(wo.chunk, p.Cout))
			t.fast[i], t.fwdPack[i] = wo, nil
		case useDirect(opt.Direct, l.k, p.Cin, packed):
			o := &convOp{g: g, p: p, relu: relu, name: l.Name}
			o.wt, o.ws = native.DirectWeights(p.W, p.Cout, l.GemmK)
			maxPad = max(maxPad, native.DirectPadLen(g))
			t.fast[i], t.fwdPack[i] = o, nil
		}
		if ci == 1 { // the first conv needs no input gradient
			continue
		}
		bo, err := newWinoBackward(l, p, per, packed, opt)
		if err != nil {
			return nil, fmt.Errorf("nin: %s backward: %w", l.Name, err)
		}
		if bo != nil {
			aa := bo.w.A * bo.w.A
			maxWV = max(maxWV, aa*native.WinoStride(bo.chunk, bo.p.Cin))
			maxWM = max(maxWM, aa*native.WinoStride(bo.chunk, bo.p.Cout))
			t.bwd[i], t.bwdPack[i] = bo, nil
		}
	}
	for s := 0; s < opt.Threads; s++ {
		st, err := t.newStream(per)
		if err != nil {
			return nil, err
		}
		st.fs = &stream{col: make([]float32, maxPad), wv: make([]float32, maxWV), wm: make([]float32, maxWM)}
		st.du = make([][]float32, len(layers))
		for i := range layers {
			if wo := t.winoGrad(i); wo != nil {
				st.du[i] = make([]float32, wo.w.A*wo.w.A*wo.p.Cout*wo.p.Cin)
			}
		}
		t.streams = append(t.streams, st)
	}
	return t, nil
}

// reload rebuilds the fast ops' derived weights from the parameters.
func (t *Trainer) reload() {
	for _, o := range t.fast {
		if o != nil {
			reloadOp(o)
		}
	}
	for i, o := range t.bwd {
		if o != nil {
			flipTranspose(o.p.W, t.convParams(i))
			reloadOp(o)
		}
	}
	for i, bp := range t.fwdPack {
		if bp != nil {
			p, k := t.convParams(i), t.layers[i].GemmK
			native.PackB(bp, p.W, k, p.Cout, k, true)
		}
	}
	for i, bp := range t.bwdPack {
		if bp != nil {
			p, k := t.convParams(i), t.layers[i].GemmK
			native.PackB(bp, p.W, p.Cout, k, k, false)
		}
	}
}

// newWinoBackward builds the input-gradient op of a stride-1 conv: the
// gradient w.r.t. the input is the conv, with padding k−1−p, of the output
// gradient (n, OH, OW, Cout) with the filters flipped in space and with
// in/out channels swapped, which has the shape of a forward Winograd conv.
// nil when the layer is not eligible (the same rule as the forward pass:
// stride 1, 3×3 or 5×5, and for auto at least 16 channels — here Cout).
func newWinoBackward(l Layer, p *ConvParams, n int, packed bool, opt TrainOptions) (*winoOp, error) {
	if l.s != 1 || (l.k != 3 && l.k != 5) {
		return nil, nil
	}
	bl := l
	bl.In, bl.Out = l.Out, l.In
	bl.p = l.k - 1 - l.p
	bl.Name = l.Name + " (input gradient)"
	bp := &ConvParams{Name: p.Name, Cout: p.Cin, K: p.K, Cin: p.Cout,
		W: make([]float32, len(p.W)), B: make([]float32, p.Cin)}
	flipTranspose(bp.W, p)
	return newWinoOp(bl, bl.geom(n), bp, false, packed, Options{Winograd: opt.Winograd, WinoTile: opt.WinoTile, MicroBatch: n, TileBytes: opt.TileBytes})
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

func (t *Trainer) newStream(n int) (*tstream, error) {
	g, err := NewParams(&t.spec)
	if err != nil {
		return nil, err
	}
	st := &tstream{n: n, grads: g,
		acts: make([][]float32, len(t.layers)), argmax: make([][]int32, len(t.layers)),
		masks: make([][]float32, len(t.layers)), tiles: make([]int, len(t.layers)),
		logits: make([]float32, n*t.classes), probs: make([]float32, n*t.classes), dlogits: make([]float32, n*t.classes)}
	maxAct, maxCol := t.inLen, 0
	for i, l := range t.layers {
		maxAct = max(maxAct, l.Out.Len())
		switch l.kind {
		case kindConv:
			st.acts[i] = make([]float32, n*l.Out.Len())
			if !(l.k == 1 && l.s == 1 && l.p == 0) {
				tr := min(max(64, t.opt.TileBytes/(4*l.GemmK)), n*l.Out.H*l.Out.W)
				st.tiles[i] = tr
				maxCol = max(maxCol, tr*l.GemmK)
			}
		case kindPool:
			st.acts[i] = make([]float32, n*l.Out.Len())
			if l.pool.Type == "max" {
				st.argmax[i] = make([]int32, n*l.Out.Len())
			}
		case kindDropout:
			st.masks[i] = make([]float32, n*l.Out.Len())
		}
	}
	st.dA, st.dB = make([]float32, n*maxAct), make([]float32, n*maxAct)
	st.col, st.dcol = make([]float32, maxCol), make([]float32, maxCol)
	return st, nil
}

func (l *Layer) geom(n int) native.Geom {
	return native.Geom{N: n, H: l.In.H, W: l.In.W, C: l.In.C, K: l.k, S: l.s, P: l.p, OH: l.Out.H, OW: l.Out.W}
}

func (l *Layer) oneByOne() bool { return l.k == 1 && l.s == 1 && l.p == 0 }

// forward runs the training-mode forward pass of n ≤ st.n images and adds
// their loss, top-1 hits and live last-conv outputs to st's sums.
//
//	x: (n, H, W, C)  labels: (n)  first: index of x[0] within the step's batch
func (t *Trainer) forward(st *tstream, x []float32, labels []int32, n, first int, step uint64, scale float32) {
	src := x
	for i := range t.layers {
		l := &t.layers[i]
		switch l.kind {
		case kindConv:
			p := t.convParams(i)
			out := st.acts[i][:n*l.Out.Len()]
			relu := !(i == t.lastCv && t.spec.NoFinalReLU)
			if f := t.fast[i]; f != nil {
				f.forward(st.fs, out, src, n)
			} else {
				t.convForward(st, out, src, p, l, n, st.tiles[i], relu, t.fwdPack[i])
			}
			src = out
		case kindPool:
			out := st.acts[i][:n*l.Out.Len()]
			if l.pool.Type == "max" {
				native.MaxPool(out, st.argmax[i], src, l.geom(n))
			} else {
				native.AvePool(out, src, l.geom(n))
			}
			src = out
		case kindDropout:
			if t.opt.NoDropout {
				st.acts[i] = src
				continue
			}
			mask := st.masks[i][:n*l.Out.Len()]
			fillDropoutMask(mask, l.Out.Len(), l.dropout, t.opt.Seed, step, i, first)
			native.Mul(src, mask) // in place: the pool output becomes the dropout output
			st.acts[i] = src
		case kindGAP:
			native.GAP(st.logits, src, n, l.In.H*l.In.W, l.In.C)
		}
	}
	st.loss += native.SoftmaxXent(st.probs, st.dlogits, st.logits, labels, n, t.classes, scale)
	for i := 0; i < n; i++ {
		if argmax32(st.probs[i*t.classes:(i+1)*t.classes]) == int(labels[i]) {
			st.correct++
		}
	}
	for _, v := range st.acts[t.lastCv][:n*t.layers[t.lastCv].Out.Len()] {
		if v > 0 {
			st.alive++
		}
	}
}

// convForward is conv + bias + ReLU over n images (see convOp).
//
// bp is W packed for native.GemmPacked, or nil for OpenBLAS.
func (t *Trainer) convForward(st *tstream, out, src []float32, p *ConvParams, l *Layer, n, tile int, relu bool, bp []float32) {
	rows := n * l.Out.H * l.Out.W
	if bp != nil && l.oneByOne() {
		native.GemmPacked(out, p.Cout, src, p.Cin, bp, p.Cin, p.Cout, 0, p.Cout, rows, p.B, relu)
		return
	}
	if l.oneByOne() {
		blas.Sgemm(false, true, rows, p.Cout, p.Cin, 1, src, p.Cin, p.W, p.Cin, 0, out, p.Cout)
		native.BiasAct(out, rows, p.Cout, p.Cout, p.B, relu)
		return
	}
	g, k := l.geom(n), l.GemmK
	for r0 := 0; r0 < rows; r0 += tile {
		nr := min(tile, rows-r0)
		native.Im2col(st.col[:nr*k], src, g, r0, nr)
		o := out[r0*p.Cout : (r0+nr)*p.Cout]
		if bp != nil {
			native.GemmPacked(o, p.Cout, st.col[:nr*k], k, bp, k, p.Cout, 0, p.Cout, nr, p.B, relu)
			continue
		}
		blas.Sgemm(false, true, nr, p.Cout, k, 1, st.col[:nr*k], k, p.W, k, 0, o, p.Cout)
		native.BiasAct(o, nr, p.Cout, p.Cout, p.B, relu)
	}
}

// backward accumulates parameter gradients of the loss into st.grads.
// It mirrors forward layer by layer, from the logits down.
func (t *Trainer) backward(st *tstream, x []float32, n int) {
	last := &t.layers[t.lastCv]
	dcur := st.dA[:n*last.Out.Len()]
	native.GAPBackward(dcur, st.dlogits, n, last.Out.H*last.Out.W, last.Out.C)
	dnext := st.dB
	for i := t.lastCv; i >= 0; i-- {
		l := &t.layers[i]
		in := x
		if i > 0 {
			in = st.acts[i-1]
		}
		switch l.kind {
		case kindConv:
			p, gp := t.convParams(i), &st.grads.Convs[t.convIndex(i)]
			rows := n * l.Out.H * l.Out.W
			relu := !(i == t.lastCv && t.spec.NoFinalReLU)
			native.BiasActBackward(dcur, st.acts[i], rows, p.Cout, gp.B, relu)
			var din []float32
			if i > 0 {
				din = dnext[:n*l.In.Len()]
			}
			bo, wg := t.bwd[i], t.winoGrad(i)
			switch {
			case wg != nil:
				t.winoWeightGrad(st, wg, st.du[i], dcur, in[:n*l.In.Len()], n)
				if din != nil {
					bo.forward(st.fs, din, dcur, n)
				}
			case bo != nil && din != nil:
				t.convBackward(st, nil, gp.W, dcur, in[:n*l.In.Len()], p, l, n, st.tiles[i], nil)
				bo.forward(st.fs, din, dcur, n)
			default:
				t.convBackward(st, din, gp.W, dcur, in[:n*l.In.Len()], p, l, n, st.tiles[i], t.bwdPack[i])
			}
			dcur, dnext = din, dcur[:cap(dcur)]
		case kindPool:
			din := dnext[:n*l.In.Len()]
			clear(din)
			if l.pool.Type == "max" {
				native.MaxPoolBackward(din, dcur, st.argmax[i], l.geom(n))
			} else {
				native.AvePoolBackward(din, dcur, l.geom(n))
			}
			dcur, dnext = din, dcur[:cap(dcur)]
		case kindDropout:
			if !t.opt.NoDropout {
				native.Mul(dcur, st.masks[i][:len(dcur)])
			}
		}
	}
}

// convBackward: given dPre (gradient at the conv output before the bias,
// ReLU already applied), accumulate dW and, when din is not nil, write the
// gradient w.r.t. the input (with the packed GEMM when bp, W packed as
// (Cout, K·K·Cin), is not nil).
//
//	dpre: (rows, Cout)  in: (n, H, W, Cin)  dw: (Cout, K·K·Cin)  din: (n, H, W, Cin)
func (t *Trainer) convBackward(st *tstream, din, dw, dpre, in []float32, p *ConvParams, l *Layer, n, tile int, bp []float32) {
	rows := n * l.Out.H * l.Out.W
	if l.oneByOne() {
		// dW += dPreᵀ · in ; dIn = dPre · W
		blas.Sgemm(true, false, p.Cout, p.Cin, rows, 1, dpre, p.Cout, in, p.Cin, 1, dw, p.Cin)
		switch {
		case din != nil && bp != nil:
			native.GemmPacked(din, p.Cin, dpre, p.Cout, bp, p.Cout, p.Cin, 0, p.Cin, rows, nil, false)
		case din != nil:
			blas.Sgemm(false, false, rows, p.Cin, p.Cout, 1, dpre, p.Cout, p.W, p.Cin, 0, din, p.Cin)
		}
		return
	}
	g, k := l.geom(n), l.GemmK
	if din != nil {
		clear(din)
	}
	for r0 := 0; r0 < rows; r0 += tile {
		nr := min(tile, rows-r0)
		col := st.col[:nr*k]
		native.Im2col(col, in, g, r0, nr)
		dp := dpre[r0*p.Cout : (r0+nr)*p.Cout]
		blas.Sgemm(true, false, p.Cout, k, nr, 1, dp, p.Cout, col, k, 1, dw, k)
		if din != nil {
			dcol := st.dcol[:nr*k]
			if bp != nil {
				native.GemmPacked(dcol, k, dp, p.Cout, bp, p.Cout, k, 0, k, nr, nil, false)
			} else {
				blas.Sgemm(false, false, nr, k, p.Cout, 1, dp, p.Cout, p.W, k, 0, dcol, k)
			}
			native.Col2im(din, dcol, g, r0, nr)
		}
	}
}

// winoGrad is the Winograd op whose transform domain layer i's weight
// gradient is computed in, or nil (im2col GEMM): a Winograd conv whose
// input gradient is Winograd too, or that needs none (the first layer).
func (t *Trainer) winoGrad(i int) *winoOp {
	wo, _ := t.fast[i].(*winoOp)
	if wo == nil || (i > 0 && t.bwd[i] == nil) {
		return nil
	}
	return wo
}

// winoWeightGrad adds to du the transformed weight gradient of the
// Winograd conv o over n images: per chunk of tiles, the input transform V
// and the output-gradient transform Ŷ = A·dPre·Aᵀ, one GEMM per transform
// position accumulating dU[ξν] += Ŷ[ξν]ᵀ·V[ξν]. After the step's last
// micro-batch, native.WinoFilterGrad maps it back: dw += Gᵀ·dU·G. For
// F(4×4, 5×5) that is 6.25× fewer multiplications than the im2col GEMM
// (native.TestWinoWeightGradMatchesDirect bounds the error).
//
//	dpre: (n, OH, OW, Cout)  in: (n, H, W, Cin)  du: (a·a, Cout, Cin)
func (t *Trainer) winoWeightGrad(st *tstream, o *winoOp, du, dpre, in []float32, n int) {
	w := o.w
	w.G.N = n
	cin, cout, aa := o.p.Cin, o.p.Cout, w.A*w.A
	for t0 := 0; t0 < w.Tiles(); t0 += o.chunk {
		nt := min(o.chunk, w.Tiles()-t0)
		vs, ys := native.WinoStride(nt, cin), native.WinoStride(nt, cout)
		v, yh := st.fs.wv[:aa*vs], st.fs.wm[:aa*ys]
		native.WinoIn(v, in, w, o.bt, t0, nt)
		native.WinoDy(yh, dpre, w, cout, o.at, t0, nt)
		for pos := 0; pos < aa; pos++ {
			blas.Sgemm(true, false, cout, cin, nt, 1, yh[pos*ys:pos*ys+nt*cout], cout,
				v[pos*vs:pos*vs+nt*cin], cin, 1, du[pos*cout*cin:(pos+1)*cout*cin], cin)
		}
	}
}

func (t *Trainer) convIndex(layer int) int {
	ci := 0
	for i := 0; i < layer; i++ {
		if t.layers[i].kind == kindConv {
			ci++
		}
	}
	return ci
}

func (t *Trainer) convParams(layer int) *ConvParams { return &t.params.Convs[t.convIndex(layer)] }

func argmax32(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// fillDropoutMask writes inverted-dropout masks (0 with probability p, else
// 1/(1−p)) for consecutive images; image j of the step uses a generator
// seeded by (seed, step, layer, first+j), so masks do not depend on how the
// batch is split over streams.
func fillDropoutMask(mask []float32, per int, p float64, seed, step uint64, layer, first int) {
	keep := float32(1 / (1 - p))
	thresh := uint64(p * (1 << 53))
	var pcg rand.PCG
	for j := 0; j*per < len(mask); j++ {
		pcg.Seed(seed^0x64726f706f7574, step<<24^uint64(layer)<<16^uint64(first+j))
		m := mask[j*per : (j+1)*per]
		for i := range m {
			if pcg.Uint64()>>11 < thresh {
				m[i] = 0
			} else {
				m[i] = keep
			}
		}
	}
}

// Step runs forward and backward on a batch and applies one SGD update
// with learning rate lr. step numbers the update (for dropout masks).
//
//	x: (n, H, W, C) preprocessed  labels: (n) in [0, classes)
func (t *Trainer) Step(x []float32, labels []int32, n int, lr float64, step uint64) (StepResult, error) {
	if err := t.checkBatch(x, labels, n); err != nil {
		return StepResult{}, err
	}
	res := t.gradients(x, labels, n, step)
	t.update(lr)
	return res, nil
}

func (t *Trainer) checkBatch(x []float32, labels []int32, n int) error {
	switch {
	case n < 1 || n > t.opt.MaxBatch:
		return fmt.Errorf("nin: batch %d out of range 1..%d", n, t.opt.MaxBatch)
	case len(x) < n*t.inLen || len(labels) < n:
		return fmt.Errorf("nin: batch of %d needs %d input values and %d labels", n, n*t.inLen, n)
	}
	for i, l := range labels[:n] {
		if l < 0 || int(l) >= t.classes {
			return fmt.Errorf("nin: label %d of image %d out of range 0..%d", l, i, t.classes-1)
		}
	}
	return nil
}

// gradients computes the batch's loss and the summed gradients in
// streams[0].grads (mean-loss gradients).
func (t *Trainer) gradients(x []float32, labels []int32, n int, step uint64) StepResult {
	blas.SetThreads(1)
	t.reload()
	scale := float32(1 / float64(n))
	parts := t.split(n)
	var wg sync.WaitGroup
	for s, pr := range parts {
		st := t.streams[s]
		clear(st.grads.Data)
		if pr[1] == pr[0] {
			st.loss, st.correct, st.alive = 0, 0, 0
			continue
		}
		run := func() { t.pass(st, x, labels, pr[0], pr[1], step, scale, true) }
		if s == len(parts)-1 {
			run()
		} else {
			wg.Add(1)
			go func() { defer wg.Done(); run() }()
		}
	}
	wg.Wait()
	var res StepResult
	g0 := t.streams[0].grads.Data
	alive := 0
	for s, st := range t.streams {
		if s > 0 {
			for i, v := range st.grads.Data {
				g0[i] += v
			}
		}
		res.Loss += st.loss
		res.Correct += st.correct
		alive += st.alive
	}
	res.Loss /= float64(n)
	res.AliveFrac = float64(alive) / float64(n*t.layers[t.lastCv].Out.Len())
	return res
}

// split divides n images over the streams as contiguous ranges.
func (t *Trainer) split(n int) [][2]int {
	s := len(t.streams)
	parts := make([][2]int, s)
	for i := range parts {
		parts[i] = [2]int{i * n / s, (i + 1) * n / s}
	}
	return parts
}

// update applies Caffe SGD: V ← m·V + lr·mult·(g + wd·W) (no decay on
// biases), W ← W − V.
func (t *Trainer) update(lr float64) {
	g := t.streams[0].grads
	mom := float32(t.opt.Momentum)
	for ci := range t.params.Convs {
		p, v, d := &t.params.Convs[ci], &t.vel.Convs[ci], &g.Convs[ci]
		lw, lb, wd := float32(lr*p.WeightLR), float32(lr*p.BiasLR), float32(t.opt.WeightDecay)
		for i, w := range p.W {
			v.W[i] = mom*v.W[i] + lw*(d.W[i]+wd*w)
			p.W[i] = w - v.W[i]
		}
		for i := range p.B {
			v.B[i] = mom*v.B[i] + lb*d.B[i]
			p.B[i] -= v.B[i]
		}
	}
}

// Velocity exposes the momentum buffers (for checkpoints).
func (t *Trainer) Velocity() *Params { return t.vel }

// lossAt evaluates the batch-mean the training-mode loss (with the step's dropout masks)
// without touching gradients or weights; used by gradient checks.
func (t *Trainer) lossAt(x []float32, labels []int32, n int, step uint64) float64 {
	blas.SetThreads(1)
	t.reload()
	st := t.streams[0]
	t.pass(st, x, labels, 0, n, step, 1, false)
	return st.loss / float64(n)
}

// pass runs images [i0, i1) of the batch x through forward (and backward,
// when backward is set) on stream st, one micro-batch at a time. It resets
// st's loss sums and, with backward, accumulates the gradients into
// st.grads (which the caller clears).
func (t *Trainer) pass(st *tstream, x []float32, labels []int32, i0, i1 int, step uint64, scale float32, backward bool) {
	st.loss, st.correct, st.alive = 0, 0, 0
	if backward {
		for _, du := range st.du {
			clear(du)
		}
	}
	for c0 := i0; c0 < i1; c0 += st.n {
		m := min(st.n, i1-c0)
		xs := x[c0*t.inLen : (c0+m)*t.inLen]
		t.forward(st, xs, labels[c0:c0+m], m, c0, step, scale)
		if backward {
			t.backward(st, xs, m)
		}
	}
	if backward {
		for i, du := range st.du {
			if du != nil {
				wo := t.winoGrad(i)
				native.WinoFilterGrad(st.grads.Convs[t.convIndex(i)].W, du, wo.p.Cout, wo.k, wo.p.Cin, wo.gm)
			}
		}
	}
}
