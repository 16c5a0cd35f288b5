package onnx

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ninbatch/ninbatch/native"
	"github.com/ninbatch/ninbatch/nin"
)

// Metadata keys ninbatch writes on export and reads back on import.
const (
	MetaSpec       = "ninbatch.spec"
	MetaPreprocess = "ninbatch.preprocess"
	MetaClasses    = "ninbatch.classes"
)

// Opset range accepted on import: what torch.onnx.export and onnx's
// version converter write for these ops.
const (
	MinOpset = 11
	MaxOpset = 21
)

// ImportOptions tune Import.
type ImportOptions struct {
	// Dir is the folder of the .onnx file, where external data must live.
	Dir string
	// Input overrides the image size when the graph's input has symbolic
	// height or width (zero fields: take them from the graph).
	Input nin.Dims
}

// Imported is an ONNX graph mapped onto NIN.
type Imported struct {
	Model *nin.Model
	// Softmax is the graph's final op: "softmax", "logsoftmax" or "" (the
	// graph ends at the logits; ninbatch always writes probabilities).
	Softmax string
	// FromMetadata is true when the spec, preprocessing and class names
	// came from a ninbatch export's metadata.
	FromMetadata bool
}

// ReadFile decodes an .onnx file, refusing one over MaxFileBytes before
// reading it.
func ReadFile(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes is over the protobuf limit of %d", path, st.Size(), MaxFileBytes)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// step is one layer of the chain the graph walk found.
type step struct {
	node    string
	kind    string // conv, pool, dropout, gap
	k, s, p int
	cout    int
	w, b    *Tensor
	pool    string // max, ave
	ceil    bool
	dropout float64
	relu    bool // a Relu follows the conv
	transB  bool // fc: the weight is [classes, C·H·W] (nn.Linear), not its transpose
}

// Import maps a decoded ONNX graph onto a NIN spec and its weights. The
// graph must be one chain: Conv (+Relu) layers grouped into mlpconv blocks
// by MaxPool/AveragePool and Dropout, then GlobalAveragePool (or ReduceMean
// over H,W), optional Flatten/Reshape/Squeeze and Softmax. Anything else is
// refused with the node's name, op type and why it does not fit.
func Import(m *Model, opt ImportOptions) (*Imported, error) {
	op := m.Opset()
	if op < MinOpset || op > MaxOpset {
		return nil, fmt.Errorf("opset %d: ninbatch imports opsets %d to %d (re-export with torch.onnx.export(..., opset_version=17))", op, MinOpset, MaxOpset)
	}
	g := &m.Graph
	consts := map[string]*Tensor{}
	for i := range g.Initializers {
		consts[g.Initializers[i].Name] = &g.Initializers[i]
	}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		if n.Domain != "" && n.Domain != "ai.onnx" {
			return nil, fmt.Errorf("node %s (%s, domain %s): custom-domain ops do not fit NIN", n.Name, n.OpType, n.Domain)
		}
		if n.OpType == "Constant" && len(n.Outputs) == 1 {
			if a, ok := n.Attr("value"); ok && a.T != nil {
				consts[n.Outputs[0]] = a.T
				continue
			}
			return nil, fmt.Errorf("node %s (Constant): only a tensor value is supported", n.Name)
		}
	}
	var images []ValueInfo
	for _, in := range g.Inputs {
		if consts[in.Name] == nil {
			images = append(images, in)
		}
	}
	if len(images) != 1 {
		return nil, fmt.Errorf("the graph has %d inputs besides its weights; a NIN takes one image tensor", len(images))
	}
	if len(g.Outputs) != 1 {
		return nil, fmt.Errorf("the graph has %d outputs; a NIN has one (the class scores)", len(g.Outputs))
	}
	in, err := inputDims(images[0], opt.Input)
	if err != nil {
		return nil, err
	}
	steps, softmax, err := walk(g, consts, images[0].Name, op)
	if err != nil {
		return nil, err
	}
	spec, err := specOf(steps, in)
	if err != nil {
		return nil, err
	}
	imp := &Imported{Softmax: softmax}
	model, err := nin.NewModel(spec)
	if err != nil {
		return nil, err
	}
	convs := slices.DeleteFunc(slices.Clone(steps), func(s step) bool { return s.kind != "conv" && s.kind != "fc" })
	for i := range model.Params.Convs {
		c := &model.Params.Convs[i]
		s := convs[i]
		want := []int64{int64(c.Cout), int64(c.Cin), int64(c.K), int64(c.K)}
		if c.FC {
			want = []int64{int64(c.Cout), int64(c.Cin * c.K * c.K)}
			if !s.transB {
				want[0], want[1] = want[1], want[0]
			}
		}
		if !slices.Equal(s.w.Dims, want) {
			return nil, fmt.Errorf("node %s: weight %q has shape %v, %s needs %v", s.node, s.w.Name, s.w.Dims, c.Name, want)
		}
		w, err := s.w.Floats(opt.Dir)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", s.node, err)
		}
		if c.FC && !s.transB {
			w = transpose(w, int(want[0]), int(want[1]))
		}
		c.SetOIHW(w)
		if s.b != nil {
			b, err := s.b.Floats(opt.Dir)
			if err != nil {
				return nil, fmt.Errorf("node %s (Conv): %w", s.node, err)
			}
			if len(b) != c.Cout {
				return nil, fmt.Errorf("node %s (Conv): bias %q has %d values for %d outputs", s.node, s.b.Name, len(b), c.Cout)
			}
			copy(c.B, b)
		}
	}
	imp.Model = model
	if err := fromMetadata(m, model, imp); err != nil {
		return nil, err
	}
	return imp, nil
}

