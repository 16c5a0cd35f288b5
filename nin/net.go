package nin

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/ninbatch/ninbatch/blas"
	"github.com/ninbatch/ninbatch/native"
)

// Net is a network built for inference: every buffer is allocated once for
// Options.MaxBatch and Forward allocates nothing. A Net is used by one
// goroutine at a time; Close stops its workers.
type Net struct {
	spec    Spec
	layers  []Layer
	params  *Params
	quant   *Quant // the int8 calibration, or nil
	ops     []op   // one per conv and pool layer, in order (see run)
	opt     Options
	inLen   int // H·W·C of one input image
	classes int
	gapHW   int         // spatial size of the last feature map
	mapDims Dims        // the class maps: the last mlpconv's output
	fc      *ConvParams // the fc head's layer, or nil (GAP head)
	packed  bool        // conv GEMMs on native.GemmPacked

	streams []*stream
	work    []*mailbox                       // one per worker goroutine (nil: no workers)
	fin     *tally                           // parts finished by the workers
	posted  int64                            // parts handed to the workers so far (the caller's count)
	spin    bool                             // split calls wait by spinning (see procs)
	observe func(conv string, src []float32) // sees each conv's input (Calibrator), or nil
	closed  bool

	// what micro runs: ops with each conv and the 1×1 convs after it fused
	// into a chainOp, when the packed GEMM runs them (unless
	// Options.Unfused); else ops itself
	run []op

	// what the workers run: the micro-batches of the batches in flight
	// (streams), or the layer call being split over them (batch < threads)
	slots  [2]batchSlot
	queue  chan microTask
	sp     splitCall
	claims []claims // per part: units of sp claimed from its share (see part)
}

// task is what a worker is told to do: drain the current job's
// micro-batches, or run its part of the current split layer call.
type task uint8

const (
	taskDrain task = iota
	taskPart
	taskStop
)

// splitCall is one layer call whose rows (or tiles) are divided among all
// workers: at batch < threads, one image's layers run on every core with
// OpenBLAS at 1 thread, instead of OpenBLAS splitting each small GEMM.
type splitCall struct {
	o        partOp
	dst, src []float32
	n, parts int
}

// partOp is a layer whose call can be split: each part computes a
// disjoint share of dst, with the scratch buffers of stream st.
type partOp interface {
	forwardPart(st *stream, dst, src []float32, n int, w part)
}

// part says which share of a split layer call one worker computes. With q
// nil it is the static share idx of parts. With q set, the op cuts its call
// into units (row tiles, or channel groups); every part takes the units of
// its static share from the front, then takes what is left of the other
// shares from their backs, so a part that starts late or runs on a slower
// core does less, and each part's units stay mostly contiguous (claiming
// units in turn from one counter interleaved the parts' rows and cost
// nin-mnist 8%). Static halves at batch 1 on 2 threads left one part
// waiting 15–25% of every call: the caller's half ran that much slower than
// the worker's whenever both ran at once, either half, either buffer set
// (docs/benchmarks.md).
type part struct {
	idx, parts int
	q          []claims // one per part, zero at the start of the call; or nil
}

// claims is what has been taken of one part's share: front in the low 32
// bits, back in the high; padded to a cache line of its own.
type claims struct {
	atomic.Int64
	_ [56]byte
}

// whole is an unsplit call.
var whole = part{idx: 0, parts: 1}

// units hands out the units of one call that a part computes.
type units struct {
	w        part
	total    int
	next, hi int // static: the units left; dynamic: next is the share tried
}

// units of a call cut into total units: claimable as above, or the static
// share.
func (w part) units(total int) units {
	if w.q != nil {
		return units{w: w, total: total}
	}
	lo, hi := share(total, w.idx, w.parts)
	return units{w: w, next: lo, hi: hi}
}

// take returns the next unit this part computes, or false when done.
func (u *units) take() (int, bool) {
	if u.w.q == nil {
		if u.next < u.hi {
			u.next++
			return u.next - 1, true
		}
		return 0, false
	}
	for ; u.next < u.w.parts; u.next++ { // shares idx, idx+1, ...: ours first
		p := (u.w.idx + u.next) % u.w.parts
		lo, hi := share(u.total, p, u.w.parts)
		c := &u.w.q[p]
		for {
			v := c.Load()
			f, b := int(v&0xffffffff), int(v>>32)
			if lo+f >= hi-b {
				break // share p is used up
			}
			if u.next == 0 { // our share: from the front
				if c.CompareAndSwap(v, v+1) {
					return lo + f, true
				}
			} else if c.CompareAndSwap(v, v+1<<32) {
				return hi - b - 1, true
			}
		}
	}
	return 0, false
}

