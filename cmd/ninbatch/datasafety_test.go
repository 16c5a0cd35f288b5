package main

// What ninbatch must never do to a user's data, one test per mistake users
// make and per kind of file they have. Inputs are written by DuckDB, an
// independent Parquet implementation, wherever the case is about files.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/ninbatch/ninbatch/internal/testutil"
	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

func duck(t *testing.T, sql string) []map[string]any { t.Helper(); return testutil.DuckDB(t, sql) }

// tinyModel writes the tiny 12×12 gray model with classes a..d.
func tinyModel(t *testing.T) string {
	t.Helper()
	spec, _ := nin.ParseSpec([]byte(testutil.TinySpecJSON))
	m, _ := nin.NewModel(spec)
	m.Params.InitKaiming(3)
	m.Classes = []string{"a", "b", "c", "d"}
	p := filepath.Join(t.TempDir(), "m.nin")
	if err := m.SaveFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// pngDir writes n random 12×12 gray PNGs img_00000.png ... for DuckDB's read_blob.
func pngDir(t *testing.T, n int, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(seed, 3))
	pix := make([]uint8, 144)
	for i := 0; i < n; i++ {
		for j := range pix {
			pix[j] = uint8(r.IntN(256))
		}
		b, _ := nbio.EncodePNG(pix, 12, 12, 1)
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("img_%05d.png", i)), b, 0o644)
	}
	return dir
}

// imagesSQL selects id and image (PNG bytes) from a pngDir, plus extra columns.
func imagesSQL(png, extra string) string {
	return fmt.Sprintf(`SELECT CAST(regexp_extract(filename, 'img_([0-9]+)', 1) AS BIGINT) AS id%s, content AS image
		FROM read_blob('%s') ORDER BY id`, extra, filepath.Join(png, "*.png"))
}

func copyTo(query, path, opts string) string {
	return fmt.Sprintf("COPY (%s) TO '%s' (FORMAT parquet%s)", query, path, opts)
}

func runIn(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := subprocess(args...)
	cmd.Dir = dir
	var e bytes.Buffer
	cmd.Stderr = &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), e.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, e.String()
}

// 1. --out naming the input's own folder, by any path, never overwrites it.
func TestRunNeverOverwritesAnInput(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "photos.parquet")
	duck(t, copyTo(imagesSQL(pngDir(t, 20, 1), ""), in, ""))
	orig, _ := os.ReadFile(in)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	hard := t.TempDir()
	if err := os.Link(in, filepath.Join(hard, "photos.parquet")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cwd  string
		args []string
		msg  string
	}{
		{"", []string{"--out", dir, in}, "would overwrite input"},
		{dir, []string{"--out", ".", "photos.parquet"}, "would overwrite input"},
		{"", []string{"--out", dir, dir}, "would overwrite input"},
		{"", []string{"--out", link, in}, "would overwrite input"},
		{"", []string{"--out", filepath.Join(dir, "sub", ".."), in}, "would overwrite input"},
		{"", []string{"--out", link, filepath.Join(link, "photos.parquet")}, "would overwrite input"},
		{"", []string{"--out", hard, in}, "same file as input"},
	} {
		cwd := c.cwd
		if cwd == "" {
			cwd = t.TempDir()
		}
		code, e := runIn(t, cwd, append([]string{"run", "--model", model}, c.args...)...)
		if code != 2 || !strings.Contains(e, c.msg) || !strings.Contains(e, "photos.parquet") {
			t.Errorf("%v: exit %d: %s", c.args, code, e)
		}
		if b, _ := os.ReadFile(in); !bytes.Equal(b, orig) {
			t.Fatalf("%v: the input changed", c.args)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("%v: the input's folder gained files: %v", c.args, ents)
		}
	}
}