// inputDims reads [N, C, H, W] from the graph input, with H and W from
// override when the graph leaves them symbolic.
func inputDims(vi ValueInfo, override nin.Dims) (nin.Dims, error) {
	where := fmt.Sprintf("graph input %q", vi.Name)
	if vi.ElemType != TypeFloat {
		return nin.Dims{}, fmt.Errorf("%s: element type %d, want float32 (1)", where, vi.ElemType)
	}
	if !vi.HasShape || len(vi.Shape) != 4 {
		return nin.Dims{}, fmt.Errorf("%s: want a 4-D NCHW image tensor, the graph has %d dimensions", where, len(vi.Shape))
	}
	d := nin.Dims{C: int(vi.Shape[1].Value), H: int(vi.Shape[2].Value), W: int(vi.Shape[3].Value)}
	if override.H > 0 {
		d.H, d.W = override.H, override.W
	}
	if override.C > 0 && d.C == 0 {
		d.C = override.C
	}
	switch {
	case d.C != 1 && d.C != 3:
		return nin.Dims{}, fmt.Errorf("%s: %d channels; ninbatch feeds 1 (gray) or 3 (RGB)", where, vi.Shape[1].Value)
	case d.H <= 0 || d.W <= 0:
		return nin.Dims{}, fmt.Errorf("%s: height and width are symbolic (%s, %s); give the image size with --input HxW", where, vi.Shape[2].Param, vi.Shape[3].Param)
	}
	return d, nil
}

