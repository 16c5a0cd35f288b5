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
	Rows  int     `json:"rows"`
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
		Rows   int     `json:"rows"`
	} `json:"onnx_data"`
	OnnxDataBytes     int64  `json:"onnx_data_bytes"`
	OnnxDataSHA256    string `json:"onnx_data_sha256"`
	SafetensorsSHA256 string `json:"safetensors_sha256"`
	dir, name         string
}

// splitmix is the script's splitmix(seed, n): outputs 1..n of splitmix64.
func splitmix(seed uint64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		z := seed + uint64(i+1)*0x9E3779B97F4A7C15
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		out[i] = z ^ (z >> 31)
	}
	return out
}

// splitmixUniform is the script's uniform(seed, n, bound).
func splitmixUniform(seed uint64, n int, bound float32) []float32 {
	out := make([]float32, n)
	for i, z := range splitmix(seed, n) {
		u := float32(z>>40) * (1.0 / (1 << 24))
		out[i] = float32(float32(2)*u-1) * bound
	}
	return out
}

// weights is the script's fill(): uniform values; a weight tensor's rows
// (one per output channel) in ± pairs half a row apart.
func weights(seed uint64, n int, bound float32, rows int) []float32 {
	v := splitmixUniform(seed, n, bound)
	if rows > 0 {
		cols := n / rows
		half := cols / 2
		for r := 0; r < rows; r++ {
			for j := 0; j < half; j++ {
				v[r*cols+half+j] = -v[r*cols+j]
			}
		}
	}
	return v
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
		copy(data[e.Offset:], f32bytes(weights(e.Seed, e.Count, e.Bound, e.Rows)))
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
		copy(data[entries[tn.Name].Offsets[0]:], f32bytes(weights(tn.Seed, n, tn.Bound, tn.Rows)))
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
	imagePatches(nchw, g.InputSeed, g.Batch, c, h, w)
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
	var worst, worstLog float64
	for n := 0; n < g.Batch; n++ {
		row, wrow := got[n*g.Classes:(n+1)*g.Classes], want[n*g.Classes:(n+1)*g.Classes]
		for i := range row {
			worst = max(worst, math.Abs(float64(row[i]-wrow[i])))
			if wrow[i] > 1e-6 { // log-probabilities: the class scores' agreement where p is small
				worstLog = max(worstLog, math.Abs(math.Log(float64(row[i]))-math.Log(float64(wrow[i]))))
			}
		}
		if a, b := argmax(row), argmax(wrow); a != b {
			t.Errorf("image %d: ninbatch top-1 %d, PyTorch %d", n, a, b)
		}
	}
	if d := distinctTop1(want, g.Classes); d < 2 {
		t.Errorf("PyTorch's outputs have %d distinct top-1 classes: the inputs do not exercise the model", d)
	}
	if worst > 1e-4 {
		t.Errorf("largest probability difference from PyTorch %.3g > 1e-4", worst)
	}
	if worstLog > 1e-3 {
		t.Errorf("largest log-probability difference from PyTorch %.3g > 1e-3", worstLog)
	}
	t.Logf("%s: %d images, largest |Δp| %.2g, |Δlog p| %.2g", g.name, g.Batch, worst, worstLog)
}

// imagePatches is the script's images(): noise scaled per image, plus a
// patch with a place and brightness per image and channel.
func imagePatches(x []float32, seed uint64, batch, c, h, w int) {
	scale := splitmixUniform(seed+1, batch, 0.75)
	amp := splitmixUniform(seed+2, batch*c, 2)
	pos := splitmix(seed+3, 2*batch)
	ph, pw := max(1, h/3), max(1, w/3)
	for n := 0; n < batch; n++ {
		y0, x0 := int(pos[2*n]%uint64(h-ph+1)), int(pos[2*n+1]%uint64(w-pw+1))
		for ch := 0; ch < c; ch++ {
			img := x[(n*c+ch)*h*w : (n*c+ch+1)*h*w]
			for i := range img {
				img[i] *= 1.25 + scale[n]
			}
			for y := y0; y < y0+ph; y++ {
				for xx := x0; xx < x0+pw; xx++ {
					img[y*w+xx] += amp[n*c+ch]
				}
			}
		}
	}
}

func distinctTop1(p []float32, classes int) int {
	seen := map[int]bool{}
	for i := 0; i+classes <= len(p); i += classes {
		seen[argmax(p[i:i+classes])] = true
	}
	return len(seen)
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
			m, err := ReadFile(path)
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

// goldenSpec is the architecture a user would pass for the state dict:
// the preset, the shipped d2l spec, or (small nets) the ONNX graph's.
func (g *golden) spec(t *testing.T) *nin.Spec {
	t.Helper()
	switch {
	case strings.HasPrefix(g.Base, "nin-"):
		s, err := nin.Preset(g.Base)
		if err != nil {
			t.Fatal(err)
		}
		return s
	case g.Base == "d2l-nin":
		b, err := os.ReadFile("../models/specs/d2l-nin.json")
		if err != nil {
			t.Fatal(err)
		}
		s, err := nin.ParseSpec(b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	path := g.stage(t)
	m, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	imp, err := Import(m, ImportOptions{Dir: filepath.Dir(path)})
	if err != nil {
		t.Fatal(err)
	}
	return &imp.Model.Spec
}

func TestTorchGoldensSafetensors(t *testing.T) {
	for _, g := range loadGoldens(t) {
		if g.Base != g.name {
			continue // variants share their base's state dict
		}
		t.Run(g.name, func(t *testing.T) {
			m, err := nin.LoadStateDict(g.stageSafetensors(t), g.spec(t))
			if err != nil {
				t.Fatal(err)
			}
			g.check(t, m)
		})
	}
}