// 2. init and train never replace a model or checkpoint without --force;
// models are written 0644.
func TestModelWritersRefuseToReplace(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "m.nin")
	if code, _, e := runCLI(t, "init", "--preset", "nin-mnist", "--seed", "1", "--out", out); code != 0 {
		t.Fatal(e)
	}
	st, _ := os.Stat(out)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("model mode %v, want 0644", st.Mode().Perm())
	}
	before, _ := os.ReadFile(out)
	code, _, e := runCLI(t, "init", "--preset", "nin-mnist", "--seed", "2", "--out", out)
	if after, _ := os.ReadFile(out); code != 2 || !strings.Contains(e, "--force") || !bytes.Equal(before, after) {
		t.Fatalf("init over a model: exit %d, replaced=%v: %s", code, !bytes.Equal(before, after), e)
	}
	if code, _, e := runCLI(t, "init", "--preset", "nin-mnist", "--seed", "2", "--force", "--out", out); code != 0 {
		t.Fatal(e)
	}
	if after, _ := os.ReadFile(out); bytes.Equal(before, after) {
		t.Fatal("init --force did not replace the model")
	}

	// train: a finished 1-epoch run leaves model, checkpoint and metrics
	_, spec, data := trainFixture(t, 40, 1)
	trained := filepath.Join(dir, "t.nin")
	args := []string{"train", "--spec", spec, "--epochs", "1", "--batch", "8", "--out", trained, data}
	if code, _, e := runCLI(t, args...); code != 0 {
		t.Fatal(e)
	}
	ckpt, _ := os.ReadFile(trained + ".ckpt")
	metrics, _ := os.ReadFile(trained + ".metrics.jsonl")
	for _, f := range []string{trained, trained + ".ckpt"} {
		if st, _ := os.Stat(f); st.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", f, st.Mode().Perm())
		}
	}
	code, _, e = runCLI(t, args...)
	if code != 2 || !strings.Contains(e, "--resume") || !strings.Contains(e, "--force") || !strings.Contains(e, "1 epochs") {
		t.Fatalf("train over a checkpoint: exit %d: %s", code, e)
	}
	if c2, _ := os.ReadFile(trained + ".ckpt"); !bytes.Equal(c2, ckpt) {
		t.Fatal("the checkpoint changed")
	}
	if m2, _ := os.ReadFile(trained + ".metrics.jsonl"); !bytes.Equal(m2, metrics) {
		t.Fatal("the metrics changed")
	}
	// a model without a checkpoint is refused too, then --force starts over
	os.Remove(trained + ".ckpt")
	if code, _, e := runCLI(t, args...); code != 2 || !strings.Contains(e, trained+" exists") {
		t.Fatalf("train over a model: exit %d: %s", code, e)
	}
	if code, _, e := runCLI(t, append(args[:1:1], append([]string{"--force"}, args[1:]...)...)...); code != 0 {
		t.Fatalf("train --force: %d %s", code, e)
	}
}

// maxRSSRun runs `run` as a subprocess and returns its exit code and peak RSS.
func maxRSSRun(t *testing.T, args ...string) (int, int64, string) {
	t.Helper()
	cmd := subprocess(args...)
	var e bytes.Buffer
	cmd.Stderr = &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return code, ru.Maxrss << 10, e.String()
}

