package nin

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ninbatch/ninbatch/native"
)

// This file is the engine's independent reference: it reads the weights
// back out of the encoded .nin bytes with its own minimal safetensors
// parser (PyTorch layout [out, in, kh, kw]), converts the input to NCHW and
// runs direct loop convolutions, Caffe pooling, GAP and softmax in float64.
// It shares no code with the kernels under test.

type refTensor struct {
	shape []int
	data  []float64
}

func refParseSafetensors(t *testing.T, b []byte) map[string]refTensor {
	t.Helper()
	n := binary.LittleEndian.Uint64(b)
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	data := b[8+n:]
	out := map[string]refTensor{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var th struct {
			Dtype       string
			Shape       []int
			DataOffsets [2]int `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &th); err != nil {
			t.Fatal(err)
		}
		seg := data[th.DataOffsets[0]:th.DataOffsets[1]]
		v := make([]float64, len(seg)/4)
		for i := range v {
			v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(seg[4*i:])))
		}
		out[name] = refTensor{th.Shape, v}
	}
	return out
}

// refTensor3 is one image, CHW.
type chw struct {
	c, h, w int
	v       []float64
}

func (x chw) at(c, y, xx int) float64 { return x.v[(c*x.h+y)*x.w+xx] }

func refConv(in chw, w, b refTensor, k, s, p int, relu bool) chw {
	cout := w.shape[0]
	oh, ow := (in.h+2*p-k)/s+1, (in.w+2*p-k)/s+1
	out := chw{cout, oh, ow, make([]float64, cout*oh*ow)}
	for o := 0; o < cout; o++ {
		for y := 0; y < oh; y++ {
			for x := 0; x < ow; x++ {
				sum := b.data[o]
				for c := 0; c < in.c; c++ {
					for ky := 0; ky < k; ky++ {
						iy := y*s - p + ky
						if iy < 0 || iy >= in.h {
							continue
						}
						for kx := 0; kx < k; kx++ {
							ix := x*s - p + kx
							if ix < 0 || ix >= in.w {
								continue
							}
							sum += in.at(c, iy, ix) * w.data[((o*in.c+c)*k+ky)*k+kx]
						}
					}
				}
				if relu && sum < 0 {
					sum = 0
				}
				out.v[(o*oh+y)*ow+x] = sum
			}
		}
	}
	return out
}

// refPool transcribes Caffe's PoolingLayer::Forward_cpu (pad 0 here).
func refPool(in chw, k, s int, ceil, isMax bool) chw {
	size := func(n int) int {
		if ceil {
			return int(math.Ceil(float64(n-k)/float64(s))) + 1
		}
		return (n-k)/s + 1
	}
	oh, ow := size(in.h), size(in.w)
	out := chw{in.c, oh, ow, make([]float64, in.c*oh*ow)}
	for c := 0; c < in.c; c++ {
		for py := 0; py < oh; py++ {
			for px := 0; px < ow; px++ {
				hs, ws := py*s, px*s
				he, we := min(hs+k, in.h), min(ws+k, in.w)
				acc := math.Inf(-1)
				if !isMax {
					acc = 0
				}
				for y := hs; y < he; y++ {
					for x := ws; x < we; x++ {
						if isMax {
							acc = math.Max(acc, in.at(c, y, x))
						} else {
							acc += in.at(c, y, x)
						}
					}
				}
				if !isMax {
					acc /= float64((he - hs) * (we - ws))
				}
				out.v[(c*oh+py)*ow+px] = acc
			}
		}
	}
	return out
}

// refForward returns logits and probabilities of one NHWC image.
func refForward(s *Spec, tensors map[string]refTensor, img []float32) (logits, probs []float64) {
	x := chw{s.Input.C, s.Input.H, s.Input.W, make([]float64, len(img))}
	for y := 0; y < x.h; y++ {
		for xx := 0; xx < x.w; xx++ {
			for c := 0; c < x.c; c++ {
				x.v[(c*x.h+y)*x.w+xx] = float64(img[(y*x.w+xx)*x.c+c])
			}
		}
	}
	for bi, b := range s.Blocks {
		for ci := range b.Channels {
			k, st, p := 1, 1, 0
			if ci == 0 {
				k, st, p = b.Kernel, b.Stride, b.Pad
			}
			name := fmt.Sprintf("mlpconv%d.%d", bi+1, ci)
			last := bi == len(s.Blocks)-1 && ci == len(b.Channels)-1
			x = refConv(x, tensors[name+".weight"], tensors[name+".bias"], k, st, p, !(last && s.NoFinalReLU))
		}
		if b.Pool != nil {
			x = refPool(x, b.Pool.Size, b.Pool.Stride, s.Pooling != "floor", b.Pool.Type == "max")
		}
	}
	if s.HeadKind() == HeadFC { // nn.Linear over the NCHW flatten of the last map
		w, b := tensors["fc.weight"], tensors["fc.bias"]
		if len(w.shape) != 2 || w.shape[1] != len(x.v) {
			panic(fmt.Sprintf("fc.weight shape %v over a %d-value map", w.shape, len(x.v)))
		}
		out := chw{len(b.data), 1, 1, make([]float64, len(b.data))}
		for o := range out.v {
			sum := b.data[o]
			for i, v := range x.v {
				sum += w.data[o*len(x.v)+i] * v
			}
			out.v[o] = sum
		}
		x = out
	}
	logits = make([]float64, x.c)
	for c := range logits {
		for i := 0; i < x.h*x.w; i++ {
			logits[c] += x.v[c*x.h*x.w+i]
		}
		logits[c] /= float64(x.h * x.w)
	}
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, v)
	}
	var sum float64
	probs = make([]float64, len(logits))
	for i, v := range logits {
		probs[i] = math.Exp(v - m)
		sum += probs[i]
	}
	for i := range probs {
		probs[i] /= sum
	}
	return logits, probs
}

// relErr is max|got−want| / max|want|.
func relErr(got []float32, want []float64) float64 {
	var d, s float64
	for i := range want {
		d = math.Max(d, math.Abs(float64(got[i])-want[i]))
		s = math.Max(s, math.Abs(want[i]))
	}
	if s == 0 {
		return d
	}
	return d / s
}

// randomModel is a preset with random weights; "nin-mnist+fc" is the preset
// with the fc head.
func randomModel(t testing.TB, preset string, seed uint64) *Model {
	t.Helper()
	name, fc := strings.CutSuffix(preset, "+fc")
	s, err := Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	if fc {
		s.Head, s.HeadDropout = HeadFC, 0.5
	}
	m, err := NewModel(s)
	if err != nil {
		t.Fatal(err)
	}
	m.Params.InitHe(seed)
	return m
}

func randomInput(n, l int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n*l)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// TestForwardMatchesReference: every preset, random weights and inputs,
// batch 1 and 3, every threading mode and an odd micro-batch, against the
// direct float64 reference: relative error ≤ 1e-4 on logits and probs.
func TestForwardMatchesReference(t *testing.T) {
	presets := []string{"nin-mnist", "nin-cifar10", "nin-mnist+fc", "nin-cifar10+fc", "nin-imagenet"}
	if testing.Short() {
		presets = presets[:4]
	}
	for _, name := range presets {
		t.Run(name, func(t *testing.T) {
			m := randomModel(t, name, 11)
			var buf bytes.Buffer
			if _, err := m.Encode(&buf); err != nil {
				t.Fatal(err)
			}
			tensors := refParseSafetensors(t, buf.Bytes())
			const batch = 3
			in := m.Spec.Input.Len()
			x := randomInput(batch, in, 5)
			wantLogits := make([][]float64, batch)
			wantProbs := make([][]float64, batch)
			var wg sync.WaitGroup
			for i := 0; i < batch; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					wantLogits[i], wantProbs[i] = refForward(&m.Spec, tensors, x[i*in:(i+1)*in])
				}()
			}
			wg.Wait()
			var spread float64
			for _, v := range wantLogits[0] {
				spread = math.Max(spread, v)
			}
			if spread == 0 {
				t.Fatal("reference logits are all zero: the test would prove nothing")
			}
			// every ISA this CPU runs: the same nets, the same bound
			for _, isa := range native.Levels() {
				t.Run(isa.String(), func(t *testing.T) {
					old, err := native.SetISA(isa)
					if err != nil {
						t.Fatal(err)
					}
					defer native.SetISA(old)
					for _, opt := range []Options{
						{MaxBatch: 3, Threads: 2},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Mode: ModeStreams}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Mode: ModeBLAS}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Mode: ModeStreams, MicroBatch: 2, TileBytes: 64 << 10}},
						{MaxBatch: 3, Threads: 1},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Winograd: WinogradOff}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Winograd: WinogradOn}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Mode: ModeBLAS, Winograd: WinogradOn}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Mode: ModeStreams, MicroBatch: 2, TileBytes: 64 << 10, Winograd: WinogradOn}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Winograd: WinogradOn, WinoTile: 2}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Winograd: WinogradOn, WinoTile: 4}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Mode: ModeStreams, MicroBatch: 2, TileBytes: 64 << 10, Winograd: WinogradOn, WinoTile: 4}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Direct: DirectOff}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Direct: DirectOn}},
						// batch 1 split over 3 parts: channel slices of 8 that leave
						// a part empty (10 classes), rows in thirds
						{MaxBatch: 3, Threads: 3},
						{MaxBatch: 3, Threads: 3, Tuning: Tuning{Winograd: WinogradOn, TileBytes: 64 << 10}},
						{MaxBatch: 3, Threads: 1, Tuning: Tuning{Direct: DirectOff, Winograd: WinogradOff}},
						// OpenBLAS for every conv GEMM (the default is the packed
						// kernel on AVX2 CPUs), and the packed kernel with ModeBLAS
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{GEMM: GEMMOpenBLAS}},
						{MaxBatch: 3, Threads: 3, Tuning: Tuning{GEMM: GEMMOpenBLAS, Winograd: WinogradOn, TileBytes: 64 << 10}},
						{MaxBatch: 3, Threads: 1, Tuning: Tuning{GEMM: GEMMOpenBLAS, Direct: DirectOff, Winograd: WinogradOff}},
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Mode: ModeBLAS, GEMM: GEMMPacked, Winograd: WinogradOn}},
						{MaxBatch: 3, Threads: 3, Tuning: Tuning{GEMM: GEMMPacked, Direct: DirectOff, Winograd: WinogradOff}},
						// every conv its own layer call (streams, and batch 1 split
						// call by call), without chains
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Unfused: true}},
						{MaxBatch: 3, Threads: 3, Tuning: Tuning{Unfused: true, Winograd: WinogradOff, TileBytes: 64 << 10}},
						// split calls that spin and that park; chains with large 1×1 weights
						{MaxBatch: 3, Threads: 2, Tuning: Tuning{Wait: "spin", ChainWeightBytes: 8 << 20}},
						{MaxBatch: 3, Threads: 3, Tuning: Tuning{Wait: "park"}},
					} {
						net, err := NewNet(m, opt)
						if err != nil {
							t.Fatal(err)
						}
						switch wl := net.WinogradLayers(); {
						case opt.Winograd == WinogradOff && len(wl) > 0:
							t.Fatalf("winograd off, but %v run as Winograd", wl)
						case opt.Winograd == WinogradOn && len(wl) < 2:
							t.Fatalf("winograd on, but only %v run as Winograd", wl)
						}
						if opt.WinoTile != 0 {
							for _, f := range net.WinogradForms() {
								if !strings.Contains(f, fmt.Sprintf("F(%dx%d,", opt.WinoTile, opt.WinoTile)) {
									t.Fatalf("wino tile %d, but %s", opt.WinoTile, f)
								}
							}
						}
						wantPacked := opt.GEMM == GEMMPacked || (opt.GEMM == "" && opt.Mode != ModeBLAS && native.GemmFast())
						if net.PackedGEMM() != wantPacked {
							t.Fatalf("gemm %q mode %q: packed = %v", opt.GEMM, opt.Mode, net.PackedGEMM())
						}
						// chains: built with the packed GEMM, unless Unfused
						chains := 0
						for _, o := range net.run {
							if _, ok := o.(*chainOp); ok {
								chains++
							}
						}
						// (as many as fit the L2-derived weight budget; every
						// preset has some under an unlimited one)
						want := 0
						if wantPacked && !opt.Unfused {
							want = fuseChainsCount(net.ops, net.opt.ChainWeightBytes)
							if fuseChainsCount(net.ops, 1<<40) == 0 {
								t.Fatalf("%+v: no chain even with an unlimited weight budget", opt)
							}
						}
						if chains != want {
							t.Fatalf("%+v: %d chains in the ops run, want %d", opt, chains, want)
						}
						// every preset's first conv reads 1 or 3 channels (Winograd
						// on takes the stride-1 ones first)
						d := opt.Direct
						if d == "" {
							d = DirectAuto
						}
						wantDirect := useDirect(d, 5, 1, net.PackedGEMM()) && (opt.Winograd != WinogradOn || name == "nin-imagenet")
						if dl := net.DirectLayers(); wantDirect != (len(dl) > 0) {
							t.Fatalf("direct %q, but direct layers %v", opt.Direct, dl)
						}
						for _, b := range []int{1, batch} {
							c := net.Classes()
							probs, logits := make([]float32, b*c), make([]float32, b*c)
							if err := net.Forward(x[:b*in], b, probs, logits); err != nil {
								t.Fatal(err)
							}
							for i := 0; i < b; i++ {
								el := relErr(logits[i*c:(i+1)*c], wantLogits[i])
								ep := relErr(probs[i*c:(i+1)*c], wantProbs[i])
								if el > 1e-4 || ep > 1e-4 {
									t.Errorf("%+v batch %d image %d: rel err logits %.2e probs %.2e", opt, b, i, el, ep)
								}
							}
						}
						net.Close()
					}
				})
			}
		})
	}
}

// TestForwardNoAllocs: the steady-state forward allocates nothing.
func TestForwardNoAllocs(t *testing.T) {
	m := randomModel(t, "nin-mnist", 1)
	// batch 1 in auto mode is the split path (every layer call divided
	// over the workers)
	for _, c := range []struct {
		mode  Mode
		batch int
	}{{ModeStreams, 8}, {ModeBLAS, 8}, {ModeAuto, 1}, {ModeAuto, 8}} {
		net, err := NewNet(m, Options{MaxBatch: 8, Threads: 2, Tuning: Tuning{Mode: c.mode}})
		if err != nil {
			t.Fatal(err)
		}
		x := randomInput(8, net.InputLen(), 1)
		probs := make([]float32, 8*net.Classes())
		allocs := testing.AllocsPerRun(5, func() {
			if err := net.Forward(x, c.batch, probs, nil); err != nil {
				t.Fatal(err)
			}
		})
		net.Close()
		if allocs != 0 {
			t.Errorf("mode %s batch %d: Forward allocates %.1f times per call", c.mode, c.batch, allocs)
		}
	}
}

func TestForwardArgumentErrors(t *testing.T) {
	m := randomModel(t, "nin-mnist", 1)
	net, err := NewNet(m, Options{MaxBatch: 2, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	x := make([]float32, 2*net.InputLen())
	p := make([]float32, 2*net.Classes())
	if err := net.Forward(x, 3, p, nil); err == nil {
		t.Error("batch above MaxBatch accepted")
	}
	if err := net.Forward(x[:10], 1, p, nil); err == nil {
		t.Error("short input accepted")
	}
	if err := net.Forward(x, 2, p[:3], nil); err == nil {
		t.Error("short probs accepted")
	}
	net.Close()
	net.Close()
	if err := net.Forward(x, 1, p, nil); err == nil {
		t.Error("Forward on closed net accepted")
	}
}

// TestReloadFollowsParams: after the parameters change in place, Reload
// makes a net's output equal a freshly built net's, Winograd and direct
// layers included; without it they differ (the derived weights are copies).
func TestReloadFollowsParams(t *testing.T) {
	m := randomModel(t, "nin-mnist", 3)
	opt := Options{MaxBatch: 2, Threads: 1, Tuning: Tuning{Direct: DirectOn}}
	net, err := NewNet(m, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	if len(net.WinogradLayers()) == 0 || len(net.DirectLayers()) == 0 {
		t.Fatalf("winograd %v direct %v", net.WinogradLayers(), net.DirectLayers())
	}
	x := randomInput(2, net.InputLen(), 5)
	c := net.Classes()
	forward := func(n *Net) []float32 {
		p, l := make([]float32, 2*c), make([]float32, 2*c)
		if err := n.Forward(x, 2, p, l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	before := forward(net)
	for i := range m.Params.Data {
		m.Params.Data[i] *= 0.9 - 0.2*float32(i%3)
	}
	stale := forward(net)
	net.Reload()
	got := forward(net)
	fresh, err := NewNet(m, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	want := forward(fresh)
	if !slices.Equal(got, want) {
		t.Fatalf("after Reload %v, fresh net %v", got, want)
	}
	if slices.Equal(stale, want) || slices.Equal(before, want) {
		t.Fatal("the parameter change did not change the output: the test proves nothing")
	}
}

// TestWinoTileChoice: per layer, the auto tile is the one with fewer
// multiplications, counting padded edge tiles; 2 and 4 force it.
func TestWinoTileChoice(t *testing.T) {
	for _, c := range []struct{ k, hw, forced, want int }{
		{5, 16, 0, 4}, // nin-cifar10 conv2: 16·64 = 1024 against 64·36 = 2304
		{3, 8, 0, 4},  // nin-cifar10 conv3: 4·36 = 144 against 16·16 = 256
		{5, 14, 0, 4}, // nin-mnist conv2: 16·64 against 49·36
		{5, 27, 0, 4}, // nin-imagenet conv2: 49·64 = 3136 against 196·36 = 7056
		{3, 6, 0, 2},  // nin-imagenet conv4: 4·36 = 144 ties 9·16 = 144
		{3, 2, 0, 2},  // one F(2,3) tile: 16 against 36
		{3, 6, 4, 4},
		{5, 16, 2, 2},
	} {
		if got := winoTile(c.k, c.hw, c.hw, c.forced); got != c.want {
			t.Errorf("k %d map %d forced %d: tile %d, want %d", c.k, c.hw, c.forced, got, c.want)
		}
	}
	m := randomModel(t, "nin-mnist", 1)
	if _, err := NewNet(m, Options{MaxBatch: 1, Threads: 1, Tuning: Tuning{WinoTile: 3}}); err == nil {
		t.Error("Winograd tile 3 accepted")
	}
}

// fuseChainsCount is the number of chains fuseChains builds from ops.
func fuseChainsCount(ops []op, maxWeights int) int {
	run, _ := fuseChains(ops, maxWeights)
	n := 0
	for _, o := range run {
		if _, ok := o.(*chainOp); ok {
			n++
		}
	}
	return n
}
