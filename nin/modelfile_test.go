package nin

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func encodeModel(t *testing.T, m *Model) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := m.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestModelFileRoundTrip(t *testing.T) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10", "nin-mnist+fc"} {
		name, fc := strings.CutSuffix(preset, "+fc")
		s, _ := Preset(name)
		if fc {
			s.Head, s.HeadDropout = HeadFC, 0.5
		}
		m, err := NewModel(s)
		if err != nil {
			t.Fatal(err)
		}
		m.Params.InitGaussian(42)
		m.Classes = make([]string, s.Classes())
		for i := range m.Classes {
			m.Classes[i] = string(rune('a' + i))
		}
		m.Provenance = Provenance{Command: "test", Epochs: 3, Metrics: map[string]float64{"acc": 0.5}}
		path := filepath.Join(t.TempDir(), "m.nin")
		if err := m.SaveFile(path); err != nil {
			t.Fatal(err)
		}
		got, err := LoadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != m.ID || len(got.ID) != 64 {
			t.Fatalf("id %q after load, %q after save", got.ID, m.ID)
		}
		if !slices.Equal(got.Params.Data, m.Params.Data) {
			t.Fatal("parameters differ after the round trip")
		}
		if !slices.Equal(got.Classes, m.Classes) || got.Provenance.Epochs != 3 || got.Preprocess.Color != m.Preprocess.Color {
			t.Fatal("metadata differs after the round trip")
		}
		if got.Spec.HeadKind() != s.HeadKind() || got.Spec.HeadDropout != s.HeadDropout {
			t.Fatalf("head %q/%g after the round trip", got.Spec.Head, got.Spec.HeadDropout)
		}
		if fc { // nn.Linear's layout, so torch loads it into a Linear as is
			w := refParseSafetensors(t, encodeModel(t, m))["fc.weight"]
			if !slices.Equal(w.shape, []int{10, 7 * 7 * 10}) {
				t.Fatalf("fc.weight shape %v", w.shape)
			}
		}
		// re-encoding is bit-identical
		if !bytes.Equal(encodeModel(t, got), encodeModel(t, m)) {
			t.Fatal("re-encoded file differs")
		}
		// a second init with the same seed is identical, another seed is not
		m2, _ := NewModel(s)
		m2.Params.InitGaussian(42)
		if !slices.Equal(m2.Params.Data, m.Params.Data) {
			t.Fatal("InitGaussian is not deterministic")
		}
	}
}

// TestInitStd checks the Caffe Gaussian std per layer of nin-imagenet.
func TestInitStd(t *testing.T) {
	s, _ := Preset("nin-imagenet")
	m, _ := NewModel(s)
	m.Params.InitGaussian(1)
	want := []float64{0.01, 0.05, 0.05, 0.05, 0.05, 0.05, 0.01, 0.05, 0.05, 0.05, 0.05, 0.01}
	for i, c := range m.Params.Convs {
		var ss float64
		for _, v := range c.W {
			ss += float64(v) * float64(v)
		}
		std := sqrt(ss / float64(len(c.W)))
		if d := std/want[i] - 1; d > 0.05 || d < -0.05 {
			t.Errorf("%s: std %.4f, want %.4f", c.Name, std, want[i])
		}
	}
}

