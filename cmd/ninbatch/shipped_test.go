package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/file"
	nbio "github.com/ninbatch/ninbatch/io"

	"github.com/ninbatch/ninbatch/native"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

// mnistDir fetches MNIST through the Go module proxy (scripts/fetch-mnist.sh)
// or skips; NINBATCH_REQUIRE_MNIST=1 (CI) turns the skip into a failure.
func mnistDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("bash", "../../scripts/fetch-mnist.sh").Output()
	if err != nil {
		if os.Getenv("NINBATCH_REQUIRE_MNIST") != "" {
			t.Fatalf("fetching MNIST: %v", err)
		}
		t.Skipf("MNIST not reachable through the Go module proxy: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestShippedModelWinogradSwitch: the shipped model's accuracy, confusion
// matrix and log-loss on the 10,000 MNIST test images are identical with
// every fast-path switch (Winograd off, on, auto; the direct first-conv
// kernel off or on; the conv GEMMs on OpenBLAS or the packed-weight
// kernel) and under every ISA level the CPU runs, and its error is the
// ≤ 0.60% it ships with.
func TestShippedModelWinogradSwitch(t *testing.T) {
	if testing.Short() {
		t.Skip("scores 12 × 10,000 images")
	}
	dir := filepath.Dir(mnistTest(t))
	if pr, err := file.OpenParquetFile(filepath.Join(dir, "test.parquet"), false); err != nil || pr.NumRowGroups() != 2 {
		t.Fatalf("test.parquet: %v; want 10,000 rows in row groups of %d", err, nbio.DatasetRowGroupRows)
	} else {
		pr.Close()
	}
	var first pipeline.EvalResult
	settings := []string{`{"winograd":"off","gemm":"openblas"}`, `{"winograd":"on"}`, `{}`, `{"winograd":"on","wino_tile":2}`,
		`{"winograd":"on","wino_tile":4,"gemm":"openblas"}`, `{"winograd":"off","direct":"off"}`, `{"gemm":"openblas"}`,
		`{"winograd":"off","gemm":"packed"}`, `{"direct":"on"}`}
	// and the default settings under every other ISA level this CPU runs
	type run struct {
		w   string
		isa native.ISA
	}
	var runs []run
	for _, w := range settings {
		runs = append(runs, run{w, native.Current()})
	}
	for _, isa := range native.Levels()[1:] {
		runs = append(runs, run{`{}`, isa})
	}
	for i, rn := range runs {
		w := rn.w
		old, _ := native.SetISA(rn.isa)
		t.Setenv(nin.TuningEnv, w)
		code, o, e := runCLI(t, "eval", "--model", "../../models/nin-mnist.nin", "--json", filepath.Join(dir, "test.parquet"))
		native.SetISA(old)
		w += " isa=" + rn.isa.String()
		if code != 0 {
			t.Fatalf("eval with tuning %s: exit %d: %s", w, code, e)
		}
		var r pipeline.EvalResult
		if err := json.Unmarshal([]byte(o), &r); err != nil {
			t.Fatal(err)
		}
		if r.N != 10000 {
			t.Fatalf("eval scored %d images", r.N)
		}
		t.Logf("tuning %s: top-1 error %.2f%%, log-loss %.6f", w, 100*r.Error, r.LogLoss)
		if r.Error > 0.0060 {
			t.Errorf("tuning %s: the shipped model's test error is %.2f%%; it ships as ≤ 0.60%%", w, 100*r.Error)
		}
		if i == 0 {
			first = r
			continue
		}
		if r.Top1 != first.Top1 || !reflect.DeepEqual(r.Confusion, first.Confusion) {
			t.Errorf("tuning %s: accuracy %.4f / confusion differ from winograd off, gemm openblas (%.4f)", w, r.Top1, first.Top1)
		}
		if math.Abs(r.LogLoss-first.LogLoss) > 2e-6 {
			t.Errorf("tuning %s: log-loss %.7f, winograd off %.7f", w, r.LogLoss, first.LogLoss)
		}
	}
}
