// Package nin is the Network In Network model: the architecture spec and its
// presets, parameters and the model file, and the engine that runs the
// forward pass over preallocated NHWC buffers (convolutions lowered to
// im2col + one sgemm, 1×1 convolutions to a plain sgemm).
package nin

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/ninbatch/ninbatch/native"
)

// Spec is a NIN architecture: a stack of mlpconv blocks followed by global
// average pooling and softmax. The last block's last conv has one output
// channel per class.
type Spec struct {
	Name    string  `json:"name"`
	Input   Dims    `json:"input"`   // image size the network takes, H×W×C
	Pooling string  `json:"pooling"` // "ceil" (Caffe, default) or "floor" (PyTorch)
	Blocks  []Block `json:"blocks"`
	// NoFinalReLU drops the ReLU after the last conv. The Caffe nets keep it
	// (weights trained with it need it); it is a training option against the
	// "dead last layer" failure where every class map is 0.
	NoFinalReLU bool `json:"no_final_relu,omitempty"`
	// Head is the classifier on the last block's maps: "gap" (global
	// average pooling, the default and the NIN design) or "fc" (flatten the
	// last map, optional dropout, one fully connected layer to the classes:
	// the AlexNet-style head NIN replaces, kept for the ablation).
	Head string `json:"head,omitempty"`
	// HeadDropout is the fc head's inverted dropout on the flattened map,
	// training only.
	HeadDropout float64 `json:"head_dropout,omitempty"`
}

// Head names.
const (
	HeadGAP = "gap"
	HeadFC  = "fc"
)

// HeadKind is the spec's head, "gap" when unset.
func (s *Spec) HeadKind() string {
	if s.Head == "" {
		return HeadGAP
	}
	return s.Head
}

// Dims is a spatial size and channel count.
type Dims struct {
	H int `json:"h"`
	W int `json:"w"`
	C int `json:"c"`
}

func (d Dims) String() string { return fmt.Sprintf("%dx%dx%d", d.H, d.W, d.C) }

// Len is H·W·C.
func (d Dims) Len() int { return d.H * d.W * d.C }

// Block is one mlpconv block: a Kernel×Kernel conv (stride, pad) with
// Channels[0] outputs, then one 1×1 conv per further entry of Channels, each
// followed by ReLU; then optional pooling and dropout.
type Block struct {
	Kernel   int     `json:"kernel"`
	Stride   int     `json:"stride"`
	Pad      int     `json:"pad"`
	Channels []int   `json:"channels"`
	Pool     *Pool   `json:"pool,omitempty"`
	Dropout  float64 `json:"dropout,omitempty"` // inverted dropout after the pool, training only

	// Training defaults (Caffe prototxt): Gaussian init std per conv, and
	// learning-rate multipliers per conv for weights (default 1) and biases
	// (default 2).
	InitStd  []float64 `json:"init_std,omitempty"`
	WeightLR []float64 `json:"weight_lr,omitempty"`
	BiasLR   []float64 `json:"bias_lr,omitempty"`
}

// Pool is a pooling layer between blocks.
type Pool struct {
	Type   string `json:"type"` // "max" or "ave"
	Size   int    `json:"size"`
	Stride int    `json:"stride"`
	Pad    int    `json:"pad,omitempty"`
}

// Limits that keep a hostile spec from asking for absurd allocations.
const (
	maxBlocks   = 16
	maxConvs    = 8 // per block
	maxChannels = 16384
	maxKernel   = 15
	maxStride   = 8
	maxSide     = 4096
	maxParams   = 1 << 28 // 1 GiB of float32
	maxActs     = 1 << 26 // largest activation of one image: 256 MiB of float32
	maxMACs     = 1 << 38 // per image; NIN-ImageNet needs 1.1e9
)

// Classes is the number of outputs: the last block's last channel count.
func (s *Spec) Classes() int {
	if len(s.Blocks) == 0 {
		return 0
	}
	ch := s.Blocks[len(s.Blocks)-1].Channels
	if len(ch) == 0 {
		return 0
	}
	return ch[len(ch)-1]
}

func (s *Spec) ceil() bool { return s.Pooling != "floor" }

// Validate checks the spec for consistency and sane sizes and that every
// layer has a non-empty output.
func (s *Spec) Validate() error {
	_, err := s.Plan()
	return err
}