// walk follows the data path from the image input to the graph output.
func walk(g *Graph, consts map[string]*Tensor, input string, opset int64) ([]step, string, error) {
	users := map[string][]*Node{}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		for _, v := range n.Inputs {
			if v != "" {
				users[v] = append(users[v], n)
			}
		}
	}
	sh := &shapes{producer: map[string]*Node{}, sym: map[string][]int64{}, consts: consts}
	for i := range g.Nodes {
		for _, o := range g.Nodes[i].Outputs {
			sh.producer[o] = &g.Nodes[i]
		}
	}
	var steps []step
	cur, softmax := input, ""
	gap, flat := false, false
	fcFlat := false // a Flatten before any pooling: an fc head's Gemm must follow
	for seen := 0; cur != g.Outputs[0].Name; seen++ {
		// Shape nodes only read a size (x.view(x.size(0), -1)); a Reshape
		// that uses it is checked by shapes.eval.
		us := slices.DeleteFunc(slices.Clone(users[cur]), func(n *Node) bool { return n.OpType == "Shape" })
		if len(us) != 1 {
			if len(us) == 0 {
				return nil, "", fmt.Errorf("value %q feeds no node and is not the graph output %q", cur, g.Outputs[0].Name)
			}
			return nil, "", fmt.Errorf("value %q feeds %d nodes (%s and %s): NIN is a single chain of layers", cur, len(us), desc(us[0]), desc(us[1]))
		}
		n := us[0]
		if seen > len(g.Nodes) {
			return nil, "", errors.New("the graph has a cycle")
		}
		if len(n.Inputs) == 0 || n.Inputs[0] != cur {
			return nil, "", fmt.Errorf("node %s: %q is not its first (data) input", desc(n), cur)
		}
		if softmax != "" {
			return nil, "", fmt.Errorf("node %s: nothing may follow the final %s", desc(n), softmax)
		}
		for _, extra := range n.Inputs[1:] {
			if extra != "" && consts[extra] == nil && n.OpType != "Reshape" {
				return nil, "", fmt.Errorf("node %s: input %q is computed in the graph; only constant weights and shapes are supported", desc(n), extra)
			}
		}
		if fcFlat && !slices.Contains([]string{"Gemm", "Identity", "Dropout"}, n.OpType) {
			return nil, "", fmt.Errorf("node %s: after a Flatten of the maps NIN's fc head has only Dropout and Gemm (nn.Linear)", desc(n))
		}
		if gap && !slices.Contains([]string{"Flatten", "Reshape", "Squeeze", "Identity", "Softmax", "LogSoftmax", "Dropout"}, n.OpType) {
			return nil, "", fmt.Errorf("node %s: after global average pooling NIN has only Flatten/Reshape/Squeeze and Softmax", desc(n))
		}
		var s *step
		var err error
		switch n.OpType {
		case "Conv":
			s, err = convStep(n, consts)
		case "Relu":
			if len(steps) == 0 || steps[len(steps)-1].kind != "conv" || steps[len(steps)-1].relu {
				return nil, "", fmt.Errorf("node %s: NIN has a Relu only right after a Conv", desc(n))
			}
			steps[len(steps)-1].relu = true
		case "MaxPool", "AveragePool":
			s, err = poolStep(n)
		case "GlobalAveragePool":
			s = &step{node: n.Name, kind: "gap"}
		case "ReduceMean":
			s, err = reduceMeanStep(n, consts, opset)
		case "Dropout":
			s, err = dropoutStep(n, consts, opset)
			switch {
			case gap:
				s = nil // identity at inference
			case fcFlat && s != nil:
				s.kind = "headdrop"
			}
		case "Identity":
		case "Gemm":
			if !fcFlat {
				return nil, "", fmt.Errorf("node %s: a fully connected head needs the maps flattened first (nn.Flatten or torch.flatten(x, 1))", desc(n))
			}
			s, err = gemmStep(n, consts)
			fcFlat, gap, flat = false, true, true
		case "Flatten", "Reshape", "Squeeze":
			if !gap && n.OpType == "Flatten" && len(steps) > 0 {
				err = flattenCheck(n, sh, opset) // axis 1: an fc head's input
				fcFlat = true
				break
			}
			if !gap {
				return nil, "", fmt.Errorf("node %s: NIN reshapes only after global average pooling", desc(n))
			}
			err = flattenCheck(n, sh, opset)
			flat = true
		case "Softmax", "LogSoftmax":
			if !gap {
				return nil, "", fmt.Errorf("node %s: %s before global average pooling does not fit NIN", desc(n), n.OpType)
			}
			if a, ok := n.Attr("axis"); ok && a.I != 1 && a.I != -1 && !(a.I == 3 && !flat) {
				return nil, "", fmt.Errorf("node %s: softmax over axis %d, want the class axis 1", desc(n), a.I)
			}
			softmax = strings.ToLower(n.OpType)
		default:
			return nil, "", fmt.Errorf("node %s does not fit NIN (%s)", desc(n), whyNot(n.OpType))
		}
		if err != nil {
			return nil, "", fmt.Errorf("node %s: %w", desc(n), err)
		}
		if s != nil {
			if s.kind == "gap" {
				gap = true
			}
			steps = append(steps, *s)
		}
		if len(n.Outputs) == 0 {
			return nil, "", fmt.Errorf("node %s has no output", desc(n))
		}
		for _, o := range n.Outputs[1:] {
			if o != "" && len(users[o]) > 0 {
				return nil, "", fmt.Errorf("node %s: its second output %q is used; NIN needs only the first", desc(n), o)
			}
		}
		if gap {
			sh.sym[n.Outputs[0]] = sh.after(n, cur)
		}
		cur = n.Outputs[0]
	}
	if fcFlat {
		return nil, "", errors.New("the graph flattens its maps but has no Gemm (nn.Linear) after them")
	}
	if !gap {
		return nil, "", errors.New("the graph has no global average pooling (GlobalAveragePool or ReduceMean over H,W): NIN classifies by averaging its last class maps")
	}
	return steps, softmax, nil
}