// unitsPerPart is how finely a split call is cut: about this many units for
// each part, so the last unit claimed is a small share of the call.
const unitsPerPart = 8

// minUnitMACs is the least work worth a unit, about 10 µs on one core:
// nin-mnist's batch-1 layers are tens of µs in all, and cutting them finer
// lost more to claiming than it won back.
const minUnitMACs = 1 << 20

// cut is the number of units a call of macs multiply-adds is cut into: one
// per part when the call is small, up to unitsPerPart per part.
func (w part) cut(macs int) int {
	if w.parts == 1 {
		return 1
	}
	return w.parts * min(max(macs/(w.parts*minUnitMACs), 1), unitsPerPart)
}

// splitRows is the rows of one unit of a call over rows cut into units:
// at most tile (the unsplit call's tile), a multiple of the AVX-512
// kernel's 12-row block, at least 24 rows.
func splitRows(rows, tile, units int) int {
	if units == 1 {
		return tile
	}
	r := (rows + units - 1) / units
	r = (r + 11) / 12 * 12
	return max(min(tile, r), min(tile, 24))
}

// splitCols is the channels of one unit of a call cut by channels into
// units: a multiple of the AVX-512 kernel's 32-column block (two panels),
// 32 or 64.
func splitCols(cout, units int) int {
	return min(max(cout/units/32*32, 32), 64)
}

// share is part p of [0, total) cut into parts nearly equal pieces.
func share(total, part, parts int) (lo, hi int) {
	return total * part / parts, total * (part + 1) / parts
}

// byChannels reports whether a split layer call with m GEMM rows (pixels or
// Winograd tiles) and cout output channels is cut along the channels: each
// part then computes every row for its slice of the channels.
//
// A split must halve the operand OpenBLAS packs on every call, or the parts
// cost nearly as much as the whole. At batch 1 the late layers have few rows
// and many weights (nin-mnist conv3: 49 rows × 1200 against 128 × 1200;
// its Winograd conv2: 16 tiles per transform position against 128 output
// channels), so cutting the rows left every part packing all the weights:
// the split took 417 µs against 462 on one core for nin-mnist conv2.
func byChannels(m, cout, parts int) bool { return parts > 1 && m < cout }

// stream is one worker's private buffers for a micro-batch of mb images.
type stream struct {
	scratch
	a, b   []float32    // (mb, maxAct) ping-pong activations, NHWC per image
	logits []float32    // (mb, classes)
	ct     [2][]float32 // (chain tile, C) a chainOp's intermediate maps, ping-pong
	idx    int          // worker index: the part this stream computes in a split call
	split  bool         // layer calls on this stream are split over all workers
}

type job struct {
	x, probs, logits []float32
	maps             []float32 // (n, mapH, mapW, classes) or nil
	n                int
	mb               int // images per micro-batch for this job
}

// op is one inference layer: it reads src and writes dst for n images.
type op interface {
	forward(st *stream, dst, src []float32, n int)
}

// chainOp is a conv and the 1×1 convs after it (an mlpconv block's
// per-pixel MLP) run tile by tile: each tile of output pixels goes through
// every stage before the next starts, the intermediate maps in two
// tile-sized buffers (≤ chainTileBytes, so they stay in L2).
//
// In a stream (batch ≥ threads) it saves the round trips of the full-size
// intermediate maps through L3: nin-mnist's first block writes and reads
// back 1.2 and 0.8 MB per micro-batch of 4 without it. Paired at batch 64
// on 2 threads (TestPairedAB, Unfused against the default, 21 pairs):
// nin-mnist 0.95, nin-cifar10 0.96, nin-imagenet 0.98 of the time.
//
// In split calls (batch 1 on 2 cores), a 1×1 conv needs only its own
// pixels' inputs, so each part takes its share of the pixels through all
// the stages, and the workers meet once per chain instead of once per
// conv (tens of µs a meeting; nin-mnist has 9 split convs an image).
//
// The kernels and their order per pixel are those of the separate ops: the
// output is bit-identical.
//
//	src: (n, H, W, Cin) of stages[0]  dst: (n, OH, OW, Cout) of the last stage
type chainOp struct {
	stages []*conv // stages[0]: a direct, im2col or 1×1 conv; the rest 1×1
	tile   int     // output pixels per tile
}

