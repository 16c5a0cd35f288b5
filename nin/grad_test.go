package nin

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

// Caffe-style central-difference gradient checks. Each case is a tiny
// network that isolates one layer type in front of GAP + softmax
// cross-entropy (whose own gradient every case also exercises). The
// objective is the batch-mean loss computed by the same training forward.
//
// Kink exclusion: a finite difference is only valid when the ±h forwards
// take the same branches. Each forward's branch pattern (the ReLU sign
// pattern of every conv output and every max-pool argmax) is hashed; a
// parameter whose ±h patterns differ is skipped, and the test requires
// that almost all sampled parameters were checked.

func pattern(tr *Trainer) uint64 {
	h := fnv.New64a()
	st := tr.streams[0]
	for i, l := range tr.layers {
		switch l.kind {
		case kindConv:
			if !l.conv.relu {
				continue // no ReLU, no kink
			}
			var bits []byte
			for _, v := range st.slots[i].act {
				if v > 0 {
					bits = append(bits, 1)
				} else {
					bits = append(bits, 0)
				}
			}
			h.Write(bits)
		case kindPool:
			if a := st.slots[i].argmax; a != nil {
				h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&a[0])), 4*len(a)))
			}
		}
	}
	return h.Sum64()
}

type gradCase struct {
	name string
	spec Spec
	drop bool
}

func tinySpecs() []gradCase {
	return []gradCase{
		{"conv3x3_s2_p1_linear", Spec{Name: "t", Input: Dims{7, 6, 3}, NoFinalReLU: true,
			Blocks: []Block{{Kernel: 3, Stride: 2, Pad: 1, Channels: []int{4}}}}, false},
		{"conv5x5_p2_relu", Spec{Name: "t", Input: Dims{6, 6, 1},
			Blocks: []Block{{Kernel: 5, Stride: 1, Pad: 2, Channels: []int{5, 4}}}}, false},
		{"conv1x1_chain", Spec{Name: "t", Input: Dims{3, 4, 3}, NoFinalReLU: true,
			Blocks: []Block{{Kernel: 1, Stride: 1, Pad: 0, Channels: []int{6, 5, 4}}}}, false},
		{"conv11x11_s4", Spec{Name: "t", Input: Dims{15, 15, 3}, NoFinalReLU: true,
			Blocks: []Block{{Kernel: 11, Stride: 4, Pad: 0, Channels: []int{3}}}}, false},
		{"maxpool_ceil", Spec{Name: "t", Input: Dims{8, 7, 3}, NoFinalReLU: true,
			Blocks: []Block{{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{4}, Pool: &Pool{"max", 3, 2, 0}},
				{Kernel: 1, Stride: 1, Channels: []int{3}}}}, false},
		{"avepool_ceil", Spec{Name: "t", Input: Dims{8, 7, 3}, NoFinalReLU: true,
			Blocks: []Block{{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{4}, Pool: &Pool{"ave", 3, 2, 0}},
				{Kernel: 1, Stride: 1, Channels: []int{3}}}}, false},
		{"dropout", Spec{Name: "t", Input: Dims{6, 6, 1}, NoFinalReLU: true,
			Blocks: []Block{{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{4}, Pool: &Pool{"ave", 3, 2, 0}, Dropout: 0.5},
				{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{3}}}}, true},
		{"tiny_nin_end_to_end", Spec{Name: "t", Input: Dims{12, 12, 3}, Pooling: "ceil",
			Blocks: []Block{
				{Kernel: 5, Stride: 1, Pad: 2, Channels: []int{8, 6, 5}, Pool: &Pool{"max", 3, 2, 0}, Dropout: 0.5},
				{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{7, 6, 5}, Pool: &Pool{"ave", 3, 2, 0}, Dropout: 0.5},
				{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{6, 5, 4}},
			}}, true},
		// The fc head: a conv whose kernel is the whole 3×3 map, no ReLU,
		// then GAP over 1×1; with the head's dropout; over a 1×1 map.
		{"fc_head", Spec{Name: "t", Input: Dims{6, 6, 1}, Head: HeadFC,
			Blocks: []Block{{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{5, 4}, Pool: &Pool{"max", 3, 2, 0}}}}, false},
		{"fc_head_dropout", Spec{Name: "t", Input: Dims{6, 6, 1}, Head: HeadFC, HeadDropout: 0.5,
			Blocks: []Block{{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{5, 4}, Pool: &Pool{"ave", 3, 2, 0}, Dropout: 0.5}}}, true},
		{"fc_head_1x1_map", Spec{Name: "t", Input: Dims{3, 3, 3}, Head: HeadFC, NoFinalReLU: true,
			Blocks: []Block{{Kernel: 3, Stride: 1, Pad: 0, Channels: []int{6, 4}}}}, false},
	}
}