// 3. A 370-byte 1×100000 PNG under nin-imagenet's preprocessing is a row
// error, the other rows score, and peak RSS stays that of the run without it.
func TestRunExtremeAspectRatioIsARowError(t *testing.T) {
	if testing.Short() {
		t.Skip("nin-imagenet forward passes")
	}
	dir := t.TempDir()
	model := filepath.Join(dir, "imagenet.nin")
	if code, _, e := runCLI(t, "init", "--preset", "nin-imagenet", "--seed", "1", "--out", model); code != 0 {
		t.Fatal(e)
	}
	pngs := t.TempDir()
	r := rand.New(rand.NewPCG(5, 5))
	pix := make([]uint8, 48*64*3)
	for i := 0; i < 7; i++ {
		for j := range pix {
			pix[j] = uint8(r.IntN(256))
		}
		b, _ := nbio.EncodePNG(pix, 48, 64, 3)
		os.WriteFile(filepath.Join(pngs, fmt.Sprintf("img_%05d.png", i)), b, 0o644)
	}
	good := filepath.Join(dir, "good", "rows.parquet")
	os.MkdirAll(filepath.Dir(good), 0o755)
	duck(t, copyTo(imagesSQL(pngs, ""), good, ""))
	strip, _ := nbio.EncodePNG(make([]uint8, 100000), 1, 100000, 1)
	t.Logf("1x100000 PNG: %d bytes", len(strip))
	os.WriteFile(filepath.Join(pngs, "img_00003x.png"), strip, 0o644) // sorts between rows 3 and 4
	bad := filepath.Join(dir, "bad", "rows.parquet")
	os.MkdirAll(filepath.Dir(bad), 0o755)
	duck(t, copyTo(fmt.Sprintf(`SELECT row_number() OVER (ORDER BY filename) - 1 AS id, content AS image
		FROM read_blob('%s') ORDER BY filename`, filepath.Join(pngs, "*.png")), bad, ""))

	var rssGood, rssBad []int64
	for rep := 0; rep < 4; rep++ { // interleaved: the machine's memory use drifts
		outG, outB := t.TempDir(), t.TempDir()
		code, rss, e := maxRSSRun(t, "run", "--model", model, "--batch", "8", "--threads", "2", "--out", outG, good)
		if code != 0 {
			t.Fatalf("good rows: exit %d %s", code, e)
		}
		rssGood = append(rssGood, rss)
		sum := filepath.Join(t.TempDir(), "s.json")
		code, rss, e = maxRSSRun(t, "run", "--model", model, "--batch", "8", "--threads", "2", "--out", outB, "--summary", sum, bad)
		if code != 3 {
			t.Fatalf("with the strip: exit %d %s", code, e)
		}
		rssBad = append(rssBad, rss)
		if rep == 0 {
			rows := duck(t, fmt.Sprintf(`SELECT id::INT AS id, error FROM '%s' WHERE error IS NOT NULL`, filepath.Join(outB, "rows.parquet")))
			if len(rows) != 1 || rows[0]["id"] != 4.0 || !strings.Contains(rows[0]["error"].(string), "aspect ratio") {
				t.Fatalf("row errors: %v", rows)
			}
		}
		s := readSummary(t, sum)
		if s.RowsIn != 8 || s.RowsError != 1 || s.RowsScored != 7 {
			t.Fatalf("summary %+v", s)
		}
	}
	// Minima: a run's peak RSS is bimodal (about 185 or 211 MB here, with or
	// without the strip) depending on when the GC ran, and the floor is what
	// an allocation the strip caused would raise.
	ratio := float64(slices.Min(rssBad)) / float64(slices.Min(rssGood))
	t.Logf("peak RSS, minima of %d: %d MB without the strip, %d MB with it (%.3f); all: %v %v",
		len(rssGood), slices.Min(rssGood)>>20, slices.Min(rssBad)>>20, ratio, rssGood, rssBad)
	if ratio > 1.10 {
		t.Errorf("peak RSS grew %.1f%% with one 1x100000 image", 100*(ratio-1))
	}
}

