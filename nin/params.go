package nin

import (
	"fmt"
	"math/rand/v2"
)

// ConvParams is one conv layer's weights and bias, slices into Params.Data.
type ConvParams struct {
	Name             string    // stable tensor name prefix, "mlpconv1.0"
	Cout, K, Cin     int       // output channels, kernel size, input channels
	W                []float32 // (Cout, K, K, Cin): OHWI, the im2col column order
	B                []float32 // (Cout)
	block, idx       int
	WeightLR, BiasLR float64
	InitStd          float64
	// FC marks the fc head's layer: a conv whose kernel is the whole last
	// map. The file stores its weight as PyTorch's nn.Linear does,
	// [classes, C·H·W] in NCHW flatten order (the same bytes as OIHW).
	FC bool
}

// Params holds every weight and bias of a network in one allocation.
// Internally weights are OHWI so that a conv is im2col · Wᵀ; the model file
// stores the PyTorch/Caffe layout [out, in, kh, kw] and is converted on I/O.
type Params struct {
	Data  []float32 // all tensors back to back: W then B per conv, in layer order
	Convs []ConvParams
}

// NewParams allocates zeroed parameters for a validated spec.
func NewParams(s *Spec) (*Params, error) {
	layers, err := s.Plan()
	if err != nil {
		return nil, err
	}
	total, _ := Totals(layers)
	p := &Params{Data: make([]float32, total)}
	off := 0
	for _, l := range layers {
		if l.kind != kindConv {
			continue
		}
		nw := l.k * l.k * l.In.C * l.Out.C
		cp := ConvParams{
			Name: l.Name, Cout: l.Out.C, K: l.k, Cin: l.In.C,
			W: p.Data[off : off+nw : off+nw], B: p.Data[off+nw : off+nw+l.Out.C : off+nw+l.Out.C],
			block: l.block, idx: l.conv, WeightLR: 1, BiasLR: 2, InitStd: 0.05,
		}
		off += nw + l.Out.C
		if l.Head {
			cp.FC = true
			cp.InitStd = 0.01 // Caffe's AlexNet fc8 filler
			p.Convs = append(p.Convs, cp)
			continue
		}
		b := s.Blocks[l.block]
		if b.WeightLR != nil {
			cp.WeightLR = b.WeightLR[l.conv]
		}
		if b.BiasLR != nil {
			cp.BiasLR = b.BiasLR[l.conv]
		}
		if b.InitStd != nil {
			cp.InitStd = b.InitStd[l.conv]
		}
		p.Convs = append(p.Convs, cp)
	}
	if off != len(p.Data) {
		return nil, fmt.Errorf("internal: parameter layout %d != %d", off, len(p.Data))
	}
	return p, nil
}

// InitGaussian sets every weight to N(0, std²) with the per-conv std of the
// spec (Caffe "gaussian" filler; 0.05 when the spec gives none) and every
// bias to 0, deterministically for a seed.
func (p *Params) InitGaussian(seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x6e696e6261746368)) // "ninbatch"
	for _, c := range p.Convs {
		for i := range c.W {
			c.W[i] = float32(r.NormFloat64() * c.InitStd)
		}
		clear(c.B)
	}
}

// InitHe sets weights to N(0, 2/fan_in) and biases to 0: activations keep
// their scale through deep ReLU stacks (used for synthetic benchmarks and tests).
func (p *Params) InitHe(seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x6865))
	for _, c := range p.Convs {
		std := sqrt(2 / float64(c.K*c.K*c.Cin))
		for i := range c.W {
			c.W[i] = float32(r.NormFloat64() * std)
		}
		for i := range c.B {
			c.B[i] = float32(r.NormFloat64() * 0.01)
		}
	}
}

// InitKaiming sets weights to N(0, 2/fan_in) (He et al.) and biases to 0,
// a training alternative to the Caffe stds that keeps activations at unit
// scale through the deep ReLU stack.
func (p *Params) InitKaiming(seed uint64) { p.initFanIn(seed, 2) }

// InitLeCun sets weights to N(0, 1/fan_in) and biases to 0: half the
// Kaiming variance, so the signal shrinks gently through the ReLU stack
// and the first logits are small.
func (p *Params) InitLeCun(seed uint64) { p.initFanIn(seed, 1) }

func (p *Params) initFanIn(seed uint64, gain float64) {
	r := rand.New(rand.NewPCG(seed, 0x6b61696d))
	for _, c := range p.Convs {
		std := sqrt(gain / float64(c.K*c.K*c.Cin))
		for i := range c.W {
			c.W[i] = float32(r.NormFloat64() * std)
		}
		clear(c.B)
	}
}

// toFileLayout converts OHWI weights to the file's OIHW layout.
//
//	src: (Cout, K, K, Cin)  dst: (Cout, Cin, K, K)
func (c *ConvParams) toFileLayout(dst []float32) {
	kk := c.K * c.K
	for o := 0; o < c.Cout; o++ {
		for t := 0; t < kk; t++ {
			for i := 0; i < c.Cin; i++ {
				dst[(o*c.Cin+i)*kk+t] = c.W[(o*kk+t)*c.Cin+i]
			}
		}
	}
}

// fromFileLayout converts OIHW weights from the file into OHWI.
//
//	src: (Cout, Cin, K, K)  dst: c.W (Cout, K, K, Cin)
func (c *ConvParams) fromFileLayout(src []float32) {
	kk := c.K * c.K
	for o := 0; o < c.Cout; o++ {
		for i := 0; i < c.Cin; i++ {
			for t := 0; t < kk; t++ {
				c.W[(o*kk+t)*c.Cin+i] = src[(o*c.Cin+i)*kk+t]
			}
		}
	}
}

// OIHW writes the weights in the PyTorch/ONNX layout (Cout, Cin, K, K).
func (c *ConvParams) OIHW(dst []float32) { c.toFileLayout(dst) }

// SetOIHW sets the weights from the PyTorch/ONNX layout (Cout, Cin, K, K);
// src holds Cout·Cin·K·K values.
func (c *ConvParams) SetOIHW(src []float32) { c.fromFileLayout(src) }

// fileShape is the weight's shape in the model file: OIHW, or nn.Linear's
// [out, in] for the fc head.
func (c *ConvParams) fileShape() []int64 {
	if c.FC {
		return []int64{int64(c.Cout), int64(c.Cin * c.K * c.K)}
	}
	return []int64{int64(c.Cout), int64(c.Cin), int64(c.K), int64(c.K)}
}