func desc(n *Node) string {
	name := n.Name
	if name == "" && len(n.Outputs) > 0 {
		name = "-> " + n.Outputs[0]
	}
	return fmt.Sprintf("%q (%s)", name, n.OpType)
}

func whyNot(op string) string {
	switch op {
	case "Add", "Sum", "Concat", "Mul":
		return "it joins two branches or rescales; NIN is one chain of convs, pools and ReLUs"
	case "MatMul":
		return "a fully connected head as MatMul; export nn.Linear after nn.Flatten, which torch writes as Gemm"
	case "BatchNormalization", "LRN", "InstanceNormalization":
		return "normalisation layers are not part of NIN; fold them into the conv weights before export"
	case "Sigmoid", "Tanh", "LeakyRelu", "PRelu", "Elu", "Clip", "HardSigmoid":
		return "NIN uses ReLU"
	case "Sub", "Div", "Cast", "Transpose", "Resize":
		return "preprocessing inside the graph is not imported; give --scale/--mean/--std instead"
	}
	return "not an op of the NIN architecture"
}

func ints(n *Node, name string, def []int64) []int64 {
	if a, ok := n.Attr(name); ok {
		return a.Ints
	}
	return def
}

func intAttr(n *Node, name string, def int64) int64 {
	if a, ok := n.Attr(name); ok {
		return a.I
	}
	return def
}

// square returns v[0] when v is [x, x] (2-D spatial attribute).
func square(what string, v []int64) (int, error) {
	if len(v) != 2 || v[0] != v[1] {
		return 0, fmt.Errorf("%s %v: ninbatch needs the same value for height and width", what, v)
	}
	if v[0] < 0 || v[0] > 64 {
		return 0, fmt.Errorf("%s %v out of range", what, v)
	}
	return int(v[0]), nil
}

// symPads returns the pad of [t, l, b, r] when all four agree.
func symPads(n *Node) (int, error) {
	switch ap, _ := n.Attr("auto_pad"); {
	case ap != nil && ap.S == "VALID":
		return 0, nil
	case ap != nil && ap.S != "" && ap.S != "NOTSET":
		return 0, fmt.Errorf("auto_pad %s is not supported; export with explicit pads", ap.S)
	}
	p := ints(n, "pads", []int64{0, 0, 0, 0})
	if len(p) != 4 || p[0] != p[1] || p[0] != p[2] || p[0] != p[3] || p[0] < 0 || p[0] > 64 {
		return 0, fmt.Errorf("pads %v: ninbatch needs one pad on all four sides", p)
	}
	return int(p[0]), nil
}

func unitDilations(n *Node) error {
	for _, d := range ints(n, "dilations", nil) {
		if d != 1 {
			return fmt.Errorf("dilations %v: dilated convolutions and pools do not fit NIN", ints(n, "dilations", nil))
		}
	}
	return nil
}

func convStep(n *Node, consts map[string]*Tensor) (*step, error) {
	if len(n.Inputs) < 2 || consts[n.Inputs[1]] == nil {
		return nil, errors.New("the weight is not an initializer")
	}
	w := consts[n.Inputs[1]]
	if len(w.Dims) != 4 {
		return nil, fmt.Errorf("weight %q has shape %v, want [out, in, kh, kw]", w.Name, w.Dims)
	}
	if g := intAttr(n, "group", 1); g != 1 {
		return nil, fmt.Errorf("group %d: grouped and depthwise convolutions do not fit NIN", g)
	}
	if err := unitDilations(n); err != nil {
		return nil, err
	}
	k, err := square("kernel_shape", ints(n, "kernel_shape", w.Dims[2:]))
	if err != nil {
		return nil, err
	}
	if int64(k) != w.Dims[2] || int64(k) != w.Dims[3] {
		return nil, fmt.Errorf("kernel_shape %d does not match weight %q %v", k, w.Name, w.Dims)
	}
	st, err := square("strides", ints(n, "strides", []int64{1, 1}))
	if err != nil {
		return nil, err
	}
	p, err := symPads(n)
	if err != nil {
		return nil, err
	}
	s := &step{node: n.Name, kind: "conv", k: k, s: st, p: p, w: w, cout: int(w.Dims[0])}
	if len(n.Inputs) > 2 && n.Inputs[2] != "" {
		s.b = consts[n.Inputs[2]]
	}
	return s, nil
}

