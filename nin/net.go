package nin

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/ninbatch/ninbatch/blas"
	"github.com/ninbatch/ninbatch/native"
)

// Mode selects how a Net uses several cores.
type Mode string

const (
	// ModeAuto runs streams when the batch has at least Threads images;
	// otherwise (batch 1 on 2 cores) one stream whose conv calls are each
	// split over all the workers, OpenBLAS at 1 thread in every part.
	ModeAuto Mode = "auto"
	// ModeStreams runs one single-threaded stream per core: each stream
	// takes whole micro-batches of images through the whole network with
	// OpenBLAS at 1 thread, so every core works on its own cache-sized data.
	ModeStreams Mode = "streams"
	// ModeBLAS runs one stream and lets OpenBLAS split each GEMM over
	// Threads threads; im2col, pooling and the epilogues run on one core.
	ModeBLAS Mode = "blas"
)

// Options configure a Net. Zero values pick defaults.
type Options struct {
	MaxBatch   int  // largest batch Forward accepts (default 64)
	Threads    int  // cores to use (default runtime.NumCPU())
	Mode       Mode // default ModeAuto
	MicroBatch int  // images per stream step (default 8, at most MaxBatch)
	TileBytes  int  // im2col tile budget per stream in bytes (default 4 MiB)
	// Winograd selects which stride-1 3×3 and 5×5 convs run as Winograd
	// F(m×m, r×r) instead of im2col + GEMM (default WinogradAuto).
	Winograd Winograd
	// WinoTile is the Winograd output tile m: 2 or 4, or 0 to pick per
	// layer the one with fewer multiplications (see winoTile).
	WinoTile int
	// Direct selects the direct kernel for convs over few input channels
	// (default DirectAuto).
	Direct DirectConv
	// GEMM selects the GEMM of the conv layers: the packed-weight kernel
	// or OpenBLAS (default GEMMAuto).
	GEMM GEMM
	// Unfused runs every conv as a separate layer call; by default, with
	// the packed GEMM, a conv and the 1×1 convs after it run tile by tile
	// as one chain, and are split over the workers as one call at batch <
	// Threads (see chainOp).
	Unfused bool
}

// GEMM is the switch of the conv layers' matrix products.
type GEMM string

const (
	// GEMMAuto runs the conv GEMMs (1×1 convs, im2col tiles, Winograd
	// products) with the packed-weight kernel (native.GemmPacked) when
	// the CPU has AVX2+FMA and each GEMM runs on one core (ModeStreams, or
	// ModeAuto); with ModeBLAS, or without AVX2, they stay on OpenBLAS.
	//
	// The weights are packed once when the Net is built, so a call packs
	// nothing and reads the activations in place, and the bias+ReLU
	// epilogue is fused. OpenBLAS packs both operands on every call; on
	// NIN's shapes, at 1 thread, the packed kernel took 0.45–0.95× the
	// time of OpenBLAS sgemm + the bias pass (native.BenchmarkGemmPacked:
	// nin-mnist's 1×1 convs 0.65–0.8×, its batch-1 Winograd products
	// 0.45×, nin-imagenet's 1024-channel cccp7 0.95×).
	GEMMAuto GEMM = "auto"
	// GEMMOpenBLAS runs every conv GEMM through OpenBLAS sgemm.
	GEMMOpenBLAS GEMM = "openblas"
	// GEMMPacked runs every conv GEMM through the packed-weight kernel,
	// also with ModeBLAS (then on one core) and without AVX2 (then scalar).
	GEMMPacked GEMM = "packed"
)

// usePacked resolves the GEMM switch for a Net or Trainer: whether its conv
// GEMMs run on the packed-weight kernel.
func usePacked(g GEMM, mode Mode) (bool, error) {
	switch g {
	case GEMMAuto, "":
		return native.GemmFast() && mode != ModeBLAS, nil
	case GEMMOpenBLAS:
		return false, nil
	case GEMMPacked:
		return true, nil
	}
	return false, fmt.Errorf("nin: gemm %q: want auto, openblas or packed", g)
}

// Winograd is the Winograd switch of a Net.
type Winograd string

const (
	// WinogradAuto uses Winograd where it pays on this layer's shapes: at
	// least 16 input channels (the GEMM depth) and 16 tiles per micro-batch.
	WinogradAuto Winograd = "auto"
	// WinogradOff runs every conv as im2col + GEMM.
	WinogradOff Winograd = "off"
	// WinogradOn uses Winograd for every stride-1 3×3 and 5×5 conv.
	WinogradOn Winograd = "on"
)

// DirectConv is the switch of the direct kernel for convs over few input
// channels (native.ConvDirect).
type DirectConv string