// rewriteHeader decodes the header of a valid file, lets f change it, and
// re-assembles the file with the new header (and the original data).
func rewriteHeader(t *testing.T, file []byte, f func(h map[string]any)) []byte {
	t.Helper()
	n := binary.LittleEndian.Uint64(file)
	var h map[string]any
	if err := json.Unmarshal(file[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	f(h)
	hb, _ := json.Marshal(h)
	out := make([]byte, 8, 8+len(hb)+len(file))
	binary.LittleEndian.PutUint64(out, uint64(len(hb)))
	out = append(out, hb...)
	return append(out, file[8+n:]...)
}

func tensor(h map[string]any, name string) map[string]any { return h[name].(map[string]any) }

func TestModelFileRejectsBadFiles(t *testing.T) {
	s, _ := Preset("nin-mnist")
	m, _ := NewModel(s)
	m.Params.InitGaussian(1)
	good := encodeModel(t, m)
	if _, err := Decode(bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatalf("good file rejected: %v", err)
	}
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, 1<<62)
	meta := func(key, val string) func(h map[string]any) {
		return func(h map[string]any) { h["__metadata__"].(map[string]any)[key] = val }
	}
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"truncated data", good[:len(good)-100], "truncated"},
		{"truncated header", good[:40], "past the end"},
		{"header length beyond file", append(append([]byte{}, good[:0]...), append(binary.LittleEndian.AppendUint64(nil, uint64(len(good))), good[8:]...)...), "past the end"},
		{"header length huge", append(huge, good[8:]...), "exceeds"},
		{"header not json", append(binary.LittleEndian.AppendUint64(nil, 4), []byte("{{{{")...), "not a JSON"},
		{"no metadata", rewriteHeader(t, good, func(h map[string]any) { delete(h, "__metadata__") }), "no __metadata__"},
		{"wrong format", rewriteHeader(t, good, meta("format", "other")), "format"},
		{"huge tensor shape", rewriteHeader(t, good, func(h map[string]any) {
			tensor(h, "mlpconv1.0.weight")["shape"] = []any{1 << 40, 1 << 40, 5, 5}
		}), "shape"},
		{"spec claims huge net", rewriteHeader(t, good, meta("spec", `{"name":"x","input":{"h":8,"w":8,"c":3},"pooling":"ceil","blocks":[{"kernel":3,"stride":1,"pad":1,"channels":[16384,16384,16384]}]}`)), "parameters"},
		{"offsets out of bounds", rewriteHeader(t, good, func(h map[string]any) {
			tensor(h, "mlpconv3.2.bias")["data_offsets"] = []any{1 << 40, 1<<40 + 40}
		}), "outside"},
		{"offsets overlapping", rewriteHeader(t, good, func(h map[string]any) {
			tensor(h, "mlpconv1.0.bias")["data_offsets"] = []any{0, 4 * 96}
		}), "overlap"},
		{"wrong dtype", rewriteHeader(t, good, func(h map[string]any) { tensor(h, "mlpconv1.1.weight")["dtype"] = "F16" }), "dtype"},
		{"wrong shape", rewriteHeader(t, good, func(h map[string]any) {
			tensor(h, "mlpconv1.1.weight")["shape"] = []any{96, 64, 1, 1}
		}), "shape"},
		{"missing tensor", rewriteHeader(t, good, func(h map[string]any) { delete(h, "mlpconv2.1.bias") }), "missing"},
		{"extra tensor", rewriteHeader(t, good, func(h map[string]any) {
			h["mlpconv9.0.bias"] = map[string]any{"dtype": "F32", "shape": []any{1}, "data_offsets": []any{0, 4}}
		}), "unexpected"},
		{"spec/tensor mismatch", rewriteHeader(t, good, meta("spec", strings.Replace(mustJSON(s), "[96,64,48]", "[96,64,40]", 1))), ""},
		{"bad preprocess", rewriteHeader(t, good, meta("preprocess", `{"resize":"exact","color":"rgb","scale":1}`)), "color"},
		{"bad classes", rewriteHeader(t, good, meta("classes", `["a","b"]`)), "classes"},
		{"nan weight", func() []byte {
			b := slices.Clone(good)
			copy(b[len(b)-4:], []byte{0, 0, 0xc0, 0x7f})
			return b
		}(), "NaN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			_, err := Decode(bytes.NewReader(c.file), int64(len(c.file)))
			runtime.ReadMemStats(&ms)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			if c.want != "" && !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
			if grew := ms.TotalAlloc - before; grew > 64<<20 {
				t.Fatalf("rejecting it allocated %d MB", grew>>20)
			}
		})
	}
	// the file-level wrapper names the file
	path := filepath.Join(t.TempDir(), "bad.nin")
	os.WriteFile(path, good[:100], 0o644)
	if _, err := LoadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadFile error %v does not name the file", err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestContentID: the id is the same for the same weights, spec,
// preprocessing and class names whatever the provenance, differs when any
// of those changes, and the file hash is the file's sha256.
func TestContentID(t *testing.T) {
	s, _ := Preset("nin-mnist")
	m, _ := NewModel(s)
	m.Params.InitGaussian(1)
	dir := t.TempDir()
	save := func(name string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := m.SaveFile(p); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != m.FileHash {
			t.Fatalf("%s: file hash %s is not the file's sha256", name, m.FileHash)
		}
		return m.ID
	}
	a := save("a.nin")
	m.Provenance = Provenance{Created: "2026-01-01T00:00:00Z", Command: "other", TrainingSeconds: 3}
	fileA := m.FileHash
	if b := save("b.nin"); b != a || m.FileHash == fileA {
		t.Fatalf("provenance changed the id (%s vs %s) or not the file (%s)", b, a, m.FileHash)
	}
	if got, err := LoadFile(filepath.Join(dir, "b.nin")); err != nil || got.ID != a || got.FileHash != m.FileHash {
		t.Fatalf("loaded: %v id %s file %s", err, got.ID, got.FileHash)
	}
	seen := map[string]string{a: "original"}
	for _, change := range []struct {
		name string
		do   func()
	}{
		{"one weight", func() { m.Params.Convs[2].W[7] += 1e-6 }},
		{"class names", func() { m.Classes = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"} }},
		{"preprocessing", func() { m.Preprocess.Std = []float64{0.5} }},
	} {
		change.do()
		id := m.ContentID()
		if prev, dup := seen[id]; dup {
			t.Fatalf("changing %s kept the id of %s", change.name, prev)
		}
		seen[id] = change.name
	}
}
