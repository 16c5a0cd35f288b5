package nin

import (
	"errors"
	"fmt"
	"math"
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
	// Tuning picks the convs' forms as in inference; Mode and Unfused do
	// not apply. MicroBatch is how many images of a stream's share of the
	// batch go through forward and backward together (default 16):
	// activations are kept for one micro-batch only, and gradients
	// accumulate over micro-batches. TileBytes defaults to 2 MiB. The input
	// gradients of the Winograd-eligible convs run as Winograd convs too;
	// the weight gradients (long reductions over the batch's pixels) run on
	// OpenBLAS, in the Winograd domain where both passes are Winograd.
	Tuning
}

// Trainer trains a model's parameters in place with SGD + momentum.
// Each stream holds the activations of its share of the batch; gradients
// are summed over streams in a fixed order, so a run is deterministic for a
// given seed and thread count. Dropout masks are a pure function of
// (seed, step, image index), so resuming needs no random-number state.
type Trainer struct {
	spec     Spec
	layers   []tlayer
	params   *Params // the model's weights, updated in place
	vel      *Params // momentum buffers, same layout
	opt      TrainOptions
	inLen    int
	classes  int
	lastCv   int // index of the last conv layer (the fc head's, if any)
	lastBody int // index of the last mlpconv layer: its ReLU is the dead-ReLU detector's
	streams  []*tstream
}

// tlayer is one planned layer and, for a conv, the kernel it shares with
// inference.
type tlayer struct {
	Layer
	conv *conv // conv layers
	ci   int   // conv layers: index into Params.Convs
}

// slot is one layer's state in a stream, for one micro-batch of n images.
type slot struct {
	act    []float32 // (n, OH, OW, C) output; dropout aliases its input
	argmax []int32   // max pool: (n, OH, OW, C) flat input index
	mask   []float32 // dropout: (n, H, W, C) 0 or 1/(1−p)
	du     []float32 // Winograd-domain weight gradient: (a·a, Cout, Cin), summed over the step
}

// tstream is one data-parallel worker: the state of up to n images (one
// micro-batch).
type tstream struct {
	scratch
	n       int
	slots   []slot    // per layer
	dA, dB  []float32 // (n, maxAct) gradient ping-pong
	logits  []float32 // (n, classes)
	probs   []float32 // (n, classes)
	dlogits []float32 // (n, classes)
	grads   *Params   // this stream's gradient sums
	loss    float64
	correct int
	alive   int // positive outputs of the last mlpconv (dead-ReLU detector)
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
		return nil, errors.New("model has no parameters")
	}
	layers, err := m.Spec.Plan()
	if err != nil {
		return nil, err
	}
	if err := trainDefaults(&opt); err != nil {
		return nil, err
	}
	vel, err := NewParams(&m.Spec)
	if err != nil {
		return nil, err
	}
	t := &Trainer{spec: m.Spec, params: m.Params, vel: vel, opt: opt,
		inLen: m.Spec.Input.Len(), classes: m.Spec.Classes()}
	// buffers for one micro-batch of a stream's share of the batch
	per := min(opt.MicroBatch, (opt.MaxBatch+opt.Threads-1)/opt.Threads)
	var sz scratchSize
	if err := t.buildLayers(layers, per, &sz); err != nil {
		return nil, err
	}
	for s := 0; s < opt.Threads; s++ {
		st, err := t.newStream(per, sz)
		if err != nil {
			return nil, err
		}
		t.streams = append(t.streams, st)
	}
	return t, nil
}

// trainDefaults checks opt and fills in its defaults.
func trainDefaults(opt *TrainOptions) error {
	if err := opt.check(); err != nil {
		return err
	}
	opt.defaults()
	opt.Mode = ModeStreams
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
	case opt.MaxBatch < 1 || opt.MaxBatch > 1<<14:
		return fmt.Errorf("batch %d out of range 1..16384", opt.MaxBatch)
	case opt.Threads < 1 || opt.Threads > 256:
		return fmt.Errorf("threads %d out of range 1..256", opt.Threads)
	case !(opt.Momentum >= 0 && opt.Momentum < 1):
		return fmt.Errorf("momentum %g out of range [0, 1)", opt.Momentum)
	case !(opt.WeightDecay >= 0 && opt.WeightDecay < 1):
		return fmt.Errorf("weight decay %g out of range [0, 1)", opt.WeightDecay)
	}
	return nil
}

// buildLayers makes the conv kernels, with their gradient forms, for
// micro-batches of per images, and grows sz by the scratch they use.
func (t *Trainer) buildLayers(layers []Layer, per int, sz *scratchSize) error {
	cp := convPlan{micro: per, tileBytes: t.opt.TileBytes, winograd: t.opt.Winograd,
		winoTile: t.opt.WinoTile, direct: t.opt.Direct, packed: usePacked(t.opt.GEMM, ModeStreams)}
	ci := 0
	for i, l := range layers {
		tl := tlayer{Layer: l}
		if l.kind == kindConv {
			if ci >= len(t.params.Convs) {
				return errors.New("parameters do not match the spec")
			}
			t.lastCv = i
			if !l.Head {
				t.lastBody = i
			}
			c, err := newConv(l, &t.params.Convs[ci], reluAfter(layers, i, t.spec.NoFinalReLU), cp)
			if err != nil {
				return err
			}
			if c.oneByOne { // one GEMM over the micro-batch
				c.tileRows = per * l.Out.H * l.Out.W
			}
			c.needs(sz)
			if err := c.enableGrad(l, ci == 0, cp, sz); err != nil {
				return err
			}
			tl.conv, tl.ci = c, ci
			ci++
		}
		t.layers = append(t.layers, tl)
	}
	return nil
}