// gemmStep is an fc head: nn.Linear as torch exports it, Y = X·Bᵀ + C with
// B [classes, C·H·W] (transB=1), or B [C·H·W, classes] (transB=0).
func gemmStep(n *Node, consts map[string]*Tensor) (*step, error) {
	for _, a := range []string{"alpha", "beta"} {
		if v, ok := n.Attr(a); ok && v.F != 1 {
			return nil, fmt.Errorf("%s %g, want 1", a, v.F)
		}
	}
	if intAttr(n, "transA", 0) != 0 {
		return nil, errors.New("transA=1: the flattened maps must be the rows")
	}
	if len(n.Inputs) < 2 || consts[n.Inputs[1]] == nil {
		return nil, errors.New("the weight is not a constant")
	}
	w := consts[n.Inputs[1]]
	if len(w.Dims) != 2 {
		return nil, fmt.Errorf("weight %q has shape %v, want 2-D", w.Name, w.Dims)
	}
	st := &step{node: n.Name, kind: "fc", w: w, transB: intAttr(n, "transB", 0) == 1}
	st.cout = int(w.Dims[1])
	if st.transB {
		st.cout = int(w.Dims[0])
	}
	if len(n.Inputs) > 2 && n.Inputs[2] != "" {
		b := consts[n.Inputs[2]]
		if b == nil || len(b.Dims) != 1 || int(b.Dims[0]) != st.cout {
			return nil, fmt.Errorf("bias %q: want a constant of %d values", n.Inputs[2], st.cout)
		}
		st.b = b
	}
	return st, nil
}

func poolStep(n *Node) (*step, error) {
	if err := unitDilations(n); err != nil {
		return nil, err
	}
	if intAttr(n, "storage_order", 0) != 0 {
		return nil, errors.New("storage_order 1 is not supported")
	}
	k, err := square("kernel_shape", ints(n, "kernel_shape", nil))
	if err != nil {
		return nil, err
	}
	st, err := square("strides", ints(n, "strides", []int64{1, 1}))
	if err != nil {
		return nil, err
	}
	p, err := symPads(n)
	if err != nil {
		return nil, err
	}
	s := &step{node: n.Name, kind: "pool", pool: "max", k: k, s: st, p: p, ceil: intAttr(n, "ceil_mode", 0) == 1}
	if n.OpType == "AveragePool" {
		s.pool = "ave"
		if p > 0 && intAttr(n, "count_include_pad", 0) == 0 {
			return nil, errors.New("average pooling with pads and count_include_pad=0; ninbatch (like Caffe) counts the padding in the average")
		}
	}
	return s, nil
}

func reduceMeanStep(n *Node, consts map[string]*Tensor, opset int64) (*step, error) {
	axes := ints(n, "axes", nil)
	if opset >= 18 && len(n.Inputs) > 1 && n.Inputs[1] != "" {
		v, err := consts[n.Inputs[1]].Ints()
		if err != nil {
			return nil, err
		}
		axes = v
	}
	norm := make([]int64, len(axes))
	for i, a := range axes {
		norm[i] = (a + 4) % 4
	}
	slices.Sort(norm)
	if !slices.Equal(norm, []int64{2, 3}) {
		return nil, fmt.Errorf("mean over axes %v; NIN's global average pooling is the mean over H and W (axes 2, 3)", axes)
	}
	return &step{node: n.Name, kind: "gap"}, nil
}

