package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/onnx"
)

const shippedModel = "../../models/nin-mnist.nin"

// TestExportImportCLI: export then import gives the shipped model's id
// back; neither command replaces an existing file without --force.
func TestExportImportCLI(t *testing.T) {
	dir := t.TempDir()
	x, m2 := filepath.Join(dir, "m.onnx"), filepath.Join(dir, "m.nin")
	if code, _, e := runCLI(t, "export", shippedModel, "--out", x); code != 0 {
		t.Fatalf("export: %d %s", code, e)
	}
	if code, _, e := runCLI(t, "import", x, "--out", m2); code != 0 {
		t.Fatalf("import: %d %s", code, e)
	}
	orig, _ := nin.LoadFile(shippedModel)
	got, err := nin.LoadFile(m2)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != orig.ID || !reflect.DeepEqual(got.Spec, orig.Spec) || !slices.Equal(got.Classes, orig.Classes) {
		t.Errorf("round trip changed the model: id %s vs %s", got.ID, orig.ID)
	}
	b, _ := os.ReadFile(x)
	sum := sha256.Sum256(b)
	if p := got.Provenance; p.Source != "onnx m.onnx" || p.SourceSHA256 != hex.EncodeToString(sum[:]) || p.Init != "imported" {
		t.Errorf("provenance %+v", p)
	}
	before, _ := os.ReadFile(m2)
	for _, args := range [][]string{{"export", shippedModel, "--out", x}, {"import", x, "--out", m2}} {
		code, _, e := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(e, "pass --force") {
			t.Errorf("%v over an existing file: exit %d %s", args[0], code, e)
		}
	}
	if after, _ := os.ReadFile(m2); !slices.Equal(before, after) {
		t.Error("a refused import changed the existing file")
	}
	if code, _, e := runCLI(t, "import", x, "--out", m2, "--force", "--mean", "0.5", "--std", "0.25", "--name", "mine"); code != 0 {
		t.Fatalf("import --force: %d %s", code, e)
	}
	got, _ = nin.LoadFile(m2)
	if got.Spec.Name != "mine" || !slices.Equal(got.Preprocess.Mean, []float64{0.5}) || !slices.Equal(got.Preprocess.Std, []float64{0.25}) ||
		got.Preprocess.Scale != orig.Preprocess.Scale {
		t.Errorf("flags over a ninbatch export's metadata: %+v %+v", got.Spec.Name, got.Preprocess)
	}
}

// TestImportStateDictCLI: a .nin is itself a safetensors state dict with
// ninbatch's names; imported with its preset it keeps its weights.
func TestImportStateDictCLI(t *testing.T) {
	out := filepath.Join(t.TempDir(), "s.nin")
	code, _, e := runCLI(t, "import", shippedModel, "--out", out)
	if code != exitUsage || !strings.Contains(e, "give its architecture with --preset or --spec") {
		t.Errorf("state dict without an architecture: exit %d %s", code, e)
	}
	code, _, e = runCLI(t, "import", shippedModel, "--preset", "nin-cifar10", "--out", out)
	if code != exitUsage || !strings.Contains(e, "mlpconv1.0.weight has shape [96 1 5 5], the spec's mlpconv1.0.weight needs [192 3 5 5]") {
		t.Errorf("wrong preset: exit %d %s", code, e)
	}
	if code, _, e := runCLI(t, "import", shippedModel, "--preset", "nin-mnist", "--out", out); code != 0 {
		t.Fatalf("import: %d %s", code, e)
	}
	orig, _ := nin.LoadFile(shippedModel)
	got, err := nin.LoadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Params.Data, orig.Params.Data) {
		t.Error("weights differ")
	}
	want := nin.Preprocess{Resize: "exact", Color: "gray", Scale: 1.0 / 255}
	if !reflect.DeepEqual(got.Preprocess, want) {
		t.Errorf("default preprocessing %+v, want ToTensor's %+v", got.Preprocess, want)
	}
}

// TestImportRefusesHostileFiles: exit 2, a message naming what is wrong,
// and no output file.
func TestImportRefusesHostileFiles(t *testing.T) {
	dir := t.TempDir()
	m, _ := nin.LoadFile(shippedModel)
	g, err := onnx.Export(m, "test")
	if err != nil {
		t.Fatal(err)
	}
	good := g.Marshal()
	i := slices.IndexFunc(g.Graph.Nodes, func(n onnx.Node) bool { return n.OpType == "MaxPool" })
	g.Graph.Nodes[i].OpType = "Add"
	files := map[string][]byte{
		"truncated.onnx": good[:len(good)/3],
		"add.onnx":       g.Marshal(),
		"empty.onnx":     {},
		"text.onnx":      []byte("this is not a model\n"),
	}
	want := map[string]string{
		"truncated.onnx": "not a valid ONNX model",
		"add.onnx":       `(Add) does not fit NIN`,
		"empty.onnx":     "no graph",
		"text.onnx":      "not a valid ONNX model",
	}
	for name, b := range files {
		src := filepath.Join(dir, name)
		os.WriteFile(src, b, 0o644)
		out := filepath.Join(dir, name+".nin")
		code, _, e := runCLI(t, "import", src, "--out", out)
		if code != exitUsage || !strings.Contains(e, want[name]) {
			t.Errorf("%s: exit %d, %s", name, code, e)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: an output file was written", name)
		}
	}
}