// A chain tile's intermediate maps are at most chainTileBytes. Chains whose
// 1×1 weights are over chainWeightBytes are not built: cut by pixels, every
// part reads all the weights, where separate convs are cut by channels when
// the rows are few (see byChannels).
// chainWeightBytes is an eighth of L2 (256 KiB on a 2 MiB L2: the chain's
// weights and its two tiles stay in L2). Budgets of 512 KiB and 1.25 MiB
// measured 1.01 and 0.97 of the time at batch 1 on 2 threads on
// nin-imagenet, and 1.11 at batch 64 (docs/benchmarks.md).
const chainTileBytes = 128 << 10

var chainWeightBytes = min(max(native.DetectedCaches().L2/8, 128<<10), 1<<20)

func (o *chainOp) forward(st *stream, dst, src []float32, n int) {
	o.forwardPart(st, dst, src, n, whole)
}

// forwardPart computes its units of output pixels through every stage.
func (o *chainOp) forwardPart(st *stream, dst, src []float32, n int, w part) {
	g := o.stages[0].g
	g.N = n
	rows := g.Rows()
	macs := 0
	for _, s := range o.stages {
		macs += s.g.Cols() * s.p.Cout
	}
	tile := splitRows(rows, o.tile, w.cut(rows*macs))
	last := len(o.stages) - 1
	us := w.units((rows + tile - 1) / tile)
	for u, ok := us.take(); ok; u, ok = us.take() {
		r0 := u * tile
		nr := min(tile, rows-r0)
		var in []float32
		for i, s := range o.stages {
			out := dst[r0*s.p.Cout : (r0+nr)*s.p.Cout]
			if i < last {
				out = st.ct[i%2][:nr*s.p.Cout]
			}
			if i == 0 {
				s.rows(&st.scratch, out, src, n, r0, nr)
			} else {
				s.gemm(out, in, nr, s.p.Cin, 0, s.p.Cout)
			}
			in = out
		}
	}
}

// fuseChains returns ops with each run of a non-Winograd conv (or a 1×1
// conv after a Winograd one) and the 1×1 convs that follow it replaced by
// one chainOp, and the floats each of a stream's two chain buffers needs.
func fuseChains(ops []op, maxWeights int) ([]op, int) {
	var fused []op
	scratch := 0
	for i := 0; i < len(ops); {
		c, ok := ops[i].(*conv)
		ok = ok && c.wino == nil && !c.p.FC
		j := i + 1
		for ok && j < len(ops) {
			if n, is := ops[j].(*conv); !is || !n.oneByOne || n.p.FC { // the fc head stays its own op: ForwardMaps reads its input
				break
			}
			j++
		}
		if !ok || j-i < 2 {
			fused = append(fused, ops[i])
			i++
			continue
		}
		ch := &chainOp{}
		perPixel, weights := 0, 0 // floats a tile holds per output pixel; of the 1×1 weights
		if c.oneByOne {
			perPixel = c.p.Cin
		}
		for _, o := range ops[i:j] {
			s := o.(*conv)
			ch.stages = append(ch.stages, s)
			perPixel += s.p.Cout
			if s.oneByOne {
				weights += s.p.Cin * s.p.Cout
			}
		}
		if 4*weights > maxWeights {
			fused = append(fused, ops[i:j]...)
			i = j
			continue
		}
		ch.tile = max(24, min(1024, chainTileBytes/(4*perPixel)/6*6))
		if c.direct == nil && !c.oneByOne {
			ch.tile = min(ch.tile, c.tileRows) // the im2col buffer holds tileRows rows
		}
		for _, s := range ch.stages[:len(ch.stages)-1] {
			scratch = max(scratch, ch.tile*s.p.Cout)
		}
		fused = append(fused, ch)
		i = j
	}
	return fused, scratch
}

// poolOp is Caffe max or average pooling.
//
//	src: (n, H, W, C)  dst: (n, OH, OW, C)
type poolOp struct {
	g   native.Geom
	max bool
}