func dropoutStep(n *Node, consts map[string]*Tensor, opset int64) (*step, error) {
	ratio := 0.5
	if a, ok := n.Attr("ratio"); ok {
		ratio = float64(a.F)
	}
	if opset >= 12 && len(n.Inputs) > 1 && n.Inputs[1] != "" {
		v, err := consts[n.Inputs[1]].Floats("")
		if err != nil || len(v) != 1 {
			return nil, fmt.Errorf("ratio input %q is not one float", n.Inputs[1])
		}
		ratio = float64(v[0])
	}
	if !(ratio >= 0 && ratio < 1) {
		return nil, fmt.Errorf("ratio %g out of [0, 1)", ratio)
	}
	return &step{node: n.Name, kind: "dropout", dropout: ratio}, nil
}

// flattenCheck accepts the reshapes of an [N, C, 1, 1] map to [N, C].
func flattenCheck(n *Node, sh *shapes, opset int64) error {
	consts := sh.consts
	switch n.OpType {
	case "Flatten":
		if a := intAttr(n, "axis", 1); a != 1 {
			return fmt.Errorf("axis %d, want 1 (keep the batch axis)", a)
		}
	case "Reshape":
		if len(n.Inputs) < 2 {
			return errors.New("no shape input")
		}
		v, _, err := sh.eval(n.Inputs[1], 0)
		if err != nil {
			return fmt.Errorf("shape %q: %w", n.Inputs[1], err)
		}
		n0, c := len(v) == 2 && (v[0] == symN || v[0] == 0 || v[0] == -1 || v[0] >= 1), len(v) == 2 && (v[1] == symC || v[1] == -1 || v[1] >= 1)
		if !n0 || !c || (v[0] == -1 && v[1] == -1) {
			return fmt.Errorf("shape %s, want [N, classes]", symString(v))
		}
	case "Squeeze":
		axes := ints(n, "axes", nil)
		if opset >= 13 && len(n.Inputs) > 1 && n.Inputs[1] != "" {
			v, err := consts[n.Inputs[1]].Ints()
			if err != nil {
				return err
			}
			axes = v
		}
		for _, a := range axes {
			if a := (a + 4) % 4; a != 2 && a != 3 {
				return fmt.Errorf("squeezes axis %d; only the 1×1 spatial axes can go", a)
			}
		}
	}
	return nil
}

// specOf groups the chain into mlpconv blocks: a block opens with a conv
// after a pool or dropout, or with a conv that is not 1×1/s1/p0.
func specOf(steps []step, in nin.Dims) (*nin.Spec, error) {
	spec := &nin.Spec{Name: "imported", Input: in}
	cur := in
	mode := "" // the pooling rounding the graph needs, "" while either fits
	stated := ""
	var b *nin.Block
	lastConv := -1
	for i, s := range steps {
		if s.kind == "conv" {
			lastConv = i
		}
	}
	for i, s := range steps {
		switch s.kind {
		case "conv":
			pointwise := s.k == 1 && s.s == 1 && s.p == 0
			if b == nil || b.Pool != nil || b.Dropout > 0 || !pointwise {
				spec.Blocks = append(spec.Blocks, nin.Block{Kernel: s.k, Stride: s.s, Pad: s.p})
				b = &spec.Blocks[len(spec.Blocks)-1]
			}
			b.Channels = append(b.Channels, s.cout)
			if !s.relu && i != lastConv {
				return nil, fmt.Errorf("node %q (Conv) has no Relu after it; NIN has a ReLU after every conv but the last", s.node)
			}
			if i == lastConv {
				spec.NoFinalReLU = !s.relu
			}
			cur = nin.Dims{H: native.OutSize(cur.H, s.k, s.s, s.p, false), W: native.OutSize(cur.W, s.k, s.s, s.p, false), C: s.cout}
		case "pool":
			if b == nil || b.Pool != nil {
				return nil, fmt.Errorf("node %q (pool): NIN pools once after each mlpconv block", s.node)
			}
			if i > lastConv {
				return nil, fmt.Errorf("node %q (pool): pooling after the last conv would change the class maps' size; not supported", s.node)
			}
			b.Pool = &nin.Pool{Type: s.pool, Size: s.k, Stride: s.s, Pad: s.p}
			c, f := native.OutSize(cur.H, s.k, s.s, s.p, true), native.OutSize(cur.H, s.k, s.s, s.p, false)
			cw, fw := native.OutSize(cur.W, s.k, s.s, s.p, true), native.OutSize(cur.W, s.k, s.s, s.p, false)
			want := map[bool]string{true: "ceil", false: "floor"}[s.ceil]
			if stated == "" {
				stated = want
			}
			if c != f || cw != fw {
				if mode != "" && mode != want {
					return nil, fmt.Errorf("node %q (pool): ceil_mode differs from an earlier pool's, and ninbatch uses one rounding for the whole net", s.node)
				}
				mode = want
			}
			if s.ceil {
				cur.H, cur.W = c, cw
			} else {
				cur.H, cur.W = f, fw
			}
		case "dropout":
			if b == nil {
				return nil, fmt.Errorf("node %q (Dropout) before the first conv does not fit NIN", s.node)
			}
			if b.Dropout > 0 {
				b.Dropout = 1 - (1-b.Dropout)*(1-s.dropout)
			} else {
				b.Dropout = s.dropout
			}
		case "gap":
			if i < lastConv {
				return nil, fmt.Errorf("node %q: global average pooling before the last conv", s.node)
			}
		case "headdrop":
			spec.HeadDropout = s.dropout
		case "fc":
			k := int(s.w.Dims[0] * s.w.Dims[1] / int64(s.cout))
			switch {
			case k != cur.Len():
				return nil, fmt.Errorf("node %q (Gemm): weight %v over a flattened %s map of %d values", s.node, s.w.Dims, cur, cur.Len())
			case s.cout != cur.C:
				return nil, fmt.Errorf("node %q (Gemm): an fc head to %d classes after a last conv of %d channels; ninbatch's fc head keeps NIN's one map per class (last conv of %d channels)", s.node, s.cout, cur.C, s.cout)
			}
			spec.Head = nin.HeadFC
		}
	}
	switch {
	case mode != "":
		spec.Pooling = mode
	case stated != "":
		spec.Pooling = stated
	default:
		spec.Pooling = "ceil"
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("the graph maps onto no valid NIN: %w", err)
	}
	return spec, nil
}