// 4. Input columns named like ninbatch's are refused (DuckDB would read
// the wrong error column), --prefix keeps both, and rescoring a scored file
// replaces its scores.
func TestRunColumnNamesNeverCollide(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	png := pngDir(t, 12, 2)
	in := filepath.Join(dir, "in", "labelled.parquet")
	os.MkdirAll(filepath.Dir(in), 0o755)
	duck(t, copyTo(imagesSQL(png, `, CASE WHEN id % 3 = 0 THEN 'blurry' END AS "Error"`), in, ""))
	out := t.TempDir()
	sum := filepath.Join(t.TempDir(), "s.json")
	code, _, e := runCLI(t, "run", "--model", model, "--out", out, "--summary", sum, in)
	if code != 3 || !strings.Contains(e, `column \"Error\" has the name of ninbatch's output column`) || !strings.Contains(e, "--prefix") {
		t.Fatalf("clash: exit %d: %s", code, e)
	}
	if s := readSummary(t, sum); s.FilesFailed != 1 || s.FilesDone != 0 {
		t.Fatalf("clash summary %+v", s)
	}
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, "--prefix", "nb_", in); code != 0 {
		t.Fatalf("--prefix: %d %s", code, e)
	}
	o := filepath.Join(out, "labelled.parquet")
	rows := duck(t, fmt.Sprintf(`SELECT count(*) FILTER (WHERE "Error" = 'blurry')::INT AS theirs,
		count(*) FILTER (WHERE nb_error IS NULL)::INT AS scored, count(*)::INT AS n FROM '%s'`, o))
	if r := rows[0]; r["theirs"] != 4.0 || r["scored"] != 12.0 || r["n"] != 12.0 {
		t.Fatalf("--prefix output: %v", r)
	}
	// a scored file joined back to its images (DuckDB drops ninbatch's metadata)
	first := filepath.Join(dir, "first")
	if code, _, e := runCLI(t, "run", "--model", model, "--out", first, filepath.Join(dir, "in")); code != 3 {
		t.Fatalf("first scoring: %d %s", code, e) // labelled.parquet clashes: recorded
	}
	plain := filepath.Join(dir, "plain", "p.parquet")
	os.MkdirAll(filepath.Dir(plain), 0o755)
	duck(t, copyTo(imagesSQL(png, ""), plain, ""))
	if code, _, e := runCLI(t, "run", "--model", model, "--out", first, filepath.Dir(plain)); code != 0 {
		t.Fatalf("plain: %d %s", code, e)
	}
	joined := filepath.Join(dir, "joined", "scored.parquet")
	os.MkdirAll(filepath.Dir(joined), 0o755)
	duck(t, copyTo(fmt.Sprintf(`SELECT s.*, i.image FROM '%s' s JOIN '%s' i USING (id) ORDER BY id`,
		filepath.Join(first, "p.parquet"), plain), joined, ""))
	out2 := t.TempDir()
	code, _, e = runCLI(t, "run", "--model", model, "--out", out2, joined)
	if code != 0 || !strings.Contains(e, "replaced") {
		t.Fatalf("rescoring a scored file: exit %d: %s", code, e)
	}
	rows = duck(t, fmt.Sprintf(`SELECT (SELECT count(*) FROM (DESCRIBE SELECT * FROM '%[1]s') WHERE lower(column_name) IN ('error','probs','model_id','top1'))::INT AS cols,
		(SELECT count(*) FROM '%[1]s' WHERE error IS NULL)::INT AS scored`, filepath.Join(out2, "scored.parquet")))
	if rows[0]["cols"] != 4.0 || rows[0]["scored"] != 12.0 {
		t.Fatalf("rescored file: %v", rows[0])
	}
}

// 5. Passthrough keeps Parquet logical types (JSON, INTERVAL, TIMETZ and the
// rest) and the Hugging Face metadata, minus the image column.
func TestRunPassthroughKeepsTypesAndMetadata(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "typed.parquet")
	hf := `{"info":{"features":{"image":{"_type":"Image"},"label":{"_type":"ClassLabel","names":["w","x","y","z"]}}}}`
	duck(t, copyTo(imagesSQL(pngDir(t, 9, 3), `, json_object('k', id) AS j, to_days(CAST(id AS INTEGER)) + INTERVAL 90 MINUTE AS iv,
		CAST('12:30:00+02' AS TIMETZ) AS ttz, CAST('12:30:00' AS TIME) AS t, uuid() AS u, CAST(id AS DECIMAL(10,2)) / 4 AS d,
		TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_hours(CAST(id AS BIGINT)) AS tstz, CAST(id % 4 AS INTEGER) AS label,
		CAST(CASE WHEN id % 2 = 0 THEN 'x' ELSE 'y' END AS ENUM('x', 'y')) AS e`), in,
		fmt.Sprintf(", KV_METADATA {huggingface: '%s'}", hf)))
	out := t.TempDir()
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, in); code != 0 {
		t.Fatalf("exit %d %s", code, e)
	}
	o := filepath.Join(out, "typed.parquet")
	types := func(p string) map[string]string { // as DuckDB sees them
		m := map[string]string{}
		for _, r := range duck(t, fmt.Sprintf(`DESCRIBE SELECT * FROM '%s'`, p)) {
			m[r["column_name"].(string)] = r["column_type"].(string)
		}
		return m
	}
	want, got := types(in), types(o)
	for _, c := range []string{"id", "j", "iv", "ttz", "t", "u", "d", "tstz", "label", "e"} {
		if got[c] != want[c] {
			t.Errorf("column %s: DuckDB reads %q, the input has %q", c, got[c], want[c])
		}
	}
	if got["j"] != "JSON" || got["iv"] != "INTERVAL" || got["ttz"] != "TIME WITH TIME ZONE" {
		t.Errorf("DuckDB reads the output's columns as %v", got)
	}
	diff := duck(t, fmt.Sprintf(`SELECT count(*)::INT AS n FROM '%s' i JOIN '%s' o USING (id)
		WHERE i.j IS DISTINCT FROM o.j OR i.iv IS DISTINCT FROM o.iv OR i.ttz IS DISTINCT FROM o.ttz OR i.t IS DISTINCT FROM o.t
		OR i.u IS DISTINCT FROM o.u OR i.d IS DISTINCT FROM o.d OR i.tstz IS DISTINCT FROM o.tstz OR CAST(i.e AS VARCHAR) IS DISTINCT FROM CAST(o.e AS VARCHAR)`, in, o))
	if diff[0]["n"] != 0.0 {
		t.Errorf("%v rows differ after passthrough", diff[0]["n"])
	}
	meta := duck(t, fmt.Sprintf(`SELECT decode(value) AS v FROM parquet_kv_metadata('%s') WHERE decode(key) = 'huggingface'`, o))
	if len(meta) != 1 {
		t.Fatalf("huggingface metadata: %v", meta)
	}
	hfOut := map[string]string{"huggingface": meta[0]["v"].(string)}
	var doc struct {
		Info struct {
			Features map[string]any `json:"features"`
		} `json:"info"`
	}
	json.Unmarshal([]byte(hfOut["huggingface"]), &doc)
	if f := doc.Info.Features; len(f) != 1 || len(nbio.ClassNames(hfOut, "label")) != 4 {
		t.Errorf("huggingface features in the output: %+v", f)
	}
}