// Layer describes one layer of a planned network, darknet style.
type Layer struct {
	Name   string `json:"name"`   // "mlpconv1.0", "pool1", "drop1", "drop_fc", "fc", "gap", "softmax"
	Op     string `json:"op"`     // "conv 5x5/s1/p2", "maxpool 3x3/s2 (ceil)", ...
	In     Dims   `json:"in"`     // input H×W×C
	Out    Dims   `json:"out"`    // output H×W×C
	Params int64  `json:"params"` // weights + biases
	MACs   int64  `json:"macs"`   // multiply-accumulates per image
	// GEMM shape per image as ninbatch runs it: M = output pixels,
	// K = k·k·Cin, N = Cout (zero for non-conv layers).
	GemmM int `json:"gemm_m,omitempty"`
	GemmK int `json:"gemm_k,omitempty"`
	GemmN int `json:"gemm_n,omitempty"`
	// Head marks the classifier's layers (an fc head's dropout and fully
	// connected layer; "gap" and "softmax"), not the mlpconv body's.
	Head bool `json:"head,omitempty"`

	kind    layerKind
	block   int // 0-based block index
	conv    int // conv index within the block
	k, s, p int
	pool    *Pool
	dropout float64
}

type layerKind int

const (
	kindConv layerKind = iota
	kindPool
	kindDropout
	kindGAP
	kindSoftmax
)

// Plan validates the spec and returns its layers in order with shapes,
// parameter counts and MACs.
func (s *Spec) Plan() ([]Layer, error) {
	in := s.Input
	switch {
	case s.Pooling != "" && s.Pooling != "ceil" && s.Pooling != "floor":
		return nil, fmt.Errorf("spec: pooling %q: want \"ceil\" or \"floor\"", s.Pooling)
	case in.H < 1 || in.W < 1 || in.H > maxSide || in.W > maxSide:
		return nil, fmt.Errorf("spec: input %s: height and width must be in 1..%d", in, maxSide)
	case in.C != 1 && in.C != 3:
		return nil, fmt.Errorf("spec: input %s: channels must be 1 (gray) or 3 (RGB)", in)
	case len(s.Blocks) < 1 || len(s.Blocks) > maxBlocks:
		return nil, fmt.Errorf("spec: %d blocks: want 1..%d", len(s.Blocks), maxBlocks)
	}
	var layers []Layer
	var total, macs int64
	cur := in
	for bi, b := range s.Blocks {
		where := fmt.Sprintf("spec: block %d", bi+1)
		if err := checkBlock(where, b); err != nil {
			return nil, err
		}
		for ci, cout := range b.Channels {
			l, err := convLayer(where, bi, ci, b, cout, cur)
			if err != nil {
				return nil, err
			}
			total += l.Params
			macs += l.MACs
			switch {
			case total > maxParams:
				return nil, fmt.Errorf("%s: more than %d parameters", where, maxParams)
			case int64(l.Out.Len()) > maxActs || int64(cur.Len()) > maxActs:
				return nil, fmt.Errorf("%s: activation of %s per image exceeds %d values", where, l.Out, maxActs)
			case macs > maxMACs:
				return nil, fmt.Errorf("%s: more than %d multiply-accumulates per image", where, int64(maxMACs))
			}
			layers = append(layers, l)
			cur = l.Out
		}
		if b.Pool != nil {
			l, err := s.poolLayer(where, bi, *b.Pool, cur)
			if err != nil {
				return nil, err
			}
			layers = append(layers, l)
			cur = l.Out
		}
		if b.Dropout > 0 {
			layers = append(layers, Layer{
				Name: fmt.Sprintf("drop%d", bi+1), Op: fmt.Sprintf("dropout p=%g", b.Dropout),
				In: cur, Out: cur, kind: kindDropout, block: bi, dropout: b.Dropout,
			})
		}
	}
	switch s.HeadKind() {
	case HeadGAP:
		if s.HeadDropout != 0 {
			return nil, fmt.Errorf("spec: head_dropout %g needs the fc head (the gap head has no dropout of its own)", s.HeadDropout)
		}
	case HeadFC:
		fc, err := fcLayers(s, cur)
		if err != nil {
			return nil, err
		}
		if hp, _ := Totals(fc); total+hp > maxParams {
			return nil, fmt.Errorf("spec: body and fc head have more than %d parameters", maxParams)
		}
		layers = append(layers, fc...)
		cur = fc[len(fc)-1].Out
	default:
		return nil, fmt.Errorf("spec: head %q: want \"gap\" or \"fc\"", s.Head)
	}
	gap := Dims{1, 1, cur.C}
	layers = append(layers,
		Layer{Name: "gap", Op: fmt.Sprintf("global avgpool %dx%d", cur.H, cur.W), In: cur, Out: gap, kind: kindGAP, Head: true},
		Layer{Name: "softmax", Op: "softmax", In: gap, Out: gap, kind: kindSoftmax, Head: true})
	return layers, nil
}