// fromMetadata takes the spec's training fields, the preprocessing and
// the class names from a ninbatch export, after checking that the
// metadata's spec has the graph's layers.
func fromMetadata(m *Model, model *nin.Model, imp *Imported) error {
	model.Preprocess = nin.DefaultPreprocess(&model.Spec)
	s, ok := m.MetadataValue(MetaSpec)
	if !ok {
		return nil
	}
	meta, err := nin.ParseSpec([]byte(s))
	if err != nil {
		return fmt.Errorf("metadata %s: %w", MetaSpec, err)
	}
	if !SameLayers(meta, &model.Spec) {
		return fmt.Errorf("metadata %s describes another network than the graph holds", MetaSpec)
	}
	model.Spec = *meta
	if s, ok := m.MetadataValue(MetaPreprocess); ok {
		var p nin.Preprocess
		dec := json.NewDecoder(strings.NewReader(s))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return fmt.Errorf("metadata %s: %w", MetaPreprocess, err)
		}
		if err := p.Validate(meta); err != nil {
			return fmt.Errorf("metadata %s: %w", MetaPreprocess, err)
		}
		model.Preprocess = p
	}
	if s, ok := m.MetadataValue(MetaClasses); ok {
		var c []string
		if err := json.Unmarshal([]byte(s), &c); err != nil || (len(c) != 0 && len(c) != meta.Classes()) {
			return fmt.Errorf("metadata %s: want %d class names", MetaClasses, meta.Classes())
		}
		if len(c) > 0 {
			model.Classes = c
		}
	}
	imp.FromMetadata = true
	return nil
}

// SameLayers compares what the graph determines: every layer's op, shapes
// and parameter count, ignoring training-only fields (name, dropout, init
// and learning-rate settings) and a pooling rounding that changes no size.
func SameLayers(a, b *nin.Spec) bool {
	la, err1 := a.Plan()
	lb, err2 := b.Plan()
	if err1 != nil || err2 != nil || a.NoFinalReLU != b.NoFinalReLU {
		return false
	}
	keep := func(l nin.Layer) bool { return strings.HasPrefix(l.Name, "drop") }
	la, lb = slices.DeleteFunc(la, keep), slices.DeleteFunc(lb, keep)
	if len(la) != len(lb) {
		return false
	}
	for i := range la {
		x, y := la[i], lb[i]
		opx, _, _ := strings.Cut(x.Op, " (")
		opy, _, _ := strings.Cut(y.Op, " (")
		if x.Name != y.Name || opx != opy || x.In != y.In || x.Out != y.Out || x.Params != y.Params {
			return false
		}
	}
	return true
}

