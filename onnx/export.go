package onnx

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ninbatch/ninbatch/nin"
)

// ExportOpset is the opset Export writes: old enough for every maintained
// runtime, new enough for onnxruntime's current kernels.
const ExportOpset = 13

// Export builds the model's inference graph: input "input" [batch, C, H, W]
// float32, already preprocessed (the recipe is in the doc string and
// metadata), output "probs" [batch, classes]. Dropout, identity at
// inference, is left out of the graph; the full spec rides in the metadata,
// so importing the file gives back the same model.
func Export(m *nin.Model, producerVersion string) (*Model, error) {
	layers, err := m.Spec.Plan()
	if err != nil {
		return nil, err
	}
	g := Graph{Name: m.Spec.Name}
	in := m.Spec.Input
	g.Inputs = []ValueInfo{{Name: "input", ElemType: TypeFloat, HasShape: true,
		Shape: []Dim{{Param: "batch"}, {Value: int64(in.C)}, {Value: int64(in.H)}, {Value: int64(in.W)}}}}
	g.Outputs = []ValueInfo{{Name: "probs", ElemType: TypeFloat, HasShape: true,
		Shape: []Dim{{Param: "batch"}, {Value: int64(m.Spec.Classes())}}}}
	cur := "input"
	add := func(op, name string, inputs []string, attrs ...Attribute) {
		out := name
		g.Nodes = append(g.Nodes, Node{Name: name, OpType: op, Inputs: inputs, Outputs: []string{out}, Attrs: attrs})
		cur = out
	}
	ceil := int64(0)
	if m.Spec.Pooling != "floor" {
		ceil = 1
	}
	conv := 0
	nbody := len(m.Params.Convs) // mlpconv layers
	fc := m.Spec.HeadKind() == nin.HeadFC
	if fc {
		nbody--
	}
	for _, l := range layers {
		switch {
		case l.Name == "fc": // as torch exports nn.Flatten + nn.Linear
			c := &m.Params.Convs[conv]
			w := make([]float32, len(c.W))
			c.OIHW(w) // [classes, C, H, W]: the NCHW flatten order
			g.Initializers = append(g.Initializers,
				FloatTensor("fc.weight", []int64{int64(c.Cout), int64(c.Cin * c.K * c.K)}, w),
				FloatTensor("fc.bias", []int64{int64(c.Cout)}, c.B))
			add("Flatten", "fc.flatten", []string{cur}, intAttrV("axis", 1))
			add("Gemm", "logits", []string{cur, "fc.weight", "fc.bias"}, intAttrV("transB", 1))
		case strings.HasPrefix(l.Name, "mlpconv"):
			c := &m.Params.Convs[conv]
			conv++
			w := make([]float32, len(c.W))
			c.OIHW(w)
			g.Initializers = append(g.Initializers,
				FloatTensor(c.Name+".weight", []int64{int64(c.Cout), int64(c.Cin), int64(c.K), int64(c.K)}, w),
				FloatTensor(c.Name+".bias", []int64{int64(c.Cout)}, c.B))
			k, s, p := convGeom(&m.Spec, l)
			add("Conv", c.Name, []string{cur, c.Name + ".weight", c.Name + ".bias"},
				intsAttr("kernel_shape", k, k), intsAttr("strides", s, s), intsAttr("pads", p, p, p, p))
			if conv < nbody || !m.Spec.NoFinalReLU {
				add("Relu", c.Name+".relu", []string{cur})
			}
		case strings.HasPrefix(l.Name, "pool"):
			pl := poolOf(&m.Spec, l)
			attrs := []Attribute{intsAttr("kernel_shape", int64(pl.Size), int64(pl.Size)),
				intsAttr("strides", int64(pl.Stride), int64(pl.Stride)),
				intsAttr("pads", int64(pl.Pad), int64(pl.Pad), int64(pl.Pad), int64(pl.Pad)),
				intAttrV("ceil_mode", ceil)}
			op := "MaxPool"
			if pl.Type == "ave" {
				op = "AveragePool"
				if pl.Pad > 0 { // Caffe's divisor counts the padding
					attrs = append(attrs, intAttrV("count_include_pad", 1))
				}
			}
			add(op, l.Name, []string{cur}, attrs...)
		case l.Name == "gap" && fc: // over the fc layer's 1×1 output: nothing to average
		case l.Name == "gap":
			add("GlobalAveragePool", "gap", []string{cur})
			add("Flatten", "logits", []string{cur}, intAttrV("axis", 1))
		case l.Name == "softmax":
			add("Softmax", "probs", []string{cur}, intAttrV("axis", 1))
		}
	}
	spec, _ := json.Marshal(m.Spec)
	pre, _ := json.Marshal(m.Preprocess)
	classes := m.Classes
	if classes == nil {
		classes = []string{}
	}
	cls, _ := json.Marshal(classes)
	out := &Model{
		IRVersion: 7, ProducerName: "ninbatch", ProducerVersion: producerVersion,
		Opsets:    []Opset{{Version: ExportOpset}},
		DocString: preprocessDoc(m),
		Graph:     g,
		Metadata: []KV{
			{MetaSpec, string(spec)}, {MetaPreprocess, string(pre)}, {MetaClasses, string(cls)},
			{"ninbatch.model_id", m.ContentID()},
		},
	}
	return out, nil
}

func convGeom(s *nin.Spec, l nin.Layer) (k, st, p int64) {
	var b, c int
	fmt.Sscanf(l.Name, "mlpconv%d.%d", &b, &c)
	if c > 0 {
		return 1, 1, 0
	}
	blk := s.Blocks[b-1]
	return int64(blk.Kernel), int64(blk.Stride), int64(blk.Pad)
}

func poolOf(s *nin.Spec, l nin.Layer) nin.Pool {
	var b int
	fmt.Sscanf(l.Name, "pool%d", &b)
	return *s.Blocks[b-1].Pool
}

// preprocessDoc says how to turn an image into the graph's input.
func preprocessDoc(m *nin.Model) string {
	p := m.Preprocess
	in := m.Spec.Input
	var b strings.Builder
	fmt.Fprintf(&b, "NIN %s exported by ninbatch. Input: float32 NCHW [batch, %d, %d, %d], %s. ", m.Spec.Name, in.C, in.H, in.W, p.Color)
	switch p.Resize {
	case "shorter":
		fmt.Fprintf(&b, "Resize the shorter side to %d, center-crop %dx%d. ", p.ResizeTo, in.H, in.W)
	case "exact":
		fmt.Fprintf(&b, "Resize to %dx%d. ", in.H, in.W)
	}
	fmt.Fprintf(&b, "Per channel: (pixel 0..255 * %g - mean) / std, mean %v, std %v. Output: class probabilities.", p.Scale, p.Mean, p.Std)
	return b.String()
}

func intsAttr(name string, v ...int64) Attribute {
	return Attribute{Name: name, Type: AttrInts, Ints: v}
}

func intAttrV(name string, v int64) Attribute {
	return Attribute{Name: name, Type: AttrInt, I: v}
}