// fcLayers is the fc head over the body's last map cur: dropout, then one
// fully connected layer to the classes, run as a conv whose kernel is the
// whole map (so it shares the conv kernels, gradients and file layout; the
// GAP that follows is over 1×1).
func fcLayers(s *Spec, cur Dims) ([]Layer, error) {
	switch {
	case !(s.HeadDropout >= 0 && s.HeadDropout < 1):
		return nil, fmt.Errorf("spec: head_dropout %g: want [0, 1)", s.HeadDropout)
	case cur.H != cur.W:
		return nil, fmt.Errorf("spec: fc head over a %s map: it needs a square last map", cur)
	}
	var layers []Layer
	if s.HeadDropout > 0 {
		layers = append(layers, Layer{
			Name: "drop_fc", Op: fmt.Sprintf("dropout p=%g", s.HeadDropout),
			In: cur, Out: cur, kind: kindDropout, block: len(s.Blocks), dropout: s.HeadDropout, Head: true,
		})
	}
	classes := s.Classes()
	kk := int64(cur.Len())
	params := kk*int64(classes) + int64(classes)
	if params > maxParams {
		return nil, fmt.Errorf("spec: fc head %s → %d has more than %d parameters", cur, classes, maxParams)
	}
	layers = append(layers, Layer{
		Name: "fc", Op: fmt.Sprintf("fully connected %d → %d", kk, classes),
		In: cur, Out: Dims{1, 1, classes}, Params: params, MACs: kk * int64(classes),
		GemmM: 1, GemmK: int(kk), GemmN: classes,
		kind: kindConv, block: len(s.Blocks), k: cur.H, s: 1, p: 0, Head: true,
	})
	return layers, nil
}

// HeadParams is the parameter count of the classifier head, and what an fc
// head over the same body would have (equal for an fc head).
func (s *Spec) HeadParams() (head, fc int64, err error) {
	layers, err := s.Plan()
	if err != nil {
		return 0, 0, err
	}
	var last Dims
	for _, l := range layers {
		if l.Head {
			head += l.Params
		} else {
			last = l.Out
		}
	}
	c := int64(s.Classes())
	return head, int64(last.Len())*c + c, nil
}

// checkBlock checks a block's own fields, before its shapes are known.
func checkBlock(where string, b Block) error {
	switch {
	case len(b.Channels) < 1 || len(b.Channels) > maxConvs:
		return fmt.Errorf("%s: %d channel entries: want 1..%d", where, len(b.Channels), maxConvs)
	case b.Kernel < 1 || b.Kernel > maxKernel:
		return fmt.Errorf("%s: kernel %d: want 1..%d", where, b.Kernel, maxKernel)
	case b.Stride < 1 || b.Stride > maxStride:
		return fmt.Errorf("%s: stride %d: want 1..%d", where, b.Stride, maxStride)
	case b.Pad < 0 || b.Pad >= b.Kernel:
		return fmt.Errorf("%s: pad %d: want 0..kernel-1", where, b.Pad)
	case b.Dropout < 0 || b.Dropout >= 1:
		return fmt.Errorf("%s: dropout %g: want [0, 1)", where, b.Dropout)
	}
	for _, v := range [][]float64{b.InitStd, b.WeightLR, b.BiasLR} {
		if v != nil && len(v) != len(b.Channels) {
			return fmt.Errorf("%s: init_std/weight_lr/bias_lr need one entry per conv (%d)", where, len(b.Channels))
		}
		for _, x := range v {
			if !(x >= 0 && x < 1e6) {
				return fmt.Errorf("%s: init_std/weight_lr/bias_lr value %g out of range", where, x)
			}
		}
	}
	return nil
}