func (o *poolOp) forward(_ *stream, dst, src []float32, n int) {
	g := o.g
	g.N = n
	o.pool(dst, src, g)
}

func (o *poolOp) pool(dst, src []float32, g native.Geom) {
	if o.max {
		native.MaxPool(dst, nil, src, g)
	} else {
		native.AvePool(dst, src, g)
	}
}

// forwardPart pools output rows share(OH, part, parts) of every image: its
// input arrives split over the cores, and one core pooling all of it took
// twice its single-core time (nin-imagenet at batch 1). A part is the
// window rows it reads as an image of its own, which with no padding
// clips the windows exactly as the whole does.
func (o *poolOp) forwardPart(_ *stream, dst, src []float32, n int, w part) {
	part, parts := w.idx, w.parts
	g := o.g
	if g.P != 0 { // a part's top windows would be padded: pool whole on one core
		if part == 0 {
			g.N = n
			o.pool(dst, src, g)
		}
		return
	}
	lo, hi := share(g.OH, part, parts)
	if lo == hi {
		return
	}
	r0, r1 := lo*g.S, min(g.H, (hi-1)*g.S+g.K)
	sub := g
	sub.N, sub.H, sub.OH = 1, r1-r0, hi-lo
	row, orow := g.W*g.C, g.OW*g.C
	for i := 0; i < n; i++ {
		o.pool(dst[(i*g.OH+lo)*orow:(i*g.OH+hi)*orow], src[(i*g.H+r0)*row:(i*g.H+r1)*row], sub)
	}
}

// NewNet builds an inference network for a model.
func NewNet(m *Model, opt Options) (*Net, error) {
	if err := native.ISAError(); err != nil {
		return nil, err
	}
	if m == nil || m.Params == nil || len(m.Params.Convs) == 0 || len(m.Params.Data) == 0 {
		return nil, errors.New("model has no parameters")
	}
	layers, err := m.Spec.Plan()
	if err != nil {
		return nil, err
	}
	if err := netDefaults(&opt, layers, m.Spec.Input.Len()); err != nil {
		return nil, err
	}
	if err := opt.checkPrecision(m); err != nil {
		return nil, err
	}
	net := &Net{spec: m.Spec, layers: layers, params: m.Params, quant: m.Quant, opt: opt,
		inLen: m.Spec.Input.Len(), classes: m.Spec.Classes(), packed: usePacked(opt.GEMM, opt.Mode)}
	var sz scratchSize
	if err := net.buildOps(&sz); err != nil {
		return nil, err
	}
	net.run = net.ops
	maxCT := 0
	if net.packed && !opt.Unfused {
		net.run, maxCT = fuseChains(net.ops, opt.ChainWeightBytes)
	}
	mb, maxAct := opt.MicroBatch, maxActivation(layers, net.inLen)
	for i := 0; i < opt.Threads; i++ {
		net.streams = append(net.streams, &stream{scratch: sz.alloc(),
			a: make([]float32, mb*maxAct), b: make([]float32, mb*maxAct),
			logits: make([]float32, mb*net.classes),
			ct:     [2][]float32{make([]float32, maxCT), make([]float32, maxCT)},
			idx:    i})
	}
	if opt.Threads > 1 && opt.Mode != ModeBLAS {
		net.fin = newTally()
		net.spin = opt.Wait == "spin"
		net.claims = make([]claims, opt.Threads)
		// room for both slots' micro-batches: a batch is cut into at most
		// ceil(MaxBatch/MicroBatch) of them, or one per stream
		net.queue = make(chan microTask, 2*((opt.MaxBatch+mb-1)/mb+opt.Threads))
		for i := range net.slots {
			net.slots[i].done = newTally()
		}
		for _, st := range net.streams {
			box := newMailbox()
			net.work = append(net.work, box)
			go net.worker(st, box)
		}
	}
	return net, nil
}