// 6. Float tensors hold 0..255 unless --pixel-range 1; 0..1 tensors under a
// /255 model are warned about, and --pixel-range 1 scores them like the
// same pixels as bytes.
func TestRunFloatTensorPixelRange(t *testing.T) {
	spec, _ := nin.ParseSpec([]byte(testutil.TinySpecJSON))
	m, _ := nin.NewModel(spec)
	m.Params.InitKaiming(3)
	m.Preprocess.Scale = 1.0 / 255
	model := filepath.Join(t.TempDir(), "m255.nin")
	if err := m.SaveFile(model); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	u8, f01 := filepath.Join(dir, "u8.parquet"), filepath.Join(dir, "f01.parquet")
	pixels := `SELECT i AS id, list_transform(range(144), x -> CAST((x * 7 + i * 13) % 256 AS UTINYINT)) AS px FROM range(10) t(i)`
	duck(t, copyTo(fmt.Sprintf("SELECT id, px AS pixels FROM (%s)", pixels), u8, ""))
	duck(t, copyTo(fmt.Sprintf("SELECT id, list_transform(px, v -> CAST(v AS FLOAT) / 255) AS pixels FROM (%s)", pixels), f01, ""))
	outU, outF, outF1 := t.TempDir(), t.TempDir(), t.TempDir()
	if code, _, e := runCLI(t, "run", "--model", model, "--out", outU, u8); code != 0 {
		t.Fatal(e)
	}
	code, _, e := runCLI(t, "run", "--model", model, "--out", outF, f01)
	if code != 0 || !strings.Contains(e, "--pixel-range 1") {
		t.Fatalf("0..1 floats: exit %d, no warning: %s", code, e)
	}
	if code, _, e := runCLI(t, "run", "--model", model, "--out", outF1, "--pixel-range", "1", f01); code != 0 || strings.Contains(e, "--pixel-range 1") {
		t.Fatalf("--pixel-range 1: exit %d %s", code, e)
	}
	a, b := scoredRows(t, outU), scoredRows(t, outF1)
	if len(a) != 10 || len(b) != 10 {
		t.Fatalf("%d and %d rows", len(a), len(b))
	}
	rows := duck(t, fmt.Sprintf(`SELECT max(abs(list_max(list_transform(list_zip(u.probs, f.probs), z -> abs(z[1] - z[2]))))) AS d
		FROM '%s' u JOIN '%s' f USING (id)`, filepath.Join(outU, "u8.parquet"), filepath.Join(outF1, "f01.parquet")))
	if d, _ := rows[0]["d"].(float64); d > 1e-5 {
		t.Errorf("--pixel-range 1 scores differ from the byte tensors' by %g", d)
	}
	if code, _, e := runCLI(t, "run", "--model", model, "--out", t.TempDir(), "--pixel-range", "100", f01); code != 2 {
		t.Errorf("--pixel-range 100: exit %d %s", code, e)
	}
}