// convLayer is conv ci of block bi over a cur-sized input: the block's
// k×k conv first, then its 1×1 convs.
func convLayer(where string, bi, ci int, b Block, cout int, cur Dims) (Layer, error) {
	if cout < 1 || cout > maxChannels {
		return Layer{}, fmt.Errorf("%s: conv %d has %d channels: want 1..%d", where, ci, cout, maxChannels)
	}
	k, st, p := 1, 1, 0
	if ci == 0 {
		k, st, p = b.Kernel, b.Stride, b.Pad
	}
	oh, ow := native.OutSize(cur.H, k, st, p, false), native.OutSize(cur.W, k, st, p, false)
	if oh < 1 || ow < 1 {
		return Layer{}, fmt.Errorf("%s: conv %dx%d/s%d/p%d does not fit its %s input", where, k, k, st, p, cur)
	}
	kk := int64(k * k * cur.C)
	return Layer{
		Name: fmt.Sprintf("mlpconv%d.%d", bi+1, ci), Op: fmt.Sprintf("conv %dx%d/s%d/p%d", k, k, st, p),
		In: cur, Out: Dims{oh, ow, cout}, Params: kk*int64(cout) + int64(cout),
		MACs:  int64(oh*ow) * kk * int64(cout),
		GemmM: oh * ow, GemmK: int(kk), GemmN: cout,
		kind: kindConv, block: bi, conv: ci, k: k, s: st, p: p,
	}, nil
}

// poolLayer is block bi's pooling over a cur-sized input.
func (s *Spec) poolLayer(where string, bi int, pl Pool, cur Dims) (Layer, error) {
	if pl.Type != "max" && pl.Type != "ave" {
		return Layer{}, fmt.Errorf("%s: pool type %q: want \"max\" or \"ave\"", where, pl.Type)
	}
	if pl.Size < 1 || pl.Size > maxKernel || pl.Stride < 1 || pl.Stride > maxStride || pl.Pad < 0 || pl.Pad >= pl.Size {
		return Layer{}, fmt.Errorf("%s: pool %d/%d pad %d out of range", where, pl.Size, pl.Stride, pl.Pad)
	}
	oh := native.OutSize(cur.H, pl.Size, pl.Stride, pl.Pad, s.ceil())
	ow := native.OutSize(cur.W, pl.Size, pl.Stride, pl.Pad, s.ceil())
	if oh < 1 || ow < 1 {
		return Layer{}, fmt.Errorf("%s: pool %dx%d/s%d does not fit its %s input", where, pl.Size, pl.Size, pl.Stride, cur)
	}
	mode := "ceil"
	if !s.ceil() {
		mode = "floor"
	}
	return Layer{
		Name: fmt.Sprintf("pool%d", bi+1), Op: fmt.Sprintf("%spool %dx%d/s%d (%s)", pl.Type, pl.Size, pl.Size, pl.Stride, mode),
		In: cur, Out: Dims{oh, ow, cur.C}, kind: kindPool, block: bi, pool: &pl, k: pl.Size, s: pl.Stride, p: pl.Pad,
	}, nil
}

// MapGrid places the class maps on the input: map pixel i (row or column)
// is the output whose receptive field is centred on input pixel
// offset + stride·i. Each conv or pool of kernel k, stride s, pad p maps
// its output o to input o·s + (k−1)/2 − p. (nin-mnist: 4i + 3; a plain
// rescale, 4i + 1.5, would put every map 1.5 pixels off.)
func (s *Spec) MapGrid() (stride, offset float64, err error) {
	layers, err := s.Plan()
	if err != nil {
		return 0, 0, err
	}
	stride = 1
	for _, l := range layers {
		if l.Head || (l.kind != kindConv && l.kind != kindPool) {
			continue
		}
		offset += stride * (float64(l.k-1)/2 - float64(l.p))
		stride *= float64(l.s)
	}
	return stride, offset, nil
}

// reluAfter reports whether conv layer i of a plan is followed by ReLU:
// every body conv is but the last one under NoFinalReLU; the fc head never.
func reluAfter(layers []Layer, i int, noFinalReLU bool) bool {
	if layers[i].Head {
		return false
	}
	for _, l := range layers[i+1:] {
		if l.kind == kindConv && !l.Head {
			return true
		}
	}
	return !noFinalReLU
}