// Symbolic sizes after global average pooling: the batch and the classes.
const (
	symN = -1 << 40
	symC = -1 << 41
)

func symString(v []int64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		switch x {
		case symN:
			parts[i] = "N"
		case symC:
			parts[i] = "C"
		default:
			parts[i] = fmt.Sprint(x)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// shapes evaluates the small integer graphs torch writes for
// x.view(x.size(0), -1): Shape, Gather, Unsqueeze, Concat, Cast over the
// symbolic shape of a value after global average pooling.
type shapes struct {
	producer map[string]*Node
	sym      map[string][]int64 // data values after GAP: [N C 1 1] or [N C]
	consts   map[string]*Tensor
}

// after is the symbolic shape of n's output, n consuming in (after GAP).
func (sh *shapes) after(n *Node, in string) []int64 {
	switch {
	case n.OpType == "GlobalAveragePool" || (n.OpType == "ReduceMean" && intAttr(n, "keepdims", 1) == 1):
		return []int64{symN, symC, 1, 1}
	case n.OpType == "Identity" || n.OpType == "Dropout":
		if s := sh.sym[in]; s != nil {
			return s
		}
	}
	return []int64{symN, symC}
}

// eval returns the integer vector (or scalar) named v.
func (sh *shapes) eval(v string, depth int) (vals []int64, scalar bool, err error) {
	if t := sh.consts[v]; t != nil {
		vals, err := t.Ints()
		return vals, len(t.Dims) == 0, err
	}
	n := sh.producer[v]
	if n == nil || depth > 16 {
		return nil, false, errors.New("not a constant or a shape computation")
	}
	arg := func(i int) ([]int64, bool, error) {
		if i >= len(n.Inputs) {
			return nil, false, fmt.Errorf("node %s has no input %d", desc(n), i)
		}
		return sh.eval(n.Inputs[i], depth+1)
	}
	switch n.OpType {
	case "Shape":
		s := sh.sym[n.Inputs[0]]
		if s == nil {
			return nil, false, fmt.Errorf("node %s reads the size of a map before global average pooling", desc(n))
		}
		if _, ok := n.Attr("start"); ok {
			return nil, false, fmt.Errorf("node %s: Shape with start/end is not supported", desc(n))
		}
		return s, false, nil
	case "Cast", "Identity":
		return arg(0)
	case "Gather":
		data, _, err := arg(0)
		if err != nil {
			return nil, false, err
		}
		idx, sc, err := arg(1)
		if err != nil || intAttr(n, "axis", 0) != 0 {
			return nil, false, fmt.Errorf("node %s: only Gather on axis 0 of a shape", desc(n))
		}
		out := make([]int64, len(idx))
		for i, j := range idx {
			if j < 0 {
				j += int64(len(data))
			}
			if j < 0 || j >= int64(len(data)) {
				return nil, false, fmt.Errorf("node %s: index %d out of range", desc(n), idx[i])
			}
			out[i] = data[j]
		}
		return out, sc, nil
	case "Unsqueeze":
		x, sc, err := arg(0)
		if err != nil || !sc {
			return nil, false, fmt.Errorf("node %s: only a scalar can be unsqueezed here", desc(n))
		}
		return x, false, nil
	case "Concat":
		var out []int64
		for i := range n.Inputs {
			x, _, err := arg(i)
			if err != nil {
				return nil, false, err
			}
			if len(out)+len(x) > 8 {
				return nil, false, fmt.Errorf("node %s: shape longer than 8", desc(n))
			}
			out = append(out, x...)
		}
		return out, false, nil
	}
	return nil, false, fmt.Errorf("node %s does not compute a shape NIN can read", desc(n))
}

// transpose returns the r×c row-major matrix m as c×r.
func transpose(m []float32, r, c int) []float32 {
	t := make([]float32, len(m))
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			t[j*r+i] = m[i*c+j]
		}
	}
	return t
}