// 7. A rerun verifies outputs before it skips them; an input that is gone
// is reported, and its output removed only with --prune.
func TestRunVerifiesOutputsAndReportsMissingInputs(t *testing.T) {
	model := tinyModel(t)
	in := t.TempDir()
	for f := 0; f < 4; f++ {
		duck(t, copyTo(fmt.Sprintf("SELECT id + %d AS id, image FROM (%s)", f*100, imagesSQL(pngDir(t, 15, uint64(f)), "")),
			filepath.Join(in, fmt.Sprintf("part-%d.parquet", f)), ", ROW_GROUP_SIZE 5"))
	}
	out := t.TempDir()
	sum := filepath.Join(t.TempDir(), "s.json")
	runOK := func(extra ...string) pipeline.RunSummary {
		t.Helper()
		if code, _, e := runCLI(t, append([]string{"run", "--model", model, "--out", out, "--summary", sum, "--batch", "4"}, append(extra, in)...)...); code != 0 {
			t.Fatalf("exit %d %s", code, e)
		}
		return readSummary(t, sum)
	}
	runOK()
	want := scoredRows(t, out)
	p := func(i int) string { return filepath.Join(out, fmt.Sprintf("part-%d.parquet", i)) }
	b0, _ := os.ReadFile(p(0))
	os.WriteFile(p(0), b0[:len(b0)/2], 0o644) // truncated
	os.WriteFile(p(1), nil, 0o644)            // emptied
	b2, _ := os.ReadFile(p(2))
	b2[len(b2)/3] ^= 0x55 // one flipped byte, same size
	os.WriteFile(p(2), b2, 0o644)
	s := runOK()
	if s.FilesDone != 3 || s.FilesSkip != 1 || s.OutputsRedone != 3 {
		t.Fatalf("rerun over damaged outputs: %+v", s)
	}
	got := scoredRows(t, out)
	if len(got) != len(want) {
		t.Fatalf("%d rows after repair, want %d", len(got), len(want))
	}
	for id, v := range want {
		if got[id] != v {
			t.Fatalf("id %d differs after repair", id)
		}
	}
	// a deleted input: reported, output kept; --prune removes it once
	os.Remove(filepath.Join(in, "part-3.parquet"))
	s = runOK()
	if len(s.InputsMissing) != 1 || !strings.HasSuffix(s.InputsMissing[0].Input, "part-3.parquet") || s.InputsMissing[0].Pruned {
		t.Fatalf("missing input: %+v", s.InputsMissing)
	}
	if _, err := os.Stat(p(3)); err != nil {
		t.Fatal("the output of a deleted input was removed without --prune")
	}
	if s = runOK("--prune"); len(s.InputsMissing) != 1 || !s.InputsMissing[0].Pruned {
		t.Fatalf("--prune: %+v", s.InputsMissing)
	}
	if _, err := os.Stat(p(3)); err == nil {
		t.Fatal("--prune left the output")
	}
	if s = runOK(); len(s.InputsMissing) != 0 || s.FilesSkip != 3 {
		t.Fatalf("after --prune: %+v", s)
	}
}

// 8. A 3-shard and a 4-shard job on one output at once (a rollout that
// changes --shards): no run fails because of the other, every row once.
func TestRunThreeAndFourShardsAtOnce(t *testing.T) {
	model, in := nightlyFixture(t, 12, 120, 40)
	ref := filepath.Join(t.TempDir(), "ref")
	if code, _, e := runCLI(t, "run", "--model", model, "--out", ref, in); code != 0 {
		t.Fatal(e)
	}
	want := scoredRows(t, ref)
	out := filepath.Join(t.TempDir(), "out")
	type proc struct {
		cmd  *exec.Cmd
		err  *bytes.Buffer
		name string
	}
	var procs []proc
	for _, n := range []int{3, 4} {
		for i := 0; i < n; i++ {
			cmd := subprocess("run", "--model", model, "--out", out, "--batch", "8", "--shard", fmt.Sprintf("%d/%d", i, n), in)
			var e bytes.Buffer
			cmd.Stderr = &e
			procs = append(procs, proc{cmd, &e, fmt.Sprintf("%d/%d", i, n)})
		}
	}
	// start them interleaved so both jobs reach the same units
	for i := range procs {
		j := (i*4 + i/2) % len(procs)
		procs[i], procs[j] = procs[j], procs[i]
	}
	for _, p := range procs {
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("shard %s: %v\n%s", p.name, err, p.err)
		}
	}
	got := scoredRows(t, out) // fails on a duplicate id
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for id, v := range want {
		if got[id] != v {
			t.Fatalf("id %d differs", id)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(out, ".*.tmp-*")); len(tmps) != 0 {
		t.Fatalf("temporaries left: %v", tmps)
	}
	man, _ := pipeline.ReadManifests(out)
	if len(man) != 12 {
		t.Fatalf("%d manifest entries", len(man))
	}
}