// netDefaults checks opt and fills in its defaults.
func netDefaults(opt *Options, layers []Layer, inLen int) error {
	if err := opt.check(); err != nil {
		return err
	}
	opt.defaults()
	if opt.MaxBatch == 0 {
		opt.MaxBatch = 64
	}
	if opt.Threads == 0 {
		opt.Threads = runtime.NumCPU()
	}
	if opt.TileBytes == 0 {
		opt.TileBytes = 4 << 20
	}
	if opt.ChainWeightBytes == 0 {
		opt.ChainWeightBytes = chainWeightBytes
	}
	if opt.Wait == "" || opt.Wait == "auto" {
		// a spinner holds a CPU, which with more threads than CPUs another
		// part needs
		opt.Wait = "spin"
		if opt.Threads > ownProcs() {
			opt.Wait = "park"
		}
	}
	switch {
	case opt.MaxBatch < 1 || opt.MaxBatch > 1<<16:
		return fmt.Errorf("max batch %d out of range 1..65536", opt.MaxBatch)
	case opt.Threads < 1 || opt.Threads > 256:
		return fmt.Errorf("threads %d out of range 1..256", opt.Threads)
	case opt.TileBytes < 4096:
		return fmt.Errorf("tile budget %d bytes: want at least 4096", opt.TileBytes)
	}
	if opt.MicroBatch == 0 {
		// 8 images per step: OpenBLAS runs the Winograd products (M = tiles
		// × micro-batch) far below its peak when M is small. The packed
		// GEMM's speed does not depend on M, so there small images (largest
		// activation ≤ 128 Ki floats) go 4 at a time, which keeps a stream's
		// activations in L2 (docs/engine.md, "Threads").
		opt.MicroBatch = 8
		if usePacked(opt.GEMM, opt.Mode) && 4*maxActivation(layers, inLen) <= 512<<10 {
			opt.MicroBatch = 4
		}
		// int8 and bf16 products are 2-4× faster than fp32's, so their
		// layers wait on the fp32 activations: one image at a time keeps
		// them in L2 when one image's fit (nin-cifar10 at batch 64 on 2
		// threads: int8 1.7 against 1.2 thousand images/s with 8, bf16
		// 1.4 against 1.8 CPU ms an image)
		if (opt.Precision == PrecisionInt8 || opt.Precision == PrecisionBF16) && 4*maxActivation(layers, inLen) <= native.DetectedCaches().L2 {
			opt.MicroBatch = 1
		}
	}
	opt.MicroBatch = min(opt.MicroBatch, opt.MaxBatch)
	return nil
}

// buildOps makes one op per conv and pool layer and grows sz by the
// scratch they use.
func (net *Net) buildOps(sz *scratchSize) error {
	opt := net.opt
	cp := convPlan{micro: opt.MicroBatch, tileBytes: opt.TileBytes, winograd: opt.Winograd,
		winoTile: opt.WinoTile, direct: opt.Direct, packed: net.packed, bf16: opt.Precision == PrecisionBF16}
	if opt.Precision == PrecisionInt8 {
		cp.quant = net.quant
	}
	ci := 0
	for i, l := range net.layers {
		switch l.kind {
		case kindConv:
			if ci >= len(net.params.Convs) {
				return errors.New("parameters do not match the spec")
			}
			c, err := newConv(l, &net.params.Convs[ci], reluAfter(net.layers, i, net.spec.NoFinalReLU), cp)
			if err != nil {
				return err
			}
			ci++
			c.needs(sz)
			net.ops = append(net.ops, c)
		case kindPool:
			net.ops = append(net.ops, &poolOp{g: l.geom(0), max: l.pool.Type == "max"})
		case kindGAP:
			net.gapHW = l.In.H * l.In.W
		}
		if !l.Head {
			net.mapDims = l.Out
		}
		if l.kind == kindConv && l.Head {
			net.fc = &net.params.Convs[ci-1]
		}
	}
	return nil
}

// maxActivation is the largest tensor of one image in the forward pass:
// the input or a layer's output, in floats.
func maxActivation(layers []Layer, in int) int {
	n := in
	for _, l := range layers {
		n = max(n, l.Out.Len())
	}
	return n
}

// Close stops the worker goroutines. It is safe to call twice.
func (n *Net) Close() {
	if n.closed {
		return
	}
	n.settle() // the streams may be writing a caller's buffers
	n.closed = true
	for _, box := range n.work {
		box.post(taskStop)
	}
}

// Options returns the options the net was built with, defaults filled in.
func (n *Net) Options() Options { return n.opt }

// Layers returns the planned layers.
func (n *Net) Layers() []Layer { return n.layers }

// convs are the net's conv layers in order.
func (n *Net) convs() []*conv {
	var cs []*conv
	for _, o := range n.ops {
		if c, ok := o.(*conv); ok {
			cs = append(cs, c)
		}
	}
	return cs
}