const (
	// DirectAuto runs k×k convs with fewer than 8 input channels (the
	// presets' first convs, whose im2col GEMM has K = 25, 75 or 363) with
	// the direct kernel where it beats im2col + GEMM: with OpenBLAS or the
	// AVX2 packed GEMM (1.3–2× per layer, native.BenchmarkFirstConv), not
	// with the AVX-512 packed GEMM (see directPays).
	DirectAuto DirectConv = "auto"
	// DirectOff runs them as im2col + GEMM.
	DirectOff DirectConv = "off"
	// DirectOn runs them with the direct kernel whatever the GEMM.
	DirectOn DirectConv = "on"
)

// fastPathDefaults fills in and checks the Winograd and direct-conv
// switches (shared by Net and Trainer).
func fastPathDefaults(w *Winograd, d *DirectConv, tile int) error {
	if *w == "" {
		*w = WinogradAuto
	}
	if *d == "" {
		*d = DirectAuto
	}
	switch {
	case *w != WinogradAuto && *w != WinogradOff && *w != WinogradOn:
		return fmt.Errorf("nin: winograd %q: want auto, off or on", *w)
	case *d != DirectAuto && *d != DirectOff && *d != DirectOn:
		return fmt.Errorf("nin: direct-conv %q: want auto, on or off", *d)
	case tile != 0 && tile != 2 && tile != 4:
		return fmt.Errorf("nin: Winograd tile %d: want 2 or 4 (0 = per layer)", tile)
	}
	return nil
}

// spinMACs: a net of at most this many multiply-adds an image (nin-mnist,
// 50 M; not nin-cifar10, 222 M) waits for the parts of its split layer
// calls by spinning. Its layers are tens of µs apart, less than a thread
// wake-up; bigger nets lost 15% at batch 1 to the spins (docs/benchmarks.md).
const spinMACs = 100_000_000

// directMaxCin is the largest input channel count DirectAuto takes.
const directMaxCin = 7

// directPays: DirectAuto uses the direct kernel (AVX2 at best) unless the
// conv GEMMs run on the AVX-512 packed kernel, which ran the whole net
// faster with the first conv as im2col + GEMM (docs/benchmarks.md).
func directPays(packed bool) bool { return !packed || native.Current() < native.AVX512 }

// useDirect: whether a conv with cin input channels runs the direct kernel.
func useDirect(d DirectConv, k, cin int, packed bool) bool {
	return k > 1 && cin <= directMaxCin && (d == DirectOn || d == DirectAuto && directPays(packed))
}

// winoTile is the Winograd output tile m of a k×k stride-1 conv with an
// oh × ow output: forced when 2 or 4, else the m of F(2×2, k×k) and
// F(4×4, k×k) that needs fewer multiplications, tiles·(m+k−1)², counting the
// padding of partial edge tiles (ties go to 2: cheaper transforms, smaller
// error). The float32 error of all four stays within 1e-5 of the output's
// scale (native.TestWinoConvMatchesDirect: 4e-7 F(2,3), 7e-6 F(4,3),
// 6e-6 F(2,5), 1e-5 F(4,5)). F(4×4, 5×5) multiplies 2.25× less than
// F(2×2, 5×5) on a 16×16 map, and 6.25× less than the direct conv.
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