// Totals sums parameters and MACs over a plan.
func Totals(layers []Layer) (params, macs int64) {
	for _, l := range layers {
		params += l.Params
		macs += l.MACs
	}
	return params, macs
}

// ParseSpec decodes a spec from JSON, rejecting unknown fields, and validates it.
func ParseSpec(data []byte) (*Spec, error) {
	var s Spec
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	if dec.More() {
		return nil, errors.New("spec: trailing data after the JSON object")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Preset returns a copy of a built-in architecture.
func Preset(name string) (*Spec, error) {
	f, ok := presets[name]
	if !ok {
		return nil, fmt.Errorf("unknown preset %q (have %s)", name, strings.Join(PresetNames(), ", "))
	}
	return f(), nil
}

// PresetNames lists the built-in presets.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func fill(n int, v float64) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = v
	}
	return s
}

var presets = map[string]func() *Spec{
	// Caffe Model Zoo NIN-CIFAR10 (reference §2.1): AVE pool2, ReLU after
	// every conv, cccp6 at 0.1× learning rate for weights and biases.
	"nin-cifar10": func() *Spec {
		return &Spec{
			Name: "nin-cifar10", Input: Dims{32, 32, 3}, Pooling: "ceil",
			Blocks: []Block{
				{Kernel: 5, Stride: 1, Pad: 2, Channels: []int{192, 160, 96}, Pool: &Pool{"max", 3, 2, 0}, Dropout: 0.5,
					InitStd: fill(3, 0.05)},
				{Kernel: 5, Stride: 1, Pad: 2, Channels: []int{192, 192, 192}, Pool: &Pool{"ave", 3, 2, 0}, Dropout: 0.5,
					InitStd: fill(3, 0.05)},
				{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{192, 192, 10},
					InitStd: fill(3, 0.05), WeightLR: []float64{1, 1, 0.1}, BiasLR: []float64{2, 2, 0.1}},
			},
		}
	},
	// Caffe Model Zoo NIN-ImageNet (reference §2.3).
	"nin-imagenet": func() *Spec {
		return &Spec{
			Name: "nin-imagenet", Input: Dims{224, 224, 3}, Pooling: "ceil",
			Blocks: []Block{
				{Kernel: 11, Stride: 4, Pad: 0, Channels: []int{96, 96, 96}, Pool: &Pool{"max", 3, 2, 0},
					InitStd: []float64{0.01, 0.05, 0.05}},
				{Kernel: 5, Stride: 1, Pad: 2, Channels: []int{256, 256, 256}, Pool: &Pool{"max", 3, 2, 0},
					InitStd: fill(3, 0.05)},
				{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{384, 384, 384}, Pool: &Pool{"max", 3, 2, 0}, Dropout: 0.5,
					InitStd: []float64{0.01, 0.05, 0.05}},
				{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{1024, 1024, 1000},
					InitStd: []float64{0.05, 0.05, 0.01}},
			},
		}
	},
	// The authors' cuda-convnet mnist_def (reference §2.2).
	"nin-mnist": func() *Spec {
		return &Spec{
			Name: "nin-mnist", Input: Dims{28, 28, 1}, Pooling: "ceil",
			Blocks: []Block{
				{Kernel: 5, Stride: 1, Pad: 2, Channels: []int{96, 64, 48}, Pool: &Pool{"max", 3, 2, 0}, Dropout: 0.5,
					InitStd: fill(3, 0.05)},
				{Kernel: 5, Stride: 1, Pad: 2, Channels: []int{128, 96, 48}, Pool: &Pool{"max", 3, 2, 0}, Dropout: 0.5,
					InitStd: fill(3, 0.05)},
				// cuda-convnet's MNIST params were never published; the
				// last layer takes the 0.1× learning rate of the Caffe
				// CIFAR-10 net, which guards the final ReLU against dying.
				{Kernel: 5, Stride: 1, Pad: 2, Channels: []int{128, 96, 10},
					InitStd: fill(3, 0.05), WeightLR: []float64{1, 1, 0.1}, BiasLR: []float64{2, 2, 0.1}},
			},
		}
	},
}
