package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ninbatch/ninbatch/internal/testutil"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

// nightlyFixture writes a tiny model and files inputs of rows each (ids
// unique across files), each file in row groups of rg rows.
func nightlyFixture(t *testing.T, files, rows, rg int) (model, inDir string) {
	t.Helper()
	dir := t.TempDir()
	spec, _ := nin.ParseSpec([]byte(testutil.TinySpecJSON))
	m, _ := nin.NewModel(spec)
	m.Params.InitKaiming(3)
	m.Classes = []string{"a", "b", "c", "d"}
	model = filepath.Join(dir, "m.nin")
	if err := m.SaveFile(model); err != nil {
		t.Fatal(err)
	}
	inDir = filepath.Join(dir, "in")
	os.MkdirAll(inDir, 0o755)
	for f := 0; f < files; f++ {
		writeIDFile(t, filepath.Join(inDir, fmt.Sprintf("part-%03d.parquet", f)), f*rows, rows, rg, uint64(f))
	}
	return model, inDir
}

func writeIDFile(t *testing.T, path string, first, rows, rg int, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 9))
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "image", Type: arrow.BinaryTypes.Binary},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	w, err := nbio.CreateParquet(path, sc, nbio.WriterOptions{RowGroupRows: rg}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	pix := make([]uint8, 144)
	for i := 0; i < rows; i++ {
		for j := range pix {
			pix[j] = uint8(r.IntN(256))
		}
		png, _ := nbio.EncodePNG(pix, 12, 12, 1)
		b.Field(0).(*array.Int64Builder).Append(int64(first + i))
		b.Field(1).(*array.BinaryBuilder).Append(png)
		if (i+1)%rg == 0 || i == rows-1 {
			rec := b.NewRecordBatch()
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
			rec.Release()
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// scoredRows reads every output in dir as id → probs (as a string), failing
// on a duplicate id.
func scoredRows(t *testing.T, dir string) map[int64]string {
	t.Helper()
	out := map[int64]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.parquet"))
	for _, f := range files {
		src, err := nbio.Open(f, []string{"id", "probs"}, 1000, memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		err = nbio.EachBatch(src, func(rec arrow.RecordBatch) error {
			ids := rec.Column(0).(*array.Int64)
			probs := rec.Column(1).(*array.List)
			for i := 0; i < ids.Len(); i++ {
				id := ids.Value(i)
				if _, dup := out[id]; dup {
					return fmt.Errorf("id %d appears twice (second time in %s)", id, f)
				}
				b, e := probs.ValueOffsets(i)
				out[id] = fmt.Sprint(probs.ListValues().(*array.Float32).Float32Values()[b:e])
			}
			return nil
		})
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func readSummary(t *testing.T, p string) pipeline.RunSummary {
	var s pipeline.RunSummary
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRunRerunSemantics(t *testing.T) {
	model, in := nightlyFixture(t, 4, 30, 10)
	out := filepath.Join(t.TempDir(), "out")
	sum := filepath.Join(t.TempDir(), "s.json")
	runOK := func(extra ...string) pipeline.RunSummary {
		t.Helper()
		args := append([]string{"run", "--model", model, "--out", out, "--summary", sum, "--batch", "8"}, extra...)
		if code, _, e := runCLI(t, append(args, in)...); code != 0 {
			t.Fatalf("run %v: exit %d\n%s", extra, code, e)
		}
		return readSummary(t, sum)
	}
	s := runOK()
	if s.FilesDone != 4 || s.RowsIn != 120 {
		t.Fatalf("first run: %+v", s)
	}
	first := scoredRows(t, out)
	man, _ := pipeline.ReadManifests(out)
	if len(man) != 4 || man["part-002.parquet"].RowsOut != 30 || man["part-002.parquet"].ModelID == "" {
		t.Fatalf("manifest %+v", man)
	}
	st1, _ := os.Stat(filepath.Join(out, "part-001.parquet"))

	// a rerun skips everything and leaves outputs alone
	if s := runOK(); s.FilesDone != 0 || s.FilesSkip != 4 {
		t.Fatalf("rerun: %+v", s)
	}
	if st2, _ := os.Stat(filepath.Join(out, "part-001.parquet")); !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("rerun rewrote a finished output")
	}
	// a changed input is redone; a stale temporary of a crashed run is removed
	time.Sleep(10 * time.Millisecond)
	writeIDFile(t, filepath.Join(in, "part-002.parquet"), 60, 25, 10, 99)
	os.WriteFile(filepath.Join(out, ".part-003.parquet.tmp-deadbeef"), []byte("half"), 0o644)
	if s := runOK(); s.FilesDone != 1 || s.FilesSkip != 3 || s.StaleTemps != 1 || s.RowsIn != 25 {
		t.Fatalf("changed input: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(out, ".part-003.parquet.tmp-deadbeef")); err == nil {
		t.Fatal("stale temporary left")
	}
	rows := scoredRows(t, out)
	if len(rows) != 115 || rows[0] != first[0] {
		t.Fatalf("%d rows after the change", len(rows))
	}
	// --force redoes everything
	if s := runOK("--force"); s.FilesDone != 4 || s.FilesSkip != 0 {
		t.Fatalf("force: %+v", s)
	}
	// another model redoes everything too
	m2 := filepath.Join(t.TempDir(), "m2.nin")
	spec, _ := nin.ParseSpec([]byte(testutil.TinySpecJSON))
	mm, _ := nin.NewModel(spec)
	mm.Params.InitKaiming(4)
	mm.SaveFile(m2)
	if code, _, e := runCLI(t, "run", "--model", m2, "--out", out, "--summary", sum, in); code != 0 || readSummary(t, sum).FilesDone != 4 {
		t.Fatalf("new model: %d %s", code, e)
	}
}

func TestRunShardsCoverOnce(t *testing.T) {
	model, in := nightlyFixture(t, 5, 40, 10)
	base := t.TempDir()
	ref := filepath.Join(base, "ref")
	if code, _, e := runCLI(t, "run", "--model", model, "--out", ref, "--split-rows", "20", in); code != 0 {
		t.Fatalf("unsharded: %d %s", code, e)
	}
	want := scoredRows(t, ref)
	if len(want) != 200 {
		t.Fatalf("unsharded run scored %d rows", len(want))
	}
	// three shards as separate processes, side by side on one output directory
	out := filepath.Join(base, "sharded")
	var procs []*os.Process
	var errs []*strings.Builder
	for i := 0; i < 3; i++ {
		cmd := subprocess("run", "--model", model, "--out", out, "--split-rows", "20", "--shard", fmt.Sprintf("%d/3", i), in)
		var e strings.Builder
		cmd.Stderr = &e
		if i == 2 { // the third takes its index the Kubernetes way
			cmd = subprocess("run", "--model", model, "--out", out, "--split-rows", "20", "--shards", "3", in)
			cmd.Env = append(cmd.Env, "JOB_COMPLETION_INDEX=2")
			cmd.Stderr = &e
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd.Process)
		errs = append(errs, &e)
	}
	for i, p := range procs {
		st, _ := p.Wait()
		if st.ExitCode() != 0 {
			t.Fatalf("shard %d: exit %d\n%s", i, st.ExitCode(), errs[i])
		}
	}
	got := scoredRows(t, out)
	if len(got) != len(want) {
		t.Fatalf("shards scored %d rows, unsharded %d", len(got), len(want))
	}
	for id, p := range want {
		if got[id] != p {
			t.Fatalf("id %d: sharded %s, unsharded %s", id, got[id], p)
		}
	}
	outs, _ := filepath.Glob(filepath.Join(out, "*.parquet"))
	mans, _ := filepath.Glob(filepath.Join(out, "_ninbatch_manifest.shard-*-of-3.jsonl"))
	if len(outs) != 10 || len(mans) != 3 { // 5 files split into 2 parts each
		t.Fatalf("%d outputs, %d manifests", len(outs), len(mans))
	}
	// rerunning any shard now finds its units finished
	code, _, e := runCLI(t, "run", "--model", model, "--out", out, "--split-rows", "20", "--shard", "1/3", "--summary", filepath.Join(base, "s.json"), in)
	if s := readSummary(t, filepath.Join(base, "s.json")); code != 0 || s.FilesDone != 0 || s.FilesSkip == 0 {
		t.Fatalf("shard rerun: %d %+v %s", code, s, e)
	}
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, "--shard", "3/3", in); code != 2 || !strings.Contains(e, "shard") {
		t.Fatalf("bad shard: %d %s", code, e)
	}
}

func TestRunLock(t *testing.T) {
	model, in := nightlyFixture(t, 1, 10, 10)
	out := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(out, 0o755)
	lock, err := pipeline.AcquireLock(out, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// busy, not a usage error: a scheduler should retry it later
	code, _, e := runCLI(t, "--log-format", "json", "run", "--model", model, "--out", out, in)
	if code != exitBusy || !strings.Contains(e, "in use by another run") || !strings.Contains(e, fmt.Sprintf("pid %d", os.Getpid())) ||
		!strings.Contains(e, `"status":"busy"`) {
		t.Fatalf("second run: exit %d: %s", code, e)
	}
	// a shard cannot run next to an unsharded run either
	if code, _, _ := runCLI(t, "run", "--model", model, "--out", out, "--shard", "0/2", in); code != exitBusy {
		t.Fatalf("shard next to an unsharded run: exit %d", code)
	}
	lock.Release()
	// a lock held by a process that died (SIGKILL) does not block
	cmd := subprocess("run", "--model", model, "--out", out, in)
	cmd.Start()
	time.Sleep(50 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, in); code != 0 {
		t.Fatalf("after a killed run: exit %d %s", code, e)
	}
}

// TestRunCrashKills: kill -9 a run at random moments at least 20 times,
// rerun until it completes, and compare with an uninterrupted run.
func TestRunCrashKills(t *testing.T) {
	if testing.Short() {
		t.Skip("kill loop")
	}
	model, in := nightlyFixture(t, 12, 240, 60)
	base := t.TempDir()
	ref := filepath.Join(base, "ref")
	t0 := time.Now()
	if code, _, e := runCLI(t, "run", "--model", model, "--out", ref, "--batch", "16", "--split-rows", "120", in); code != 0 {
		t.Fatalf("reference: %d %s", code, e)
	}
	span := time.Since(t0)
	want := scoredRows(t, ref)
	out := filepath.Join(base, "out")
	r := rand.New(rand.NewPCG(1, 2))
	kills, attempts := 0, 0
	for kills < 20 && attempts < 200 {
		attempts++
		cmd := subprocess("run", "--model", model, "--out", out, "--batch", "16", "--split-rows", "120", in)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// process start-up plus a random point within a quarter of the run's span:
		// the run makes progress between kills, and kills land in reads, writes and renames
		time.Sleep(30*time.Millisecond + time.Duration(r.Int64N(int64(span/4))))
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		switch {
		case err != nil && strings.Contains(err.Error(), "killed"):
			kills++
		case err == nil:
			// the run finished before the kill: start the work over so the
			// remaining kills still land in live runs
			os.RemoveAll(out)
		}
	}
	if kills < 20 {
		t.Fatalf("only %d of %d kill attempts hit a running process", kills, attempts)
	}
	sum := filepath.Join(base, "s.json")
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, "--batch", "16", "--split-rows", "120", "--summary", sum, in); code != 0 {
		t.Fatalf("final run: %d %s", code, e)
	}
	got := scoredRows(t, out)
	if len(got) != len(want) {
		t.Fatalf("after %d kills: %d rows, uninterrupted %d", kills, len(got), len(want))
	}
	for id, p := range want {
		if got[id] != p {
			t.Fatalf("id %d differs after kills", id)
		}
	}
	// manifest consistent: one entry per output, with its row count; no temporaries left
	man, _ := pipeline.ReadManifests(out)
	outs, _ := filepath.Glob(filepath.Join(out, "*.parquet"))
	var names []string
	for _, o := range outs {
		names = append(names, filepath.Base(o))
		if e, ok := man[filepath.Base(o)]; !ok || e.RowsOut != 120 {
			t.Fatalf("manifest for %s: %+v", o, e)
		}
	}
	sort.Strings(names)
	if len(names) != 24 || !slices.IsSorted(names) {
		t.Fatalf("outputs %v", names)
	}
	if tmps, _ := filepath.Glob(filepath.Join(out, ".*.tmp-*")); len(tmps) != 0 {
		t.Fatalf("temporaries left: %v", tmps)
	}
	fin := readSummary(t, sum)
	t.Logf("%d kills (of %d attempts) over runs of ~%v; the final run scored %d units and found %d finished",
		kills, attempts, span, fin.FilesDone, fin.FilesSkip)
}

// TestRunExitCodes: 3 when rows errored (record and skip), 1 under fail
// with file/row/column in the message, 1 for a file that is not Parquet,
// and an empty input gives an empty output.
func TestRunExitCodes(t *testing.T) {
	model, in := nightlyFixture(t, 1, 12, 12)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.parquet")
	{
		sc := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}, {Name: "image", Type: arrow.BinaryTypes.Binary}}, nil)
		b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
		png, _ := nbio.EncodePNG(make([]uint8, 144), 12, 12, 1)
		for i := 0; i < 3; i++ {
			b.Field(0).(*array.Int64Builder).Append(int64(i))
			if i == 1 {
				b.Field(1).(*array.BinaryBuilder).Append([]byte("not an image"))
			} else {
				b.Field(1).(*array.BinaryBuilder).Append(png)
			}
		}
		rec := b.NewRecordBatch()
		w, _ := nbio.CreateParquet(bad, sc, nbio.WriterOptions{}, memory.DefaultAllocator)
		w.Write(rec)
		w.Commit()
		rec.Release()
		b.Release()
	}
	empty := filepath.Join(dir, "empty.parquet")
	{
		sc := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}, {Name: "image", Type: arrow.BinaryTypes.Binary}}, nil)
		w, _ := nbio.CreateParquet(empty, sc, nbio.WriterOptions{}, memory.DefaultAllocator)
		w.Commit()
	}
	text := filepath.Join(dir, "text.parquet")
	os.WriteFile(text, []byte("hello"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--on-error", "record", bad}, 3, "1 rows could not be scored"},
		{[]string{"--on-error", "skip", bad}, 3, "1 skipped"},
		{[]string{"--on-error", "fail", bad}, 1, bad + " row 1 column image"},
		{[]string{text}, 3, "not a Parquet or Arrow"},
		{[]string{"--on-error", "fail", text}, 1, "not a Parquet or Arrow"},
		{[]string{"--on-error", "maybe", bad}, 2, "on-error"},
		{[]string{empty, filepath.Join(in, "part-000.parquet")}, 0, ""},
	} {
		out := filepath.Join(t.TempDir(), "out")
		code, _, e := runCLI(t, append([]string{"run", "--model", model, "--out", out}, c.args...)...)
		if code != c.code || !strings.Contains(e, c.msg) {
			t.Errorf("%v: exit %d (want %d): %s", c.args, code, c.code, e)
		}
		if c.code == 0 {
			if rows := scoredRows(t, out); len(rows) != 12 {
				t.Errorf("empty + 12 rows: %d rows scored", len(rows))
			}
			if _, err := os.Stat(filepath.Join(out, "empty.parquet")); err != nil {
				t.Errorf("no output for the empty input: %v", err)
			}
		}
	}
}