func TestGradientCheck(t *testing.T) {
	for _, c := range tinySpecs() {
		for _, gemm := range []GEMM{GEMMPacked, GEMMOpenBLAS} {
			t.Run(c.name+"/"+string(gemm), func(t *testing.T) { gradientCheck(t, c, gemm) })
		}
	}
}

// gradientCheck compares one tiny net's analytic gradients, with the conv
// GEMMs on gemm, against central differences of its loss.
func gradientCheck(t *testing.T, c gradCase, gemm GEMM) {
	m, err := NewModel(&c.spec)
	if err != nil {
		t.Fatal(err)
	}
	m.Params.InitHe(3)
	// Positive biases keep most ReLUs away from their kink.
	for _, cv := range m.Params.Convs {
		for i := range cv.B {
			cv.B[i] = 0.1 + 0.05*float32(i%3)
		}
	}
	const n = 3
	tr, err := NewTrainer(m, TrainOptions{MaxBatch: n, Threads: 1, Seed: 9, NoDropout: !c.drop, Tuning: Tuning{TileBytes: 1, GEMM: gemm}}) // 64-row tiles: several per conv
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range tr.layers { // the GEMM switch reaches every im2col and 1×1 conv
		if c := l.conv; c != nil && c.w != nil && c.w.Packed() != (gemm == GEMMPacked) {
			t.Fatalf("gemm %s: layer %s forward packed = %v", gemm, l.Name, c.w.Packed())
		}
	}
	x := randomInput(n, c.spec.Input.Len(), 4)
	labels := []int32{0, 2, 1}
	if c.spec.Classes() < 3 {
		t.Fatal("case needs 3 classes")
	}
	const step = 7
	tr.gradients(x, labels, n, step)
	analytic := append([]float32(nil), tr.streams[0].grads.Data...)

	r := rand.New(rand.NewPCG(5, 5))
	data := m.Params.Data
	idx := r.Perm(len(data))
	if len(idx) > 150 {
		idx = idx[:150]
	}
	checked, skipped := 0, 0
	var worst float64
	for _, i := range idx {
		orig := data[i]
		// Try a Caffe-sized step first, then a smaller one if the
		// larger step crossed a kink.
		numeric, ok := 0.0, false
		for _, h := range []float32{1e-2, 1e-3} {
			data[i] = orig + h
			lp := tr.lossAt(x, labels, n, step)
			pp := pattern(tr)
			data[i] = orig - h
			lm := tr.lossAt(x, labels, n, step)
			pm := pattern(tr)
			data[i] = orig
			if pp == pm {
				numeric, ok = (lp-lm)/(2*float64(h)), true
				break
			}
		}
		if !ok {
			skipped++
			continue
		}
		a := float64(analytic[i])
		scale := math.Max(math.Max(math.Abs(a), math.Abs(numeric)), 1e-2)
		rel := math.Abs(a-numeric) / scale
		worst = math.Max(worst, rel)
		if rel > 2e-2 {
			t.Errorf("param %d (%s): analytic %.6g numeric %.6g (rel %.3g)", i, paramName(m.Params, i), a, numeric, rel)
		}
		checked++
	}
	if checked < len(idx)/2 {
		t.Fatalf("only %d of %d parameters checked (%d skipped at kinks)", checked, len(idx), skipped)
	}
	t.Logf("%d params checked, %d skipped at kinks, worst rel err %.2e", checked, skipped, worst)
}

func paramName(p *Params, i int) string {
	off := 0
	for _, c := range p.Convs {
		if i < off+len(c.W) {
			return fmt.Sprintf("%s.weight[%d]", c.Name, i-off)
		}
		off += len(c.W)
		if i < off+len(c.B) {
			return fmt.Sprintf("%s.bias[%d]", c.Name, i-off)
		}
		off += len(c.B)
	}
	return "?"
}

