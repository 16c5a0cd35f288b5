package onnx

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ninbatch/ninbatch/internal/testutil"
	"github.com/ninbatch/ninbatch/nin"
)

// TestExportRunsInOnnxRuntime: onnxruntime (npm onnxruntime-node) loads
// each exported model without a warning and its probabilities are within
// 1e-4 of ninbatch's, with the same top-1.
func TestExportRunsInOnnxRuntime(t *testing.T) {
	dir := testutil.OnnxRuntimeDir(t)
	models := map[string]*nin.Model{"shipped": shipped(t)}
	for _, p := range testPresets() {
		models[p] = presetModel(t, p)
	}
	for name, m := range models {
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			g, err := Export(m, "test")
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(tmp, "m.onnx")
			if err := os.WriteFile(path, g.Marshal(), 0o644); err != nil {
				t.Fatal(err)
			}
			in := m.Spec.Input
			n := 16
			nchw := splitmixUniform(77, n*in.Len(), 1)
			imagePatches(nchw, 77, n, in.C, in.H, in.W)
			if err := os.WriteFile(filepath.Join(tmp, "x.f32"), f32bytes(nchw), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("node", filepath.Join(dir, "check.mjs"), path, filepath.Join(tmp, "x.f32"),
				strconv.Itoa(n), strconv.Itoa(in.C), strconv.Itoa(in.H), strconv.Itoa(in.W), filepath.Join(tmp, "p.f32"))
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("onnxruntime: %v\n%s", err, stderr.String())
			}
			if stderr.Len() > 0 {
				t.Errorf("onnxruntime printed warnings:\n%s", stderr.String())
			}
			raw, err := os.ReadFile(filepath.Join(tmp, "p.f32"))
			if err != nil {
				t.Fatal(err)
			}
			classes := m.Spec.Classes()
			if len(raw) != 4*n*classes {
				t.Fatalf("onnxruntime wrote %d bytes, want %d", len(raw), 4*n*classes)
			}
			ort := make([]float32, n*classes)
			for i := range ort {
				ort[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
			x := make([]float32, len(nchw))
			for b := 0; b < n; b++ {
				for c := 0; c < in.C; c++ {
					for i := 0; i < in.H*in.W; i++ {
						x[(b*in.H*in.W+i)*in.C+c] = nchw[(b*in.C+c)*in.H*in.W+i]
					}
				}
			}
			net, err := nin.NewNet(m, nin.Options{MaxBatch: n, Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer net.Close()
			got := make([]float32, n*classes)
			if err := net.Forward(x, n, got, nil); err != nil {
				t.Fatal(err)
			}
			var worst float64
			for b := 0; b < n; b++ {
				r, o := got[b*classes:(b+1)*classes], ort[b*classes:(b+1)*classes]
				for i := range r {
					worst = max(worst, math.Abs(float64(r[i]-o[i])))
				}
				if argmax(r) != argmax(o) {
					t.Errorf("image %d: ninbatch top-1 %d, onnxruntime %d", b, argmax(r), argmax(o))
				}
			}
			if worst > 1e-4 {
				t.Errorf("largest probability difference from onnxruntime %.3g > 1e-4", worst)
			}
			t.Logf("%s: %d images, largest |Δp| %.2g vs onnxruntime, %d distinct top-1", name, n, worst, distinctTop1(ort, classes))
		})
	}
}