// WinogradLayers names the convs that run as Winograd F(m×m, k×k).
func (n *Net) WinogradLayers() []string {
	var names []string
	for _, c := range n.convs() {
		if c.wino != nil {
			names = append(names, c.name)
		}
	}
	return names
}

// WinogradForms describes each Winograd conv as "name F(m×m,k×k)".
func (n *Net) WinogradForms() []string {
	var forms []string
	for _, c := range n.convs() {
		if w := c.wino; w != nil {
			forms = append(forms, fmt.Sprintf("%s F(%dx%d,%dx%d)", c.name, w.w.M, w.w.M, w.k, w.k))
		}
	}
	return forms
}

// Reload recomputes the weight layouts the net derives from the model's
// parameters when it is built (packed, Winograd-transformed and direct
// weights). Call it after changing the parameters in place, as training
// does between validation passes.
func (n *Net) Reload() {
	for _, c := range n.convs() {
		c.reload()
	}
}

// PackedGEMM reports whether the conv GEMMs run on the packed-weight
// kernel (see GEMMAuto) rather than OpenBLAS.
func (n *Net) PackedGEMM() bool { return n.packed }

// DirectLayers names the convs that run with the direct kernel.
func (n *Net) DirectLayers() []string {
	var names []string
	for _, c := range n.convs() {
		if c.direct != nil {
			names = append(names, c.name)
		}
	}
	return names
}

// Classes is the number of outputs per image.
func (n *Net) Classes() int { return n.classes }

// InputLen is the number of float32 values of one input image (H·W·C).
func (n *Net) InputLen() int { return n.inLen }

// MapDims is the size of the class maps ForwardMaps writes: the last
// mlpconv's output, H×W×classes.
func (n *Net) MapDims() Dims { return Dims{n.mapDims.H, n.mapDims.W, n.classes} }

// Forward runs the network on a batch.
//
//	x:      (batch, H, W, C) preprocessed input, NHWC; not modified
//	probs:  (batch, classes) softmax output
//	logits: (batch, classes) global-average-pooled scores, or nil
func (n *Net) Forward(x []float32, batch int, probs, logits []float32) error {
	return n.ForwardMaps(x, batch, probs, logits, nil)
}

// ForwardMaps is Forward that also writes each image's class maps: per
// pixel of the last mlpconv's output, the class scores whose mean over the
// pixels is the logit. With the GAP head that is the last conv's output
// itself (NIN's confidence maps); with the fc head, pixel p's share of the
// fully connected layer, H·W·Σₖ W[c,p,k]·f(p,k) + b_c.
//
//	maps: (batch, MapDims().H, MapDims().W, classes), or nil
func (n *Net) ForwardMaps(x []float32, batch int, probs, logits, maps []float32) error {
	p, err := n.Submit(x, batch, probs, logits, maps)
	if err != nil {
		return err
	}
	n.Wait(p)
	return nil
}

// Pending is a Submit call whose results may not be written yet.
type Pending struct {
	s    *batchSlot // nil: done when Submit returned
	gen  int64
	done time.Time // when it finished, for s nil
}

// batchSlot is one batch in flight on the streams: its micro-batches are
// tasks on the queue, and done counts the batches of this slot finished.
type batchSlot struct {
	job
	left atomic.Int64 // micro-batches not finished
	done *tally
	gen  int64     // batches submitted in this slot (the caller's count)
	end  time.Time // when the last micro-batch finished
	busy bool      // submitted and not yet waited for (the caller's)
}

// microTask is micro-batch i of the batch in slot s.
type microTask struct {
	s *batchSlot
	i int
}