// 9. One input however it is spelled: relative, absolute, "." and through a
// symlink, a rerun finds every unit finished.
func TestRunSameInputAnySpelling(t *testing.T) {
	model := tinyModel(t)
	root := t.TempDir()
	data := filepath.Join(root, "data")
	os.MkdirAll(data, 0o755)
	for f := 0; f < 3; f++ {
		duck(t, copyTo(fmt.Sprintf("SELECT id + %d AS id, image FROM (%s)", f*100, imagesSQL(pngDir(t, 10, uint64(f)), "")),
			filepath.Join(data, fmt.Sprintf("f%d.parquet", f)), ""))
	}
	link := filepath.Join(root, "archive")
	os.Symlink(data, link)
	out := filepath.Join(root, "out")
	sum := filepath.Join(root, "s.json")
	for i, c := range []struct{ cwd, arg string }{
		{root, "data/"}, {"/", data + "/"}, {data, "."}, {root, "archive"}, {data, "f1.parquet"}, {root, "data/*.parquet"},
	} {
		code, e := runIn(t, c.cwd, "run", "--model", model, "--out", out, "--summary", sum, c.arg)
		if code != 0 {
			t.Fatalf("%v: exit %d %s", c, code, e)
		}
		s := readSummary(t, sum)
		if i == 0 && s.FilesDone != 3 || i > 0 && s.FilesDone != 0 {
			t.Errorf("%v: %d units scored again", c, s.FilesDone)
		}
	}
	if n := len(scoredRows(t, out)); n != 30 {
		t.Fatalf("%d rows", n)
	}
}

// corruptPage overwrites the page header of row group rg's image column
// chunk: the footer stays valid, reading stops with an error there.
func corruptPage(t *testing.T, path string, rg int) {
	t.Helper()
	pr, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	col := pr.MetaData().Schema.ColumnIndexByName("image")
	cc, _ := pr.MetaData().RowGroup(rg).ColumnChunk(col)
	off := cc.DataPageOffset()
	if cc.HasDictionaryPage() && cc.DictionaryPageOffset() > 0 {
		off = cc.DictionaryPageOffset()
	}
	pr.Close()
	b, _ := os.ReadFile(path)
	for i := int64(0); i < 24; i++ {
		b[off+i] = 0xEE
	}
	os.WriteFile(path, b, 0o644)
}

