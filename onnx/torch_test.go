package onnx

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ninbatch/ninbatch/nin"
)

// The files under testdata/torch come from scripts/onnx-goldens.py:
// PyTorch models exported with torch.onnx.export, with their weights and
// inputs drawn from splitmix64 streams that these tests regenerate.

type goldenTensor struct {
	Name  string  `json:"name"`
	Shape []int64 `json:"shape"`
	Seed  uint64  `json:"seed"`
	Bound float32 `json:"bound"`
}

type golden struct {
	Model     string         `json:"model"`
	Base      string         `json:"base"` // variants share their base's weights and outputs
	Opset     int            `json:"opset"`
	Input     [3]int         `json:"input"` // C, H, W
	Batch     int            `json:"batch"`
	InputSeed uint64         `json:"input_seed"`
	Classes   int            `json:"classes"`
	Tensors   []goldenTensor `json:"tensors"`
	OnnxData  []struct {
		Offset int64   `json:"offset"`
		Seed   uint64  `json:"seed"`
		Count  int     `json:"count"`
		Bound  float32 `json:"bound"`
	} `json:"onnx_data"`
	OnnxDataBytes      int64  `json:"onnx_data_bytes"`
	OnnxDataSHA256     string `json:"onnx_data_sha256"`
	SafetensorsSHA256  string `json:"safetensors_sha256"`
	dir, name          string
}

// splitmixUniform is the script's uniform(seed, n, bound).
func splitmixUniform(seed uint64, n int, bound float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		z := seed + uint64(i+1)*0x9E3779B97F4A7C15
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		u := float32(z>>40) * (1.0 / (1 << 24))
		out[i] = float32(float32(2)*u-1) * bound
	}
	return out
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func loadGoldens(t *testing.T) []*golden {
	t.Helper()
	files, _ := filepath.Glob("testdata/torch/*.json")
	if len(files) < 8 {
		t.Fatalf("testdata/torch has %d manifests; run scripts/onnx-goldens.py", len(files))
	}
	var gs []*golden
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		g := &golden{dir: "testdata/torch", name: strings.TrimSuffix(filepath.Base(f), ".json")}
		if err := json.Unmarshal(b, g); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if g.Base == "" {
			g.Base = g.name
		}
		gs = append(gs, g)
	}
	return gs
}

// stage copies the graph into a temp folder and rebuilds its external
// data there, checked against the script's sha256.
func (g *golden) stage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(g.dir, g.name+".onnx"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, g.name+".onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if g.OnnxDataBytes == 0 {
		return path
	}
	data := make([]byte, g.OnnxDataBytes)
	for _, e := range g.OnnxData {
		copy(data[e.Offset:], f32bytes(splitmixUniform(e.Seed, e.Count, e.Bound)))
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != g.OnnxDataSHA256 {
		t.Fatalf("%s: regenerated external data does not match the script's sha256", g.name)
	}
	if err := os.WriteFile(path+".data", data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// stageSafetensors rebuilds the state dict safetensors.torch.save_file
// would write: the stored header, then the tensors in its offset order.
func (g *golden) stageSafetensors(t *testing.T) string {
	t.Helper()
	hdr, err := os.ReadFile(filepath.Join(g.dir, g.Base+".safetensors.header"))
	if err != nil {
		t.Fatal(err)
	}
	var entries map[string]struct {
		Offsets [2]int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(hdr, &entries); err != nil {
		t.Fatal(err)
	}
	var end int64
	for _, e := range entries {
		end = max(end, e.Offsets[1])
	}
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	file = append(file, hdr...)
	data := make([]byte, end)
	for _, tn := range g.Tensors {
		n := 1
		for _, d := range tn.Shape {
			n *= int(d)
		}
		copy(data[entries[tn.Name].Offsets[0]:], f32bytes(splitmixUniform(tn.Seed, n, tn.Bound)))
	}
	file = append(file, data...)
	if sum := sha256.Sum256(file); hex.EncodeToString(sum[:]) != g.SafetensorsSHA256 {
		t.Fatalf("%s: regenerated safetensors file does not match the script's sha256", g.name)
	}
	path := filepath.Join(t.TempDir(), g.Base+".safetensors")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// check runs the imported model on the script's inputs and compares with
// PyTorch's probabilities: within 1e-4, top-1 identical.
func (g *golden) check(t *testing.T, m *nin.Model) {
	t.Helper()
	c, h, w := g.Input[0], g.Input[1], g.Input[2]
	if m.Spec.Input != (nin.Dims{H: h, W: w, C: c}) || m.Spec.Classes() != g.Classes {
		t.Fatalf("imported spec input %s, %d classes; torch had %dx%dx%d, %d", m.Spec.Input, m.Spec.Classes(), h, w, c, g.Classes)
	}
	nchw := splitmixUniform(g.InputSeed, g.Batch*c*h*w, 1)
	x := make([]float32, len(nchw))
	for n := 0; n < g.Batch; n++ {
		for ch := 0; ch < c; ch++ {
			for i := 0; i < h*w; i++ {
				x[(n*h*w+i)*c+ch] = nchw[(n*c+ch)*h*w+i]
			}
		}
	}
	raw, err := os.ReadFile(filepath.Join(g.dir, g.Base+".probs.f32"))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, len(raw)/4)
	for i := range want {
		want[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	net, err := nin.NewNet(m, nin.Options{MaxBatch: g.Batch, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	got := make([]float32, g.Batch*g.Classes)
	if err := net.Forward(x, g.Batch, got, nil); err != nil {
		t.Fatal(err)
	}
	var worst float64
	for n := 0; n < g.Batch; n++ {
		row, wrow := got[n*g.Classes:(n+1)*g.Classes], want[n*g.Classes:(n+1)*g.Classes]
		for i := range row {
			worst = max(worst, math.Abs(float64(row[i]-wrow[i])))
		}
		if a, b := argmax(row), argmax(wrow); a != b {
			t.Errorf("image %d: ninbatch top-1 %d, PyTorch %d", n, a, b)
		}
	}
	if worst > 1e-4 {
		t.Errorf("largest probability difference from PyTorch %.3g > 1e-4", worst)
	}
	t.Logf("%s: %d images, largest |Δp| %.2g", g.name, g.Batch, worst)
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func TestTorchGoldensONNX(t *testing.T) {
	for _, g := range loadGoldens(t) {
		t.Run(g.name, func(t *testing.T) {
			path := g.stage(t)
			m, _, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if int(m.Opset()) != g.Opset {
				t.Fatalf("opset %d, manifest says %d", m.Opset(), g.Opset)
			}
			imp, err := Import(m, ImportOptions{Dir: filepath.Dir(path)})
			if err != nil {
				t.Fatal(err)
			}
			g.check(t, imp.Model)
		})
	}
}