// Submit starts ForwardMaps on a batch and, when the batch runs as
// streams, returns before it is done: up to two batches can be in flight,
// so the streams go from one batch to the next without waiting at the
// end of each for the slowest (a core that also decodes and writes, in
// `run`). Wait(p) returns when p's outputs are written; until then none of
// the call's slices may be touched. Batches that run as split calls or on
// OpenBLAS threads are done when Submit returns (after the batches in
// flight).
func (n *Net) Submit(x []float32, batch int, probs, logits, maps []float32) (Pending, error) {
	switch {
	case maps != nil && len(maps) < batch*n.MapDims().Len():
		return Pending{}, fmt.Errorf("maps has room for %d values, batch %d needs %d", len(maps), batch, batch*n.MapDims().Len())
	case n.closed:
		return Pending{}, errors.New("Forward on a closed Net")
	case batch < 0 || batch > n.opt.MaxBatch:
		return Pending{}, fmt.Errorf("batch %d out of range 0..%d", batch, n.opt.MaxBatch)
	case len(x) < batch*n.inLen:
		return Pending{}, fmt.Errorf("input has %d values, batch %d needs %d", len(x), batch, batch*n.inLen)
	case len(probs) < batch*n.classes:
		return Pending{}, fmt.Errorf("probs has room for %d values, batch %d needs %d", len(probs), batch, batch*n.classes)
	case logits != nil && len(logits) < batch*n.classes:
		return Pending{}, fmt.Errorf("logits has room for %d values, batch %d needs %d", len(logits), batch, batch*n.classes)
	}
	if batch == 0 {
		return Pending{}, nil
	}
	j := job{x: x, probs: probs, logits: logits, maps: maps, n: batch, mb: n.opt.MicroBatch}
	useStreams := n.work != nil && (n.opt.Mode == ModeStreams || batch >= n.opt.Threads)
	if !useStreams {
		n.settle() // the workers' streams are ours to use
	}
	switch {
	case useStreams:
		s := &n.slots[0]
		if s.busy {
			s = &n.slots[1]
		}
		if s.busy {
			return Pending{}, errors.New("two batches in flight: Wait for one before the next Submit")
		}
		// split a small batch evenly over the streams (16 images on 2
		// streams with micro-batch 8 is one step each; 10 is 5 + 5, not 8 + 2)
		j.mb = min(j.mb, (batch+len(n.streams)-1)/len(n.streams))
		procsForStreams(n.opt.Threads)
		blas.SetThreads(1)
		s.job, s.busy = j, true
		s.gen++
		tasks := (batch + j.mb - 1) / j.mb
		s.left.Store(int64(tasks))
		for i := 0; i < tasks; i++ {
			n.queue <- microTask{s, i}
		}
		for _, box := range n.work {
			box.post(taskDrain)
		}
		return Pending{s: s, gen: s.gen}, nil
	case n.work != nil:
		// fewer images than workers: each layer call is split over all of
		// them, caller included (worker 0's stream is the caller's)
		procsForSplit(n.opt.Threads, n.spin)
		blas.SetThreads(1)
		st := n.streams[0]
		st.split = true
		n.drain(st, j)
		st.split = false
	default:
		blas.SetThreads(n.opt.Threads)
		n.drain(n.streams[0], j)
	}
	return Pending{done: time.Now()}, nil
}

// Wait returns when the batch of p is done, with the time it finished.
func (n *Net) Wait(p Pending) time.Time {
	if p.s == nil {
		return p.done
	}
	p.s.done.waitFor(p.gen, false) // a whole batch: sleep, leave the cores to the workers
	end := p.s.end
	if p.s.gen == p.gen {
		p.s.busy = false
		p.s.job = job{}
	}
	return end
}

// settle waits until the batches in flight are done, without taking
// them off the caller's hands (Wait still returns at once for them).
func (n *Net) settle() {
	for i := range n.slots {
		if s := &n.slots[i]; s.busy {
			s.done.waitFor(s.gen, false)
		}
	}
}

func (n *Net) worker(st *stream, box *mailbox) {
	var seen uint64
	spin := true
	for {
		var t task
		t, seen = box.next(seen, spin)
		switch t {
		case taskStop:
			return
		case taskDrain:
			n.drainQueue(st)
			spin = false // the batches in flight are done: park at once
		case taskPart:
			n.sp.o.forwardPart(st, n.sp.dst, n.sp.src, n.sp.n, part{idx: st.idx, parts: n.sp.parts, q: n.claims})
			spin = n.spin // the next layer call is microseconds away
			if n.fin.add() {
				spin = false // a waiter woken (it waits on this processor): park at once
			}
		}
	}
}

// drainQueue runs queued micro-batches until the queue is empty.
func (n *Net) drainQueue(st *stream) {
	for {
		select {
		case t := <-n.queue:
			s := &t.s.job
			i0 := t.i * s.mb
			n.run1(st, *s, i0, min(s.mb, s.n-i0))
			if t.s.left.Add(-1) == 0 {
				t.s.end = time.Now()
				t.s.done.add()
			}
		default:
			return
		}
	}
}