// TestTrainerThreadsAgree: gradients summed over 2 streams equal the
// single-stream gradients (same dropout masks by construction).
// Micro-batches of 1 and 2 images (gradients summed over them) agree too.
func TestTrainerThreadsAgree(t *testing.T) {
	spec := tinySpecs()[7].spec
	var grads [][]float32
	var losses []float64
	var corrects []int
	cfgs := []struct{ threads, mb int }{{1, 0}, {2, 0}, {1, 2}, {2, 1}, {1, 1}}
	for _, c := range cfgs {
		m, _ := NewModel(&spec)
		m.Params.InitHe(3)
		tr, err := NewTrainer(m, TrainOptions{MaxBatch: 5, Threads: c.threads, Seed: 1, Tuning: Tuning{MicroBatch: c.mb}})
		if err != nil {
			t.Fatal(err)
		}
		if want := min(max(c.mb, 0), (5+c.threads-1)/c.threads); c.mb > 0 && tr.streams[0].n != want {
			t.Fatalf("micro-batch %d: stream buffers for %d images, want %d", c.mb, tr.streams[0].n, want)
		}
		x := randomInput(5, spec.Input.Len(), 8)
		res := tr.gradients(x, []int32{0, 1, 2, 3, 0}, 5, 11)
		grads = append(grads, append([]float32(nil), tr.streams[0].grads.Data...))
		losses, corrects = append(losses, res.Loss), append(corrects, res.Correct)
	}
	for k := 1; k < len(cfgs); k++ {
		if math.Abs(losses[0]-losses[k]) > 1e-6 || corrects[0] != corrects[k] {
			t.Fatalf("%+v: loss %g correct %d, want %g and %d", cfgs[k], losses[k], corrects[k], losses[0], corrects[0])
		}
		if e := relErr(grads[k], toF64(grads[0])); e > 1e-5 {
			t.Fatalf("%+v: gradients differ from 1 stream, 1 pass: rel err %g", cfgs[k], e)
		}
	}
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestTrainerLearns: SGD steps on a fixed tiny batch drive the loss down,
// and the same seed reproduces the same weights bit for bit.
func TestTrainerLearns(t *testing.T) {
	spec := tinySpecs()[7].spec
	spec.NoFinalReLU = true
	run := func() ([]float32, float64, float64) {
		m, _ := NewModel(&spec)
		m.Params.InitHe(3)
		tr, err := NewTrainer(m, TrainOptions{MaxBatch: 8, Threads: 2, Seed: 1, Momentum: 0.9, WeightDecay: 1e-4, NoDropout: true})
		if err != nil {
			t.Fatal(err)
		}
		x := randomInput(8, spec.Input.Len(), 8)
		labels := []int32{0, 1, 2, 3, 0, 1, 2, 3}
		var first, last float64
		for s := 0; s < 100; s++ {
			res, err := tr.Step(x, labels, 8, 0.01, uint64(s))
			if err != nil {
				t.Fatal(err)
			}
			if s == 0 {
				first = res.Loss
			}
			last = res.Loss
		}
		return m.Params.Data, first, last
	}
	w1, first, last := run()
	if !(last < first*0.5) {
		t.Fatalf("loss %g -> %g: not learning", first, last)
	}
	w2, _, _ := run()
	for i := range w1 {
		if w1[i] != w2[i] {
			t.Fatal("training is not deterministic for a fixed seed")
		}
	}
	if _, err := (&Trainer{opt: TrainOptions{MaxBatch: 1}, classes: 4}).Step(nil, []int32{9}, 1, 0.1, 0); err == nil {
		t.Fatal("bad batch accepted")
	}
}

// TestDeadFinalReLUDetected: a learning rate that is too high kills the
// last ReLU (the known NIN failure: loss stuck at ln(classes)); the step
// result reports it through AliveFrac == 0.
func TestDeadFinalReLUDetected(t *testing.T) {
	spec := tinySpecs()[7].spec
	m, _ := NewModel(&spec)
	m.Params.InitHe(3)
	tr, _ := NewTrainer(m, TrainOptions{MaxBatch: 8, Threads: 1, Seed: 1, Momentum: 0.9, WeightDecay: 1e-4, NoDropout: true})
	x := randomInput(8, spec.Input.Len(), 8)
	labels := []int32{0, 1, 2, 3, 0, 1, 2, 3}
	var res StepResult
	for s := 0; s < 100; s++ {
		res, _ = tr.Step(x, labels, 8, 0.1, uint64(s))
	}
	if math.Abs(res.Loss-math.Log(4)) > 1e-3 || res.AliveFrac != 0 {
		t.Fatalf("expected the dead-ReLU state: loss %g alive %g", res.Loss, res.AliveFrac)
	}
}

// TestTrainerFastForward: the training pass with the Winograd and direct
// kernels (forward) and Winograd input and weight gradients (backward)
// gives the loss and gradients of the plain im2col pass, on a real preset
// (nin-mnist: a direct first conv and two Winograd 5×5 convs), and it
// follows the weights as they change between steps; with both tile sizes,
// and with a small tile budget so the tiles come in several chunks (the
// weight gradient accumulates over them).
//
// With micro-batches of 2 images, the transformed filter gradients are
// summed over the 2 micro-batches before the one transform back.
func TestTrainerFastForward(t *testing.T) {
	for _, c := range []struct{ tile, bytes, mb int }{{0, 0, 0}, {2, 64 << 10, 0}, {4, 64 << 10, 0}, {2, 0, 2}} {
		t.Run(fmt.Sprintf("tile%d-budget%d-mb%d", c.tile, c.bytes, c.mb), func(t *testing.T) {
			trainerFastForward(t, c.tile, c.bytes, c.mb)
		})
	}
}

func trainerFastForward(t *testing.T, tile, tileBytes, mb int) {
	const n = 4
	mk := func(w Winograd, d DirectConv, gemm GEMM) (*Trainer, *Model) {
		m := randomModel(t, "nin-mnist", 21)
		tr, err := NewTrainer(m, TrainOptions{MaxBatch: n, Threads: 1, Seed: 3, Momentum: 0.9, NoDropout: true, Tuning: Tuning{Winograd: w, Direct: d, GEMM: gemm, WinoTile: tile, TileBytes: tileBytes, MicroBatch: mb}})
		if err != nil {
			t.Fatal(err)
		}
		return tr, m
	}
	fast, _ := mk(WinogradAuto, DirectOn, GEMMPacked)
	plain, _ := mk(WinogradOff, DirectOff, GEMMOpenBLAS)
	nf, nd := 0, 0
	chunked := false
	for _, l := range fast.layers {
		switch c := l.conv; {
		case c == nil:
		case c.wino != nil:
			nf++
			chunked = chunked || c.wino.chunk < c.wino.w.Tiles()
			if tile != 0 && c.wino.w.M != tile {
				t.Fatalf("%s: tile %d, want %d", c.name, c.wino.w.M, tile)
			}
		case c.direct != nil:
			nd++
		}
	}
	if nf != 2 || nd != 1 {
		t.Fatalf("fast trainer has %d Winograd and %d direct convs, want 2 and 1", nf, nd)
	}
	if tileBytes != 0 && !chunked {
		t.Fatal("no Winograd conv runs in several chunks: the budget is too large to test accumulation")
	}
	nb := 0
	for _, l := range fast.layers {
		if l.conv != nil && l.conv.winoIn != nil {
			nb++
		}
	}
	if nb != 2 {
		t.Fatalf("fast trainer has %d Winograd input-gradient convs, want 2", nb)
	}
	for _, l := range plain.layers {
		if c := l.conv; c != nil && (c.wino != nil || c.direct != nil) {
			t.Fatal("plain trainer has fast ops")
		}
	}
	x := randomInput(n, fast.inLen, 8)
	labels := []int32{1, 7, 3, 0}
	for step := 0; step < 3; step++ { // the later steps run on updated weights
		rf, err := fast.Step(x, labels, n, 0.05, uint64(step))
		if err != nil {
			t.Fatal(err)
		}
		rp, err := plain.Step(x, labels, n, 0.05, uint64(step))
		if err != nil {
			t.Fatal(err)
		}
		if d := math.Abs(rf.Loss-rp.Loss) / rp.Loss; d > 1e-4 {
			t.Fatalf("step %d: loss %g (fast) vs %g (plain)", step, rf.Loss, rp.Loss)
		}
		var num, den float64
		for i, g := range plain.streams[0].grads.Data {
			d := float64(fast.streams[0].grads.Data[i] - g)
			num += d * d
			den += float64(g) * float64(g)
		}
		if den == 0 || math.Sqrt(num/den) > 1e-3 {
			t.Fatalf("step %d: gradients differ by %.2e relative (norm %.3g)", step, math.Sqrt(num/den), math.Sqrt(den))
		}
	}
}

// TestDropoutMaskRate: masks drop a share p of elements (within 4 standard
// deviations over 2^20 draws), independently of their neighbours, and
// scale the rest by 1/(1−p), for p that are
// and are not multiples of 1/4, and differ between images.
func TestDropoutMaskRate(t *testing.T) {
	const per, imgs = 4099, 256
	for _, p := range []float64{0.5, 0.2, 0.7} {
		mask := make([]float32, per*imgs)
		fillDropoutMask(mask, per, p, 7, 3, 1, 0)
		zeros := 0
		for _, v := range mask {
			switch v {
			case 0:
				zeros++
			case float32(1 / (1 - p)):
			default:
				t.Fatalf("p=%g: mask value %g", p, v)
			}
		}
		n := float64(len(mask))
		if sd := math.Sqrt(n * p * (1 - p)); math.Abs(float64(zeros)-n*p) > 4*sd {
			t.Errorf("p=%g: %d of %.0f dropped, want %.0f ± %.0f", p, zeros, n, n*p, 4*sd)
		}
		both := 0 // neighbours decided by one draw must still be independent
		for i := 1; i < len(mask); i++ {
			if mask[i] == 0 && mask[i-1] == 0 {
				both++
			}
		}
		if q := p * p; math.Abs(float64(both)-n*q) > 4*math.Sqrt(n*q*(1-q)) {
			t.Errorf("p=%g: %d neighbouring pairs both dropped, want about %.0f", p, both, n*q)
		}
		if slices.Equal(mask[:per], mask[per:2*per]) {
			t.Errorf("p=%g: images 0 and 1 have the same mask", p)
		}
	}
}