// 10. A file with a corrupt page is recorded as failed; the files read with
// it are committed, and a rerun retries only it.
func TestRunCorruptFileRecordedOthersCommit(t *testing.T) {
	model := tinyModel(t)
	in := t.TempDir()
	png := pngDir(t, 41, 6)
	for f := 0; f < 3; f++ { // 4100 rows: row groups of 2048, 2048 and 4 (DuckDB's smallest)
		duck(t, copyTo(fmt.Sprintf(`SELECT row_number() OVER (ORDER BY filename, r) - 1 + %d AS id, content AS image
			FROM read_blob('%s'), range(100) t(r) ORDER BY id`, f*10000, filepath.Join(png, "*.png")),
			filepath.Join(in, fmt.Sprintf("f%d.parquet", f)), ", ROW_GROUP_SIZE 2048"))
	}
	corruptPage(t, filepath.Join(in, "f1.parquet"), 1)
	out := t.TempDir()
	sum := filepath.Join(t.TempDir(), "s.json")
	for rep := 0; rep < 2; rep++ {
		code, _, e := runCLI(t, "run", "--model", model, "--out", out, "--summary", sum, in)
		s := readSummary(t, sum)
		if code != 3 || s.FilesFailed != 1 || !strings.Contains(e, "f1.parquet") || len(s.Failures) != 1 || !strings.HasSuffix(s.Failures[0].Input, "f1.parquet") {
			t.Fatalf("run %d: exit %d %+v\n%s", rep, code, s, e)
		}
		if rep == 0 && s.FilesDone != 2 || rep == 1 && (s.FilesDone != 0 || s.FilesSkip != 2) {
			t.Fatalf("run %d: %+v", rep, s)
		}
	}
	if n := len(scoredRows(t, out)); n != 8200 {
		t.Fatalf("%d rows committed, want the 8200 of the good files", n)
	}
	if _, err := os.Stat(filepath.Join(out, "f1.parquet")); err == nil {
		t.Fatal("the corrupt file has an output")
	}
	man, _ := pipeline.ReadManifests(out)
	if e := man["f1.parquet"]; e.Status != "failed" || e.Error == "" {
		t.Fatalf("manifest entry %+v", e)
	}
	// --on-error fail stops at it instead
	if code, _, e := runCLI(t, "run", "--model", model, "--out", t.TempDir(), "--on-error", "fail", in); code != 1 || !strings.Contains(e, "f1.parquet") {
		t.Fatalf("--on-error fail: exit %d %s", code, e)
	}
}

// 11. A partitioned dataset (DuckDB PARTITION_BY, Hive key=value/ folders)
// is scored with --recursive, its outputs keep the partitions.
func TestRunPartitionedDataset(t *testing.T) {
	model := tinyModel(t)
	root := t.TempDir()
	in := filepath.Join(root, "lake")
	duck(t, fmt.Sprintf("COPY (SELECT id, id %% 3 AS k, image FROM (%s)) TO '%s' (FORMAT parquet, PARTITION_BY (k))", imagesSQL(pngDir(t, 30, 4), ""), in))
	files, _ := filepath.Glob(filepath.Join(in, "k=*", "*.parquet"))
	if len(files) != 3 || filepath.Base(files[0]) != filepath.Base(files[1]) {
		t.Fatalf("DuckDB wrote %v", files)
	}
	out := filepath.Join(root, "scored")
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, in); code != 2 || !strings.Contains(e, "--recursive") {
		t.Fatalf("without --recursive: exit %d %s", code, e)
	}
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, "--recursive", in); code != 0 {
		t.Fatalf("--recursive: exit %d %s", code, e)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(in, f)
		if _, err := os.Stat(filepath.Join(out, rel)); err != nil {
			t.Errorf("no output for %s", rel)
		}
	}
	rows := duck(t, fmt.Sprintf(`SELECT count(*)::INT AS n, count(DISTINCT id)::INT AS ids, bool_and(k = id %% 3) AS ok, count(error)::INT AS errs
		FROM read_parquet('%s', hive_partitioning = true)`, filepath.Join(out, "**", "*.parquet")))
	if r := rows[0]; r["n"] != 30.0 || r["ids"] != 30.0 || r["ok"] != true || r["errs"] != 0.0 {
		t.Fatalf("DuckDB over the scored partitions: %v", r)
	}
	// a rerun over the same partitions skips them all
	sum := filepath.Join(root, "s.json")
	if code, _, _ := runCLI(t, "run", "--model", model, "--out", out, "--recursive", "--summary", sum, in); code != 0 || readSummary(t, sum).FilesSkip != 3 {
		t.Fatalf("rerun: %+v", readSummary(t, sum))
	}
}

// A metrics file that cannot be written is an error, not silence.
func TestTrainMetricsWriteErrors(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir, spec, data := trainFixture(t, 16, 1)
	code, _, e := runCLI(t, "train", "--spec", spec, "--epochs", "1", "--batch", "8", "--force",
		"--metrics", "/dev/full", "--out", filepath.Join(dir, "t.nin"), data)
	if code == 0 || !strings.Contains(e, "/dev/full") {
		t.Fatalf("metrics on /dev/full: exit %d: %s", code, e)
	}
}
