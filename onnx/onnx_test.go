package onnx

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ninbatch/ninbatch/nin"
)

func shipped(t *testing.T) *nin.Model {
	t.Helper()
	m, err := nin.LoadFile("../models/nin-mnist.nin")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// presetModel is a preset with exercising weights; "nin-mnist+fc" is the
// preset with the fc head.
func presetModel(t *testing.T, name string) *nin.Model {
	t.Helper()
	name, fc := strings.CutSuffix(name, "+fc")
	s, err := nin.Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	if fc {
		s.Head, s.HeadDropout = nin.HeadFC, 0.5
	}
	m, err := nin.NewModel(s)
	if err != nil {
		t.Fatal(err)
	}
	exercise(m)
	return m
}

// testPresets are the presets, and two with the fc head.
func testPresets() []string {
	return append(nin.PresetNames(), "nin-mnist+fc", "nin-cifar10+fc")
}

// exercise gives m the golden script's kind of weights (± paired rows,
// a wide last layer), whose scores differ from image to image.
func exercise(m *nin.Model) {
	convs := m.Params.Convs
	for i := range convs {
		c := &convs[i]
		fanIn := c.Cin * c.K * c.K
		bound := float32(math.Sqrt(6 / float64(fanIn)))
		if i == len(convs)-1 {
			bound *= 24
		}
		c.SetOIHW(weights(uint64(2*i+1), len(c.W), bound, c.Cout))
		copy(c.B, splitmixUniform(uint64(2*i+2), c.Cout, 0.02))
	}
}

// roundTrip exports m, serializes, decodes and imports it again.
func roundTrip(t *testing.T, m *nin.Model) *Imported {
	t.Helper()
	g, err := Export(m, "test")
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode(g.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	imp, err := Import(dec, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return imp
}

// TestExportImportIdentical: .nin → .onnx → .nin gives back the same
// spec, preprocessing, class names and bit-identical tensors.
func TestExportImportIdentical(t *testing.T) {
	models := map[string]*nin.Model{"shipped": shipped(t)}
	for _, p := range testPresets() {
		models[p] = presetModel(t, p)
	}
	floor := presetModel(t, "nin-mnist")
	floor.Spec.Pooling, floor.Spec.NoFinalReLU, floor.Spec.Name = "floor", true, "floor-nofinal"
	models["floor-nofinal"] = floor
	for name, m := range models {
		t.Run(name, func(t *testing.T) {
			imp := roundTrip(t, m)
			got := imp.Model
			if !imp.FromMetadata || imp.Softmax != "softmax" {
				t.Errorf("FromMetadata %v, Softmax %q", imp.FromMetadata, imp.Softmax)
			}
			if !reflect.DeepEqual(got.Spec, m.Spec) {
				t.Errorf("spec\n got %+v\nwant %+v", got.Spec, m.Spec)
			}
			if !reflect.DeepEqual(got.Preprocess, m.Preprocess) || !slices.Equal(got.Classes, m.Classes) {
				t.Errorf("preprocess/classes differ: %+v %v vs %+v %v", got.Preprocess, got.Classes, m.Preprocess, m.Classes)
			}
			if !slices.Equal(got.Params.Data, m.Params.Data) {
				t.Error("tensors differ")
			}
			if got.ContentID() != m.ContentID() {
				t.Error("content id differs")
			}
		})
	}
}

// TestImportWithoutMetadata: a graph from another tool (no ninbatch
// metadata) maps onto the same layers, pooling mode included.
func TestImportWithoutMetadata(t *testing.T) {
	for _, p := range testPresets() {
		m := presetModel(t, p)
		g, err := Export(m, "test")
		if err != nil {
			t.Fatal(err)
		}
		g.Metadata = nil
		imp, err := Import(g, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !SameLayers(&imp.Model.Spec, &m.Spec) || imp.FromMetadata {
			t.Errorf("%s: imported %+v", p, imp.Model.Spec)
		}
		if !slices.Equal(imp.Model.Params.Data, m.Params.Data) {
			t.Errorf("%s: tensors differ", p)
		}
	}
}

// graph is a small valid NIN graph to break in the refusal tests.
func graph(t *testing.T) *Model {
	t.Helper()
	s := &nin.Spec{Name: "tiny", Input: nin.Dims{H: 8, W: 8, C: 1}, Pooling: "ceil", Blocks: []nin.Block{
		{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{4, 3}, Pool: &nin.Pool{Type: "max", Size: 3, Stride: 2}},
		{Kernel: 1, Stride: 1, Channels: []int{2}}}}
	m, err := nin.NewModel(s)
	if err != nil {
		t.Fatal(err)
	}
	m.Params.InitHe(1)
	g, err := Export(m, "test")
	if err != nil {
		t.Fatal(err)
	}
	g.Metadata = nil
	return g
}

func importErr(t *testing.T, g *Model, opt ImportOptions) string {
	t.Helper()
	dec, err := Decode(g.Marshal())
	if err != nil {
		return err.Error()
	}
	_, err = Import(dec, opt)
	if err == nil {
		t.Fatal("imported a graph that does not fit NIN")
	}
	return err.Error()
}

func TestImportRefuses(t *testing.T) {
	cases := []struct {
		name string
		edit func(g *Model)
		want string
	}{
		{"residual Add", func(g *Model) {
			// the second conv's output joined with the first's: a ResNet-style skip
			n := &g.Graph.Nodes
			i := slices.IndexFunc(*n, func(x Node) bool { return x.Name == "mlpconv1.1.relu" })
			add := Node{Name: "skip", OpType: "Add", Inputs: []string{"mlpconv1.1.relu_pre", "mlpconv1.0.relu"}, Outputs: []string{"mlpconv1.1.relu"}}
			(*n)[i].Outputs[0] = "mlpconv1.1.relu_pre"
			*n = slices.Insert(*n, i+1, add)
		}, `feeds 2 nodes`},
		{"Add op", func(g *Model) {
			n := &g.Graph.Nodes
			i := slices.IndexFunc(*n, func(x Node) bool { return x.OpType == "MaxPool" })
			(*n)[i].OpType = "Add"
		}, `"pool1" (Add) does not fit NIN (it joins two branches`},
		{"FC head", func(g *Model) {
			n := &g.Graph.Nodes
			i := slices.IndexFunc(*n, func(x Node) bool { return x.OpType == "Softmax" })
			(*n)[i].OpType = "Gemm"
		}, `"probs" (Gemm): after global average pooling`},
		{"Gemm on the maps", func(g *Model) {
			n := &g.Graph.Nodes
			i := slices.IndexFunc(*n, func(x Node) bool { return x.OpType == "GlobalAveragePool" })
			(*n)[i].OpType = "Gemm"
		}, `"gap" (Gemm): a fully connected head needs the maps flattened first`},
		{"Flatten without Gemm", func(g *Model) {
			n := &g.Graph.Nodes
			i := slices.IndexFunc(*n, func(x Node) bool { return x.OpType == "GlobalAveragePool" })
			(*n)[i].OpType = "Flatten"
		}, `"logits" (Flatten): after a Flatten of the maps NIN's fc head has only Dropout and Gemm`},
		{"grouped conv", func(g *Model) {
			g.Graph.Nodes[0].Attrs = append(g.Graph.Nodes[0].Attrs, intAttrV("group", 2))
		}, `group 2: grouped and depthwise`},
		{"asymmetric pads", func(g *Model) {
			a, _ := g.Graph.Nodes[0].Attr("pads")
			a.Ints = []int64{1, 1, 0, 0}
		}, `pads [1 1 0 0]`},
		{"missing relu", func(g *Model) {
			n := &g.Graph.Nodes
			*n = slices.DeleteFunc(*n, func(x Node) bool { return x.Name == "mlpconv1.0.relu" })
			(*n)[1].Inputs[0] = "mlpconv1.0"
		}, `has no Relu after it`},
		{"opset 9", func(g *Model) { g.Opsets[0].Version = 9 }, `opset 9: ninbatch imports opsets 11 to 21`},
		{"huge dimension", func(g *Model) {
			w := &g.Graph.Initializers[0]
			w.Dims = []int64{1 << 40, 1, 3, 3}
		}, `conv 0 has 1099511627776 channels`},
		{"huge bias", func(g *Model) {
			b := &g.Graph.Initializers[1]
			b.Dims = []int64{1 << 20, 1 << 20}
		}, `more than 268435456 elements`},
		{"truncated weight", func(g *Model) {
			w := &g.Graph.Initializers[0]
			w.Raw = w.Raw[:len(w.Raw)-4]
		}, `needs 144 bytes, the file has 140`},
		{"no GAP", func(g *Model) {
			n := &g.Graph.Nodes
			i := slices.IndexFunc(*n, func(x Node) bool { return x.OpType == "GlobalAveragePool" })
			*n = (*n)[:i]
			g.Graph.Outputs[0].Name = (*n)[i-1].Outputs[0]
		}, `no global average pooling`},
		{"view of a map before pooling", func(g *Model) {
			// x.view(input.size(0), -1) where the size is read before global average pooling
			n := &g.Graph.Nodes
			i := slices.IndexFunc(*n, func(x Node) bool { return x.OpType == "Flatten" })
			(*n)[i] = Node{Name: "view", OpType: "Reshape", Inputs: []string{(*n)[i].Inputs[0], "in.shape"}, Outputs: (*n)[i].Outputs}
			*n = slices.Insert(*n, i, Node{Name: "size", OpType: "Shape", Inputs: []string{g.Graph.Inputs[0].Name}, Outputs: []string{"in.shape"}})
		}, `"size" (Shape) reads the size of a map before global average pooling`},
		{"view to three axes", func(g *Model) {
			// x.view(x.size(0), x.size(1), 1): not [N, classes]
			n := &g.Graph.Nodes
			i := slices.IndexFunc(*n, func(x Node) bool { return x.OpType == "Flatten" })
			gap := (*n)[i].Inputs[0]
			(*n)[i] = Node{Name: "view", OpType: "Reshape", Inputs: []string{gap, "target"}, Outputs: (*n)[i].Outputs}
			g.Graph.Initializers = append(g.Graph.Initializers,
				Tensor{Name: "nc", DataType: TypeInt64, Dims: []int64{2}, Raw: binary.LittleEndian.AppendUint64(make([]byte, 8), 1)},
				Tensor{Name: "one", DataType: TypeInt64, Dims: []int64{1}, Raw: binary.LittleEndian.AppendUint64(nil, 1)})
			*n = slices.Insert(*n, i,
				Node{Name: "size", OpType: "Shape", Inputs: []string{gap}, Outputs: []string{"gap.shape"}},
				Node{Name: "pick", OpType: "Gather", Inputs: []string{"gap.shape", "nc"}, Outputs: []string{"nc.val"}},
				Node{Name: "cat", OpType: "Concat", Inputs: []string{"nc.val", "one"}, Outputs: []string{"target"}, Attrs: []Attribute{intAttrV("axis", 0)}})
		}, `shape [N C 1], want [N, classes]`},
		{"symbolic size", func(g *Model) {
			g.Graph.Inputs[0].Shape[2] = Dim{Param: "h"}
		}, `give the image size with --input`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := graph(t)
			c.edit(g)
			if got := importErr(t, g, ImportOptions{}); !strings.Contains(got, c.want) {
				t.Errorf("error %q\nwant it to contain %q", got, c.want)
			}
		})
	}
}

// TestExternalDataConfined: external data outside the model's folder,
// through .., an absolute path or a symlink, is refused; inside it loads.
func TestExternalDataConfined(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "model")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	g := graph(t)
	w := &g.Graph.Initializers[0]
	secret := filepath.Join(root, "secret.bin")
	os.WriteFile(secret, w.Raw, 0o644)
	os.WriteFile(filepath.Join(dir, "w.bin"), w.Raw, 0o644)
	os.Symlink(secret, filepath.Join(dir, "link.bin"))
	w.Raw = nil
	for loc, want := range map[string]string{
		"../secret.bin": "relative path inside the model's folder",
		secret:          "relative path inside the model's folder",
		"link.bin":      "resolves outside the model's folder",
		"missing.bin":   "no such file",
	} {
		w.External = []KV{{"location", loc}, {"length", "144"}}
		if got := importErr(t, g, ImportOptions{Dir: dir}); !strings.Contains(got, want) {
			t.Errorf("location %q: error %q, want %q", loc, got, want)
		}
	}
	w.External = []KV{{"location", "w.bin"}, {"offset", "4"}}
	if got := importErr(t, g, ImportOptions{Dir: dir}); !strings.Contains(got, "needs bytes 4..148, the file has 144") {
		t.Errorf("short file: %q", got)
	}
	w.External = []KV{{"location", "w.bin"}}
	dec, _ := Decode(g.Marshal())
	if _, err := Import(dec, ImportOptions{Dir: dir}); err != nil {
		t.Errorf("external data inside the folder: %v", err)
	}
}

// TestDecodeTruncated: every prefix of a valid file is refused or
// decoded, never a panic.
func TestDecodeTruncated(t *testing.T) {
	b := graph(t).Marshal()
	refused := 0
	for n := 0; n < len(b); n++ {
		m, err := Decode(b[:n])
		if err != nil {
			refused++
			continue
		}
		if _, err := Import(m, ImportOptions{}); err == nil {
			t.Fatalf("a %d-byte prefix of %d imported", n, len(b))
		}
	}
	if refused < len(b)/2 {
		t.Errorf("only %d of %d prefixes refused at decode", refused, len(b))
	}
}

func FuzzImport(f *testing.F) {
	f.Add([]byte{})
	g, _ := Export(mustTiny(), "fuzz")
	f.Add(g.Marshal())
	files, _ := filepath.Glob("testdata/torch/small-*.onnx")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		imp, err := Import(m, ImportOptions{})
		if err != nil {
			return
		}
		if err := imp.Model.Spec.Validate(); err != nil {
			t.Fatalf("imported an invalid spec: %v", err)
		}
		m2, err := Export(imp.Model, "fuzz")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(m2.Marshal()); err != nil {
			t.Fatal(err)
		}
	})
}