// Net is a network built for inference: every buffer is allocated once for
// Options.MaxBatch and Forward allocates nothing. A Net is used by one
// goroutine at a time; Close stops its workers.
type Net struct {
	spec    Spec
	layers  []Layer
	params  *Params
	ops     []op // one per conv and pool layer, in order (see run)
	opt     Options
	inLen   int // H·W·C of one input image
	classes int
	gapHW   int  // spatial size of the last feature map
	packed  bool // conv GEMMs on native.GemmPacked

	streams []*stream
	work    []*mailbox // one per worker goroutine (nil: no workers)
	fin     *tally     // parts finished by the workers
	posted  int64      // parts handed to the workers so far (the caller's count)
	spin    bool       // split calls wait by spinning (see spinMACs)
	next    atomic.Int64
	closed  bool

	// what micro runs: ops with each conv and the 1×1 convs after it fused
	// into a chainOp, when the packed GEMM runs them (unless
	// Options.Unfused); else ops itself
	run []op

	// what the workers run: the batch of the current Forward (streams), or
	// the layer call being split over them (batch < threads)
	cur job
	sp  splitCall
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

// partOp is a layer whose call can be split: part p of parts computes a
// disjoint share of dst, with the scratch buffers of stream st.
type partOp interface {
	forwardPart(st *stream, dst, src []float32, n, part, parts int)
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

// channelShare is part p of the cout channels, in multiples of 16: one
// panel of the packed GEMM (native.PanelCols), and two vectors of the
// epilogues and the Winograd output transform.
func channelShare(cout, part, parts int) (lo, hi int) {
	const q = native.PanelCols
	lo, hi = share((cout+q-1)/q, part, parts)
	return min(lo*q, cout), min(hi*q, cout)
}

// stream is one worker's private buffers for a micro-batch of mb images.
type stream struct {
	a, b   []float32    // (mb, maxAct) ping-pong activations, NHWC per image
	col    []float32    // (tileRows, maxK) im2col tile
	logits []float32    // (mb, classes)
	wv     []float32    // (a·a, WinoStride(chunk, Cin)) Winograd input transform
	wm     []float32    // (a·a, WinoStride(chunk, Cout)) Winograd products
	ct     [2][]float32 // (chain tile, C) a chainOp's intermediate maps, ping-pong
	idx    int          // worker index: the part this stream computes in a split call
	split  bool         // layer calls on this stream are split over all workers
}

type job struct {
	x, probs, logits []float32
	n                int
	mb               int // images per micro-batch for this job
}

// op is one inference layer: it reads src and writes dst for n images.
type op interface {
	forward(st *stream, dst, src []float32, n int)
}

// convOp is a conv + bias + ReLU. A 1×1/s1/p0 conv is a plain GEMM over the
// (n·H·W, Cin) activation; a k×k conv is im2col in row tiles, one GEMM per tile.
//
//	src: (n, H, W, Cin)  dst: (n, OH, OW, Cout)
type convOp struct {
	g        native.Geom // N is set per call
	p        *ConvParams
	relu     bool
	oneByOne bool
	tileRows int
	name     string
	wt       []float32 // (K·K·Cin, ws) weights of the direct kernel; nil: im2col + GEMM
	ws       int
	bp       []float32 // PackLen(K·K·Cin, Cout): W packed for native.GemmPacked; nil: OpenBLAS
}

// pack lays out the weights for the packed GEMM (again after they change).
func (o *convOp) pack() {
	k := o.p.Cin * o.p.K * o.p.K
	native.PackB(o.bp, o.p.W, k, o.p.Cout, k, true)
}

// rows computes output pixels [r0, r0+nr) of n images, every channel, into
// out (nr, Cout).
func (o *convOp) rows(st *stream, out, src []float32, n, r0, nr int) {
	g := o.g
	g.N = n
	cout := o.p.Cout
	switch {
	case o.wt != nil:
		native.ConvDirect(out, src, o.wt, o.ws, o.p.B, g, cout, o.relu, r0, nr, st.col)
	case o.oneByOne:
		o.gemm(out, src[r0*o.p.Cin:(r0+nr)*o.p.Cin], nr, o.p.Cin, 0, cout)
	default:
		k := g.Cols()
		for t0 := r0; t0 < r0+nr; t0 += o.tileRows {
			tn := min(o.tileRows, r0+nr-t0)
			native.Im2col(st.col[:tn*k], src, g, t0, tn)
			o.gemm(out[(t0-r0)*cout:(t0-r0+tn)*cout], st.col[:tn*k], tn, k, 0, cout)
		}
	}
}

// gemm computes channels [c0, c1) of act(a·Wᵀ + bias) for a (nr, k):
// out[r·Cout + c − c0], an (nr, Cout) map starting at channel c0.
func (o *convOp) gemm(out, a []float32, nr, k, c0, c1 int) {
	cout := o.p.Cout
	bias := o.p.B[c0:c1]
	if o.bp != nil {
		native.GemmPacked(out, cout, a, k, o.bp, k, cout, c0, c1, nr, bias, o.relu)
		return
	}
	blas.Sgemm(false, true, nr, c1-c0, k, 1, a, k, o.p.W[c0*k:c1*k], k, 0, out, cout)
	native.BiasAct(out, nr, c1-c0, cout, bias, o.relu)
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
	stages []*convOp // stages[0]: a direct, im2col or 1×1 conv; the rest 1×1
	tile   int       // output pixels per tile
}

// A chain tile's intermediate maps are at most chainTileBytes. Chains whose
// 1×1 weights are over chainWeightBytes are not built: cut by pixels, every
// part reads all the weights, where separate convs are cut by channels when
// the rows are few (see byChannels).
const (
	chainTileBytes   = 128 << 10
	chainWeightBytes = 256 << 10
)

func (o *chainOp) forward(st *stream, dst, src []float32, n int) {
	o.forwardPart(st, dst, src, n, 0, 1)
}

// forwardPart computes output pixels share(rows, part, parts) of every
// stage.
func (o *chainOp) forwardPart(st *stream, dst, src []float32, n, part, parts int) {
	g := o.stages[0].g
	g.N = n
	lo, hi := share(g.Rows(), part, parts)
	last := len(o.stages) - 1
	for r0 := lo; r0 < hi; r0 += o.tile {
		nr := min(o.tile, hi-r0)
		var in []float32
		for i, s := range o.stages {
			out := dst[r0*s.p.Cout : (r0+nr)*s.p.Cout]
			if i < last {
				out = st.ct[i%2][:nr*s.p.Cout]
			}
			if i == 0 {
				s.rows(st, out, src, n, r0, nr)
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
func fuseChains(ops []op) ([]op, int) {
	var fused []op
	scratch := 0
	for i := 0; i < len(ops); {
		c, ok := ops[i].(*convOp)
		j := i + 1
		for ok && j < len(ops) {
			if n, is := ops[j].(*convOp); !is || !n.oneByOne {
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
			s := o.(*convOp)
			ch.stages = append(ch.stages, s)
			perPixel += s.p.Cout
			if s.oneByOne {
				weights += s.p.Cin * s.p.Cout
			}
		}
		if 4*weights > chainWeightBytes {
			fused = append(fused, ops[i:j]...)
			i = j
			continue
		}
		ch.tile = max(24, min(1024, chainTileBytes/(4*perPixel)/6*6))
		if c.wt == nil && !c.oneByOne {
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

func (o *convOp) forward(st *stream, dst, src []float32, n int) {
	o.forwardPart(st, dst, src, n, 0, 1)
}

// forwardPart computes part of the output: rows share(rows, part, parts)
// for all channels, or all rows for channels channelShare(cout, part,
// parts) when byChannels says so.
func (o *convOp) forwardPart(st *stream, dst, src []float32, n, part, parts int) {
	g := o.g
	g.N = n
	rows, cout := g.Rows(), o.p.Cout
	lo, hi := share(rows, part, parts)
	if o.wt != nil {
		native.ConvDirect(dst[lo*cout:hi*cout], src, o.wt, o.ws, o.p.B, g, cout, o.relu, lo, hi-lo, st.col)
		return
	}
	c0, c1 := 0, cout
	if byChannels(rows, cout, parts) {
		lo, hi = 0, rows
		c0, c1 = channelShare(cout, part, parts)
		if c0 == c1 {
			return
		}
	}
	k := g.Cols()
	if o.oneByOne {
		k = o.p.Cin
	}
	for r0 := lo; r0 < hi; r0 += o.tileRows {
		nr := min(o.tileRows, hi-r0)
		var a []float32 // (nr, k): the activations themselves for a 1×1 conv
		if o.oneByOne {
			a = src[r0*k : (r0+nr)*k]
		} else {
			a = st.col[:nr*k]
			native.Im2col(a, src, g, r0, nr)
		}
		o.gemm(dst[r0*cout+c0:(r0+nr-1)*cout+c1], a, nr, k, c0, c1)
	}
}

// winoOp is a stride-1 k×k conv + bias + ReLU as Winograd F(m×m, k×k): per
// chunk of tiles, the input transform, one GEMM per transform position
// (a·a of them, each (tiles, Cin) × (Cin, Cout)) and the output transform
// with bias and ReLU fused.
//
//	src: (n, H, W, Cin)  dst: (n, OH, OW, Cout)
type winoOp struct {
	name   string
	w      native.Wino // N is set per call
	p      *ConvParams
	u      []float32 // (a·a, Cin, Cout) transformed filters, each position's block transposed; nil when up is set
	ut     []float32 // (Cout, Cin) scratch of the transpose
	up     []float32 // (a·a, PackLen(Cin, Cout)) u packed for native.GemmPacked; nil: OpenBLAS
	at, bt []float32 // (m, a) and (a, a) transforms
	gm     []float64 // (a, k) filter transform, kept for Reload
	k      int
	relu   bool
	chunk  int // tiles per chunk
}

func (o *winoOp) forward(st *stream, dst, src []float32, n int) {
	o.forwardPart(st, dst, src, n, 0, 1)
}

// forwardPart computes the output tiles share(tiles, part, parts), or all
// tiles for channels channelShare(cout, part, parts) when byChannels says
// so (every part then repeats the input transform, a few % of the layer).
func (o *winoOp) forwardPart(st *stream, dst, src []float32, n, part, parts int) {
	w := o.w
	w.G.N = n
	cin, cout, aa := o.p.Cin, o.p.Cout, w.A*w.A
	lo, hi := share(w.Tiles(), part, parts)
	c0, c1 := 0, cout
	if byChannels(w.Tiles(), cout, parts) {
		lo, hi = 0, w.Tiles()
		c0, c1 = channelShare(cout, part, parts)
		if c0 == c1 {
			return
		}
	}
	nc := c1 - c0
	for t0 := lo; t0 < hi; t0 += o.chunk {
		nt := min(o.chunk, hi-t0)
		vs, ms := native.WinoStride(nt, cin), native.WinoStride(nt, nc)
		v, m := st.wv[:aa*vs], st.wm[:aa*ms]
		native.WinoIn(v, src, w, o.bt, t0, nt)
		for pos := 0; pos < aa; pos++ {
			a, mm := v[pos*vs:pos*vs+nt*cin], m[pos*ms:pos*ms+nt*nc]
			if o.up != nil {
				pl := native.PackLen(cin, cout)
				native.GemmPacked(mm, nc, a, cin, o.up[pos*pl:(pos+1)*pl], cin, cout, c0, c1, nt, nil, false)
				continue
			}
			u := o.u[pos*cin*cout:]
			blas.Sgemm(false, false, nt, nc, cin, 1, a, cin, u[c0:(cin-1)*cout+c1], cout, 0, mm, nc)
		}
		native.WinoOut(dst[c0:], m, w, nc, cout, o.at, o.p.B[c0:c1], o.relu, t0, nt)
	}
}

// newWinoOp builds the Winograd form of a conv, or returns nil when the
// switch and the layer's shapes say im2col + GEMM.
func newWinoOp(l Layer, g native.Geom, p *ConvParams, relu, packed bool, opt Options) (*winoOp, error) {
	if opt.Winograd == WinogradOff || l.s != 1 || (l.k != 3 && l.k != 5) {
		return nil, nil
	}
	winoM := winoTile(l.k, l.Out.H, l.Out.W, opt.WinoTile)
	tilesPerImage := ((l.Out.H + winoM - 1) / winoM) * ((l.Out.W + winoM - 1) / winoM)
	if opt.Winograd == WinogradAuto && (p.Cin < 16 || tilesPerImage*opt.MicroBatch < 16) {
		return nil, nil
	}
	at, gm, bt, err := native.WinoMatrices(winoM, l.k)
	if err != nil {
		return nil, err
	}
	g.N = opt.MicroBatch
	w := native.NewWino(g, winoM)
	aa := w.A * w.A
	o := &winoOp{name: l.Name, w: w, p: p, relu: relu, at: native.Float32s(at), bt: native.Float32s(bt), gm: gm, k: l.k,
		u: make([]float32, aa*p.Cout*p.Cin), ut: make([]float32, p.Cout*p.Cin)}
	if packed { // the packed filters replace u, which is then only the packing's source
		o.up = make([]float32, aa*native.PackLen(p.Cin, p.Cout))
		o.u = nil
	}
	o.transformFilters()
	// Chunks of tiles within twice the im2col tile budget (4 MiB by
	// default), balanced: the chunk is the M of every GEMM, and the K = Cin
	// products run far below OpenBLAS's peak at M = 32 (BenchmarkLayers:
	// cifar mlpconv2.0 in one 64-tile chunk takes 0.6× the time of 2 × 32).
	//
	// The packed GEMM runs near its peak from M = 16, so there the chunk's
	// transform buffers (V and M) shrink to the size of the transformed
	// filters, which every chunk reads once, when that is smaller (at least
	// 512 KiB): nin-mnist's mlpconv2.0 (1.5 MB of filters) then keeps its
	// buffers in L2/L3 and took 360–400 µs/img against 430–560 with 8 MB
	// chunks; nin-imagenet's mlpconv3.0/4.0 (21 and 56 MB of filters) took
	// 1.5–2.5× longer with 1–2 MB chunks than with 8 MB (BenchmarkLayers with
	// NINBATCH_BENCH_TILE_KIB 128..4096).
	budget := 2 * opt.TileBytes
	if packed {
		budget = min(budget, max(512<<10, 4*aa*p.Cin*p.Cout))
	}
	chunk := min(w.Tiles(), max(8, budget/(4*aa*(p.Cin+p.Cout))))
	chunks := (w.Tiles() + chunk - 1) / chunk
	o.chunk = (w.Tiles() + chunks - 1) / chunks
	return o, nil
}

// transformFilters fills u from the layer's weights: U = G·w·Gᵀ per
// (Cout, Cin) pair, then each transform position's (Cout, Cin) block
// transposed to (Cin, Cout), so the products are NN GEMMs: OpenBLAS ran the
// (tiles, Cin)·(Cin, Cout) shapes 5–15% faster untransposed than with the
// (Cout, Cin) block transposed on the fly (M = 32..128, K = 48..192).
func (o *winoOp) transformFilters() {
	cin, cout, aa := o.p.Cin, o.p.Cout, o.w.A*o.w.A
	u := o.u
	if u == nil { // packed: u is only the packing's source
		u = make([]float32, aa*cout*cin)
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
		if o.up != nil {
			pl := native.PackLen(cin, cout)
			native.PackB(o.up[pos*pl:(pos+1)*pl], blk, cin, cout, cout, false)
		}
	}
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
	if o.max {
		native.MaxPool(dst, nil, src, g)
	} else {
		native.AvePool(dst, src, g)
	}
}

// NewNet builds an inference network for a model.
func NewNet(m *Model, opt Options) (*Net, error) {
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
	if opt.MaxBatch == 0 {
		opt.MaxBatch = 64
	}
	if opt.Threads == 0 {
		opt.Threads = runtime.NumCPU()
	}
	if opt.Mode == "" {
		opt.Mode = ModeAuto
	}
	if opt.TileBytes == 0 {
		opt.TileBytes = 4 << 20
	}
	if err := fastPathDefaults(&opt.Winograd, &opt.Direct, opt.WinoTile); err != nil {
		return nil, err
	}
	if opt.GEMM == "" {
		opt.GEMM = GEMMAuto
	}
	packed, err := usePacked(opt.GEMM, opt.Mode)
	if err != nil {
		return nil, err
	}
	switch {
	case opt.MaxBatch < 1 || opt.MaxBatch > 1<<16:
		return nil, fmt.Errorf("nin: max batch %d out of range 1..65536", opt.MaxBatch)
	case opt.Threads < 1 || opt.Threads > 256:
		return nil, fmt.Errorf("nin: threads %d out of range 1..256", opt.Threads)
	case opt.Mode != ModeAuto && opt.Mode != ModeStreams && opt.Mode != ModeBLAS:
		return nil, fmt.Errorf("nin: mode %q: want auto, streams or blas", opt.Mode)
	case opt.MicroBatch < 0 || opt.TileBytes < 4096:
		return nil, fmt.Errorf("nin: bad micro-batch %d or tile budget %d", opt.MicroBatch, opt.TileBytes)
	}
	if opt.MicroBatch == 0 {
		// 8 images per step: the Winograd products are GEMMs with M =
		// tiles × micro-batch and K = Cin, and OpenBLAS runs them far below
		// its peak when M is small (64 tiles for one nin-cifar10 image).
		// Measured against ~1000 first-layer pixels (1–2 images) at batch
		// 64 on 2 threads, CPU per image fell 10–30% (docs/benchmarks.md,
		// "Micro-batches").
		//
		// With the packed GEMM, whose speed does not depend on M, small
		// images go 4 at a time: nin-mnist (largest activation 294 KiB per
		// image) paired 0.94 of the time at 4 as at 8, twice, and 1.06 at
		// 2; nin-cifar10 (768 KiB) 0.99 and nin-imagenet (1.1 MiB) 1.03 at 4.
		opt.MicroBatch = 8
		if packed && 4*maxActivation(layers, m.Spec.Input.Len()) <= 512<<10 {
			opt.MicroBatch = 4
		}
	}
	opt.MicroBatch = min(opt.MicroBatch, opt.MaxBatch)

	net := &Net{spec: m.Spec, layers: layers, params: m.Params, opt: opt,
		inLen: m.Spec.Input.Len(), classes: m.Spec.Classes(), packed: packed}
	if len(m.Params.Convs) == 0 || len(m.Params.Data) == 0 {
		return nil, errors.New("nin: model has no parameters")
	}
	maxAct, maxCol, maxWV, maxWM := net.inLen, 0, 0, 0
	ci := 0
	for i, l := range layers {
		maxAct = max(maxAct, l.Out.Len())
		g := native.Geom{H: l.In.H, W: l.In.W, C: l.In.C, K: l.k, S: l.s, P: l.p, OH: l.Out.H, OW: l.Out.W}
		switch l.kind {
		case kindConv:
			if ci >= len(m.Params.Convs) {
				return nil, errors.New("nin: parameters do not match the spec")
			}
			p := &m.Params.Convs[ci]
			ci++
			if p.Cin != l.In.C || p.Cout != l.Out.C || p.K != l.k {
				return nil, fmt.Errorf("nin: parameters of %s do not match the spec", l.Name)
			}
			lastConv := i+1 < len(layers) && layers[i+1].kind == kindGAP
			relu := !(lastConv && m.Spec.NoFinalReLU)
			wo, err := newWinoOp(l, g, p, relu, packed, opt)
			if err != nil {
				return nil, fmt.Errorf("nin: %s: %w", l.Name, err)
			}
			if wo != nil {
				aa := wo.w.A * wo.w.A
				maxWV = max(maxWV, aa*native.WinoStride(wo.chunk, p.Cin))
				maxWM = max(maxWM, aa*native.WinoStride(wo.chunk, p.Cout))
				net.ops = append(net.ops, wo)
				continue
			}
			o := &convOp{g: g, p: p, relu: relu, oneByOne: l.k == 1 && l.s == 1 && l.p == 0, name: l.Name}
			if useDirect(opt.Direct, l.k, p.Cin, packed) {
				o.wt, o.ws = native.DirectWeights(p.W, p.Cout, l.GemmK)
				maxCol = max(maxCol, native.DirectPadLen(g))
				net.ops = append(net.ops, o)
				continue
			}
			if packed {
				o.bp = make([]float32, native.PackLen(l.GemmK, p.Cout))
				o.pack()
			}
			rowsPerImage := l.Out.H * l.Out.W
			rows := rowsPerImage * opt.MicroBatch
			width := l.GemmK
			if o.oneByOne {
				width = max(l.In.C, l.Out.C)
			}
			o.tileRows = max(64, opt.TileBytes/(4*width))
			o.tileRows = min(o.tileRows, rows)
			if !o.oneByOne {
				maxCol = max(maxCol, o.tileRows*l.GemmK)
			}
			net.ops = append(net.ops, o)
		case kindPool:
			net.ops = append(net.ops, &poolOp{g: g, max: l.pool.Type == "max"})
		case kindGAP:
			net.gapHW = l.In.H * l.In.W
		}
	}
	net.run = net.ops
	maxCT := 0
	if packed && !opt.Unfused {
		net.run, maxCT = fuseChains(net.ops)
	}
	mb := opt.MicroBatch
	for i := 0; i < opt.Threads; i++ {
		st := &stream{
			a:      make([]float32, mb*maxAct),
			b:      make([]float32, mb*maxAct),
			col:    make([]float32, maxCol),
			logits: make([]float32, mb*net.classes),
			wv:     make([]float32, maxWV),
			wm:     make([]float32, maxWM),
			ct:     [2][]float32{make([]float32, maxCT), make([]float32, maxCT)},
			idx:    i,
		}
		net.streams = append(net.streams, st)
	}
	if opt.Threads > 1 && opt.Mode != ModeBLAS {
		net.fin = newTally()
		_, macs := Totals(layers)
		net.spin = macs <= spinMACs
		for _, st := range net.streams {
			box := newMailbox()
			net.work = append(net.work, box)
			go net.worker(st, box)
		}
	}
	return net, nil
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
	n.closed = true
	for _, box := range n.work {
		box.post(taskStop)
	}
}

// Options returns the options the net was built with, defaults filled in.
func (n *Net) Options() Options { return n.opt }

// Layers returns the planned layers.
func (n *Net) Layers() []Layer { return n.layers }

// WinogradLayers names the convs that run as Winograd F(m×m, k×k).
func (n *Net) WinogradLayers() []string {
	var names []string
	for _, o := range n.ops {
		if w, ok := o.(*winoOp); ok {
			names = append(names, w.name)
		}
	}
	return names
}

// WinogradForms describes each Winograd conv as "name F(m×m,k×k)".
func (n *Net) WinogradForms() []string {
	var forms []string
	for _, o := range n.ops {
		if w, ok := o.(*winoOp); ok {
			forms = append(forms, fmt.Sprintf("%s F(%dx%d,%dx%d)", w.name, w.w.M, w.w.M, w.k, w.k))
		}
	}
	return forms
}

// Reload recomputes the weight layouts the net derives from the model's
// parameters when it is built (Winograd-transformed filters, the direct
// kernel's transposed weights). Call it after changing the parameters in
// place, as training does between validation passes; the other layers read
// the parameters directly.
func (n *Net) Reload() {
	for _, o := range n.ops {
		reloadOp(o)
	}
}

// reloadOp recomputes an op's weights derived from its parameters, in place.
func reloadOp(o op) {
	switch o := o.(type) {
	case *winoOp:
		o.transformFilters()
	case *convOp:
		if o.wt != nil {
			native.DirectWeightsInto(o.wt, o.p.W, o.p.Cout, o.g.Cols())
		}
		if o.bp != nil {
			o.pack()
		}
	}
}

// PackedGEMM reports whether the conv GEMMs run on the packed-weight
// kernel (see GEMMAuto) rather than OpenBLAS.
func (n *Net) PackedGEMM() bool { return n.packed }

// DirectLayers names the convs that run with the direct kernel.
func (n *Net) DirectLayers() []string {
	var names []string
	for _, o := range n.ops {
		if c, ok := o.(*convOp); ok && c.wt != nil {
			names = append(names, c.name)
		}
	}
	return names
}

// Classes is the number of outputs per image.
func (n *Net) Classes() int { return n.classes }

// InputLen is the number of float32 values of one input image (H·W·C).
func (n *Net) InputLen() int { return n.inLen }

// Forward runs the network on a batch.
//
//	x:      (batch, H, W, C) preprocessed input, NHWC; not modified
//	probs:  (batch, classes) softmax output
//	logits: (batch, classes) global-average-pooled scores, or nil
func (n *Net) Forward(x []float32, batch int, probs, logits []float32) error {
	switch {
	case n.closed:
		return errors.New("nin: Forward on a closed Net")
	case batch < 0 || batch > n.opt.MaxBatch:
		return fmt.Errorf("nin: batch %d out of range 0..%d", batch, n.opt.MaxBatch)
	case len(x) < batch*n.inLen:
		return fmt.Errorf("nin: input has %d values, batch %d needs %d", len(x), batch, batch*n.inLen)
	case len(probs) < batch*n.classes:
		return fmt.Errorf("nin: probs has room for %d values, batch %d needs %d", len(probs), batch, batch*n.classes)
	case logits != nil && len(logits) < batch*n.classes:
		return fmt.Errorf("nin: logits has room for %d values, batch %d needs %d", len(logits), batch, batch*n.classes)
	}
	if batch == 0 {
		return nil
	}
	j := job{x: x, probs: probs, logits: logits, n: batch, mb: n.opt.MicroBatch}
	useStreams := n.work != nil && (n.opt.Mode == ModeStreams || batch >= n.opt.Threads)
	if useStreams {
		// split a small batch evenly over the streams (16 images on 2
		// streams with micro-batch 8 is one step each; 10 is 5 + 5, not 8 + 2)
		j.mb = min(j.mb, (batch+len(n.streams)-1)/len(n.streams))
	}
	n.next.Store(0)
	switch {
	case useStreams:
		blas.SetThreads(1)
		n.cur = j
		for _, box := range n.work {
			box.post(taskDrain)
		}
		n.posted += int64(len(n.work))
		n.fin.waitFor(n.posted, false) // a whole batch: sleep, leave the cores to the workers
		n.cur = job{}
	case n.work != nil:
		// fewer images than workers: each layer call is split over all of
		// them, caller included (worker 0's stream is the caller's)
		blas.SetThreads(1)
		st := n.streams[0]
		st.split = true
		n.drain(st, j)
		st.split = false
	default:
		blas.SetThreads(n.opt.Threads)
		n.drain(n.streams[0], j)
	}
	return nil
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
			n.drain(st, n.cur)
		case taskPart:
			n.sp.o.forwardPart(st, n.sp.dst, n.sp.src, n.sp.n, st.idx, n.sp.parts)
			spin = n.spin // the next layer call is microseconds away
		}
		if n.fin.add() || t == taskDrain {
			spin = false // a waiter woken (it waits on this processor), or a whole batch done: park at once
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
	for _, box := range n.work[1:] {
		box.post(taskPart)
	}
	po.forwardPart(st, dst, src, m, 0, parts)
	n.posted += int64(parts - 1)
	n.fin.waitFor(n.posted, n.spin) // the other parts take about as long as ours
	n.sp = splitCall{}
}

// drain takes micro-batches off the shared counter until the batch is done.
func (n *Net) drain(st *stream, j job) {
	mb := j.mb
	for {
		i0 := int(n.next.Add(1)-1) * mb
		if i0 >= j.n {
			return
		}
		m := min(mb, j.n-i0)
		var logits []float32
		if j.logits != nil {
			logits = j.logits[i0*n.classes : (i0+m)*n.classes]
		}
		n.micro(st, j.x[i0*n.inLen:(i0+m)*n.inLen], m, j.probs[i0*n.classes:(i0+m)*n.classes], logits)
	}
}

// micro runs m images through the whole network in one stream's buffers.
func (n *Net) micro(st *stream, x []float32, m int, probs, logits []float32) {
	src := x
	dst := st.a
	for _, o := range n.run {
		n.layer(st, o, dst, src, m)
		src = dst
		if &dst[0] == &st.a[0] {
			dst = st.b
		} else {
			dst = st.a
		}
	}
	native.GAP(st.logits, src, m, n.gapHW, n.classes)
	if logits != nil {
		copy(logits, st.logits[:m*n.classes])
	}
	native.Softmax(probs, st.logits, m, n.classes)
}

// ISA names the instruction set the net's kernels run (native.Current).
func (n *Net) ISA() string { return native.Current().String() }