// layer runs one op for m images on st, split over all workers when st is
// in split mode and the op can be split.
func (n *Net) layer(st *stream, o op, dst, src []float32, m int) {
	po, ok := o.(partOp)
	if !st.split || !ok {
		o.forward(st, dst, src, m)
		return
	}
	parts := len(n.work)
	n.sp = splitCall{o: po, dst: dst, src: src, n: m, parts: parts}
	for i := range n.claims { // every part of the last call is done
		n.claims[i].Store(0)
	}
	for _, box := range n.work[1:] {
		box.post(taskPart)
	}
	po.forwardPart(st, dst, src, m, part{idx: 0, parts: parts, q: n.claims})
	n.posted += int64(parts - 1)
	n.fin.waitFor(n.posted, n.spin) // the other parts take about as long as ours
	n.sp = splitCall{}
}

// drain runs a batch on the caller's stream, micro-batch by micro-batch.
func (n *Net) drain(st *stream, j job) {
	for i0 := 0; i0 < j.n; i0 += j.mb {
		n.run1(st, j, i0, min(j.mb, j.n-i0))
	}
}

// run1 runs images i0..i0+m-1 of j on st.
func (n *Net) run1(st *stream, j job, i0, m int) {
	var logits, maps []float32
	if j.logits != nil {
		logits = j.logits[i0*n.classes : (i0+m)*n.classes]
	}
	if j.maps != nil {
		ml := n.MapDims().Len()
		maps = j.maps[i0*ml : (i0+m)*ml]
	}
	n.micro(st, j.x[i0*n.inLen:(i0+m)*n.inLen], m, j.probs[i0*n.classes:(i0+m)*n.classes], logits, maps)
}

// micro runs m images through the whole network in one stream's buffers.
func (n *Net) micro(st *stream, x []float32, m int, probs, logits, maps []float32) {
	src := x
	dst := st.a
	for i, o := range n.run {
		if maps != nil && n.fc != nil && i == len(n.run)-1 {
			fcMaps(maps, src, n.fc, m)
		}
		if c, ok := o.(*conv); ok && n.observe != nil {
			n.observe(c.name, src[:m*c.g.H*c.g.W*c.g.C])
		}
		n.layer(st, o, dst, src, m)
		src = dst
		if &dst[0] == &st.a[0] {
			dst = st.b
		} else {
			dst = st.a
		}
	}
	if maps != nil && n.fc == nil {
		copy(maps, src[:len(maps)])
	}
	native.GAP(st.logits, src, m, n.gapHW, n.classes)
	if logits != nil {
		copy(logits, st.logits[:m*n.classes])
	}
	native.Softmax(probs, st.logits, m, n.classes)
}

// ISA names the instruction set the net's kernels run (native.Current).
func (n *Net) ISA() string {
	switch n.opt.Precision {
	case PrecisionBF16:
		if k := native.BF16Kernel(); k == native.BF16AMX {
			return native.Current().String() + "+amx-bf16"
		} else {
			return native.Current().String() + "+" + k
		}
	case PrecisionInt8:
		return native.Current().String() + "+" + native.Int8Kernel() + "-int8"
	}
	return native.Current().String()
}

// Precision is the arithmetic of the conv GEMMs: PrecisionFP32, PrecisionBF16
// or PrecisionInt8.
func (n *Net) Precision() string { return n.opt.Precision }

// fcMaps writes the fc head's class maps: pixel p's share of each logit,
// scaled by the pixel count so that the maps' mean is the logit.
//
//	maps: (m, HW, classes)  f: (m, HW, C)  fc.W: (classes, HW, C)
func fcMaps(maps, f []float32, fc *ConvParams, m int) {
	hw, c := fc.K*fc.K, fc.Cin
	scale := float32(hw)
	for i := 0; i < m; i++ {
		for p := 0; p < hw; p++ {
			fp := f[(i*hw+p)*c : (i*hw+p+1)*c]
			out := maps[(i*hw+p)*fc.Cout : (i*hw+p+1)*fc.Cout]
			for k := range out {
				w := fc.W[(k*hw+p)*c : (k*hw+p+1)*c]
				var sum float32
				for j, v := range fp {
					sum += w[j] * v
				}
				out[k] = scale*sum + fc.B[k]
			}
		}
	}
}