func mustTiny() *nin.Model {
	s := &nin.Spec{Name: "tiny", Input: nin.Dims{H: 6, W: 6, C: 1}, Pooling: "ceil", Blocks: []nin.Block{
		{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{2, 2}, Pool: &nin.Pool{Type: "ave", Size: 3, Stride: 2}, Dropout: 0.5},
		{Kernel: 1, Stride: 1, Channels: []int{2}}}}
	m, err := nin.NewModel(s)
	if err != nil {
		panic(err)
	}
	m.Params.InitHe(1)
	return m
}

// TestHostileSizesAllocateLittle: a graph declaring a 2^40-element weight,
// or a huge external tensor, is refused without allocating for it.
func TestHostileSizesAllocateLittle(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 64), 0o644)
	for name, edit := range map[string]func(g *Model){
		"2^40 dims": func(g *Model) { g.Graph.Initializers[1].Dims = []int64{1 << 40} },
		"2^27 external": func(g *Model) {
			b := &g.Graph.Initializers[1]
			b.Dims, b.Raw, b.External = []int64{1 << 27}, nil, []KV{{"location", "w.bin"}}
		},
	} {
		g := graph(t)
		edit(g)
		b := g.Marshal()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m, err := Decode(b)
		if err == nil {
			_, err = Import(m, ImportOptions{Dir: dir})
		}
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("%s: imported", name)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Errorf("%s: refusing allocated %d bytes (%v)", name, d, err)
		}
	}
}
