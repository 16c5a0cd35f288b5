package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ninbatch/ninbatch/internal/testutil"
	nbio "github.com/ninbatch/ninbatch/io"
)

func duckdbDir(t *testing.T) string                        { return testutil.DuckDBDir(t) }
func node(t *testing.T, dir string, args ...string) []byte { return testutil.Node(t, dir, args...) }

// TestDuckDBInterop: DuckDB, an independent Parquet implementation, writes
// inputs (Hugging Face struct, plain binary, raw uint8 list; several row
// groups, snappy and zstd) and reads ninbatch's outputs back: row counts,
// ids and their order, passthrough values, probability sums, top1 and
// the file metadata.
func TestDuckDBInterop(t *testing.T) {
	dir := duckdbDir(t)
	tmp := t.TempDir()
	pngs, in, out := filepath.Join(tmp, "png"), filepath.Join(tmp, "in"), filepath.Join(tmp, "out")
	for _, d := range []string{pngs, in, out} {
		os.MkdirAll(d, 0o755)
	}
	const n = 37
	data := tinyData(n, 9)
	for i := 0; i < n; i++ {
		b, _ := nbio.EncodePNG(data.Pixels[i*144:(i+1)*144], 12, 12, 1)
		os.WriteFile(filepath.Join(pngs, fmt.Sprintf("img_%05d.png", i)), b, 0o644)
	}
	node(t, dir, "write", pngs, in)
	inputs, err := nbio.ExpandInputs([]string{in})
	if err != nil || len(inputs) != 3 {
		t.Fatalf("DuckDB wrote %v (%v)", inputs, err)
	}
	m := runModel(t)
	r := newRunner(t, m, inputs, out, "record", 2)
	sum, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.RowsIn != 3*n || sum.RowsError != 0 {
		t.Fatalf("summary %+v", sum)
	}
	var facts map[string]struct {
		N          int      `json:"n"`
		IDs        int      `json:"ids"`
		MinID      int      `json:"min_id"`
		MaxID      int      `json:"max_id"`
		NotesOK    bool     `json:"notes_ok"`
		ScoresOK   bool     `json:"scores_ok"`
		MaxSumErr  float64  `json:"max_sum_err"`
		ProbsLenOK bool     `json:"probs_len_ok"`
		Top1OK     bool     `json:"top1_ok"`
		Errors     int      `json:"errors"`
		OneModel   bool     `json:"one_model"`
		Top1ProbOK bool     `json:"top1_prob_ok"`
		Ordered    bool     `json:"ordered"`
		MetaKeys   []string `json:"metadata_keys"`
	}
	if err := json.Unmarshal(node(t, dir, "verify", out), &facts); err != nil {
		t.Fatal(err)
	}
	t.Logf("DuckDB facts: %+v", facts)
	if len(facts) != 3 {
		t.Fatalf("DuckDB read %d outputs", len(facts))
	}
	for f, x := range facts {
		if x.N != n || x.IDs != n || x.MinID != 0 || x.MaxID != n-1 || !x.Ordered || !x.NotesOK || !x.ScoresOK ||
			x.MaxSumErr > 1e-5 || !x.ProbsLenOK || !x.Top1OK || x.Errors != 0 || !x.OneModel || !x.Top1ProbOK {
			t.Errorf("%s: %+v", f, x)
		}
		want := []string{"ninbatch.input", "ninbatch.input_fingerprint", "ninbatch.isa", "ninbatch.model_id", "ninbatch.precision", "ninbatch.score_columns", "ninbatch.version"}
		if !slices.Equal(x.MetaKeys, want) {
			t.Errorf("%s: metadata keys %v", f, x.MetaKeys)
		}
	}
}