// reload rebuilds the convs' derived weights from the parameters.
func (t *Trainer) reload() {
	for _, l := range t.layers {
		if l.conv != nil {
			l.conv.reload()
		}
	}
}

func (t *Trainer) newStream(n int, sz scratchSize) (*tstream, error) {
	g, err := NewParams(&t.spec)
	if err != nil {
		return nil, err
	}
	st := &tstream{scratch: sz.alloc(), n: n, grads: g, slots: make([]slot, len(t.layers)),
		logits: make([]float32, n*t.classes), probs: make([]float32, n*t.classes), dlogits: make([]float32, n*t.classes)}
	maxAct := t.inLen
	for i, l := range t.layers {
		maxAct = max(maxAct, l.Out.Len())
		sl := &st.slots[i]
		switch l.kind {
		case kindConv:
			sl.act = make([]float32, n*l.Out.Len())
			if c := l.conv; c.winoDW {
				sl.du = make([]float32, c.wino.duLen())
			}
		case kindPool:
			sl.act = make([]float32, n*l.Out.Len())
			if l.pool.Type == "max" {
				sl.argmax = make([]int32, n*l.Out.Len())
			}
		case kindDropout:
			sl.mask = make([]float32, n*l.Out.Len())
		}
	}
	st.dA, st.dB = make([]float32, n*maxAct), make([]float32, n*maxAct)
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
		l, sl := &t.layers[i], &st.slots[i]
		switch l.kind {
		case kindConv:
			out := sl.act[:n*l.Out.Len()]
			l.conv.compute(&st.scratch, out, src, n, whole)
			src = out
		case kindPool:
			out := sl.act[:n*l.Out.Len()]
			if l.pool.Type == "max" {
				native.MaxPool(out, sl.argmax, src, l.geom(n))
			} else {
				native.AvePool(out, src, l.geom(n))
			}
			src = out
		case kindDropout:
			if t.opt.NoDropout {
				sl.act = src
				continue
			}
			mask := sl.mask[:n*l.Out.Len()]
			fillDropoutMask(mask, l.Out.Len(), l.dropout, t.opt.Seed, step, i, first)
			native.Mul(src, mask) // in place: the pool output becomes the dropout output
			sl.act = src
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
	for _, v := range st.slots[t.lastBody].act[:n*t.layers[t.lastBody].Out.Len()] {
		if v > 0 {
			st.alive++
		}
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
		l, sl := &t.layers[i], &st.slots[i]
		in := x
		if i > 0 {
			in = st.slots[i-1].act
		}
		switch l.kind {
		case kindConv:
			c, gp := l.conv, &st.grads.Convs[l.ci]
			native.BiasActBackward(dcur, sl.act, n*l.Out.H*l.Out.W, c.p.Cout, gp.B, c.relu)
			var din []float32 // nil for the first conv: nothing below it learns
			if l.ci > 0 {
				din = dnext[:n*l.In.Len()]
			}
			c.backward(&st.scratch, din, gp.W, sl.du, dcur, in[:n*l.In.Len()], n)
			if din == nil {
				return
			}
			dcur, dnext = din, dcur[:cap(dcur)]
		case kindPool:
			din := dnext[:n*l.In.Len()]
			clear(din)
			if l.pool.Type == "max" {
				native.MaxPoolBackward(din, dcur, sl.argmax, l.geom(n))
			} else {
				native.AvePoolBackward(din, dcur, l.geom(n))
			}
			dcur, dnext = din, dcur[:cap(dcur)]
		case kindDropout:
			if !t.opt.NoDropout {
				native.Mul(dcur, sl.mask[:len(dcur)])
			}
		}
	}
}

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
// batch is split over streams. Each 64-bit draw decides four elements by
// 16 bits each (p to 1/65536): a draw per element was 5% of a nin-mnist
// training step.
func fillDropoutMask(mask []float32, per int, p float64, seed, step uint64, layer, first int) {
	keep := float32(1 / (1 - p))
	thresh := uint64(math.Round(p * (1 << 16)))
	var pcg rand.PCG
	for j := 0; j*per < len(mask); j++ {
		pcg.Seed(seed^0x64726f706f7574, step<<24^uint64(layer)<<16^uint64(first+j))
		m := mask[j*per : (j+1)*per]
		var bits uint64
		for i := range m {
			if i&3 == 0 {
				bits = pcg.Uint64()
			}
			if bits&0xffff < thresh {
				m[i] = 0
			} else {
				m[i] = keep
			}
			bits >>= 16
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
	procsForStreams(t.opt.Threads)
	res := t.gradients(x, labels, n, step)
	t.update(lr)
	return res, nil
}

func (t *Trainer) checkBatch(x []float32, labels []int32, n int) error {
	switch {
	case n < 1 || n > t.opt.MaxBatch:
		return fmt.Errorf("batch %d out of range 1..%d", n, t.opt.MaxBatch)
	case len(x) < n*t.inLen || len(labels) < n:
		return fmt.Errorf("batch of %d needs %d input values and %d labels", n, n*t.inLen, n)
	}
	for i, l := range labels[:n] {
		if l < 0 || int(l) >= t.classes {
			return fmt.Errorf("label %d of image %d out of range 0..%d", l, i, t.classes-1)
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
	res.AliveFrac = float64(alive) / float64(n*t.layers[t.lastBody].Out.Len())
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
		for _, sl := range st.slots {
			clear(sl.du)
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
		for i, sl := range st.slots {
			if sl.du != nil {
				l := &t.layers[i]
				l.conv.wino.filterGrad(st.grads.Convs[l.ci].W, sl.du)
			}
		}
	}
}
