package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"

	"github.com/ninbatch/ninbatch/internal/testutil"
	"github.com/ninbatch/ninbatch/pipeline"
)

// s3Fixture starts an S3 server holding the nightly fixture's inputs under
// s3://ninbatch-in/archive/2026/ and its model at s3://ninbatch-in/models/m.nin.
func s3Fixture(t *testing.T, files, rows, rg int) (s *testutil.S3, model, inDir string) {
	t.Helper()
	model, inDir = nightlyFixture(t, files, rows, rg)
	s = testutil.NewS3(t, "ninbatch-in")
	put := func(key, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Backend.PutObject("ninbatch-in", key, map[string]string{}, bytes.NewReader(b), int64(len(b)), nil); err != nil {
			t.Fatal(err)
		}
	}
	names, _ := filepath.Glob(filepath.Join(inDir, "*.parquet"))
	for _, p := range names {
		put("archive/2026/"+filepath.Base(p), p)
	}
	put("archive/2026/_SUCCESS", model) // not an input: "_" names are skipped
	put("models/m.nin", model)
	return s, model, inDir
}

func s3Run(s *testutil.S3, args ...string) *exec.Cmd {
	cmd := subprocess(args...)
	cmd.Env = append(cmd.Env, s.Env()...)
	return cmd
}

// sameOutputs asserts with DuckDB that two output directories hold the
// same rows, every column compared, in both directions.
func sameOutputs(t *testing.T, a, b string) {
	t.Helper()
	q := func(x, y string) string {
		return fmt.Sprintf("SELECT count(*)::INTEGER AS n FROM (SELECT * FROM read_parquet('%s/**/*.parquet') EXCEPT ALL SELECT * FROM read_parquet('%s/**/*.parquet'))", x, y)
	}
	rows := testutil.DuckDB(t, q(a, b)+" UNION ALL "+q(b, a)+fmt.Sprintf(" UNION ALL SELECT count(*)::INTEGER FROM read_parquet('%s/**/*.parquet')", a))
	if len(rows) != 3 || fmt.Sprint(rows[0]["n"]) != "0" || fmt.Sprint(rows[1]["n"]) != "0" || fmt.Sprint(rows[2]["n"]) == "0" {
		t.Fatalf("outputs differ (rows only in a, only in b, total): %v", rows)
	}
}

// TestRunS3Inputs: inputs and model read from an S3 server by range
// requests give the same outputs as the same run on local files, spelled
// as a prefix, a glob or single objects.
func TestRunS3Inputs(t *testing.T) {
	testutil.DuckDBDir(t)
	s, model, inDir := s3Fixture(t, 3, 500, 64)
	local := filepath.Join(t.TempDir(), "local")
	if out, err := subprocess("run", "--model", model, "--out", local, inDir).CombinedOutput(); err != nil {
		t.Fatalf("local run: %v\n%s", err, out)
	}
	for _, spell := range [][]string{
		{"s3://ninbatch-in/archive/2026/"},
		{"s3://ninbatch-in/archive/2026"},
		{"s3://ninbatch-in/archive/*/part-*.parquet"},
		{"s3://ninbatch-in/archive/2026/part-000.parquet", "s3://ninbatch-in/archive/2026/part-001.parquet", "s3://ninbatch-in/archive/2026/part-002.parquet"},
	} {
		out := filepath.Join(t.TempDir(), "s3")
		sumPath := filepath.Join(t.TempDir(), "sum.json")
		before := s.Requests.Load()
		args := append([]string{"run", "--model", "s3://ninbatch-in/models/m.nin", "--out", out, "--summary", sumPath}, spell...)
		if b, err := s3Run(s, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", spell, err, b)
		}
		sum := readSummary(t, sumPath)
		if sum.Status != "succeeded" || sum.FilesDone != 3 || sum.RowsIn != 1500 {
			t.Fatalf("%v: summary %+v", spell, sum)
		}
		sameOutputs(t, local, out)
		t.Logf("%v: %d requests", spell, s.Requests.Load()-before)
		// a rerun finds the inputs unchanged (ETag fingerprint) and redoes nothing
		if b, err := s3Run(s, args...).CombinedOutput(); err != nil {
			t.Fatalf("rerun %v: %v\n%s", spell, err, b)
		}
		if sum := readSummary(t, sumPath); sum.FilesSkip != 3 || sum.FilesDone != 0 {
			t.Fatalf("rerun %v: summary %+v", spell, sum)
		}
	}
}

// TestRunS3Faults: a store that answers 500 or resets connections for a
// while is ridden out by retries, with outputs equal to a clean run; one
// that keeps failing fails the unit with an error naming the object and
// leaves no output for it.
func TestRunS3Faults(t *testing.T) {
	testutil.DuckDBDir(t)
	s, model, inDir := s3Fixture(t, 2, 400, 50)
	local := filepath.Join(t.TempDir(), "local")
	if out, err := subprocess("run", "--model", model, "--out", local, inDir).CombinedOutput(); err != nil {
		t.Fatalf("local run: %v\n%s", err, out)
	}
	for _, how := range []string{"500", "close"} {
		s.Fail(4, how, testutil.RangeGets)
		out := filepath.Join(t.TempDir(), "s3")
		if b, err := s3Run(s, "run", "--model", "s3://ninbatch-in/models/m.nin", "--out", out, "s3://ninbatch-in/archive/2026/").CombinedOutput(); err != nil {
			t.Fatalf("%s faults: %v\n%s", how, err, b)
		}
		if n := s.Pending(); n != 0 {
			t.Fatalf("%d injected %s faults were never hit", n, how)
		}
		sameOutputs(t, local, out)
	}

	// writes: part uploads, puts and completions answered 500 or cut
	for _, how := range []string{"500", "close"} {
		writes := func(r *http.Request) bool {
			return (r.Method == http.MethodPut || r.Method == http.MethodPost) && strings.Contains(r.URL.Path, "/faults-out/")
		}
		s.Fail(5, how, writes)
		cmd := s3Run(s, "run", "--model", "s3://ninbatch-in/models/m.nin", "--out", "s3://ninbatch-in/faults-out/"+how, "s3://ninbatch-in/archive/2026/")
		cmd.Env = append(cmd.Env, "NINBATCH_S3_PART_BYTES=4096")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s write faults: %v\n%s", how, err, b)
		}
		if n := s.Pending(); n != 0 {
			t.Fatalf("%d injected %s write faults were never hit", n, how)
		}
		sameOutputs(t, local, s3Scored(t, s, "faults-out/"+how))
		if n := s.Uploads(t, "ninbatch-in"); n != 0 {
			t.Fatalf("%d unfinished uploads", n)
		}
	}

	// part-001's reads keep failing: the run stops with exit 1 naming the
	// object and the store; nothing of part-001 is written or recorded
	s.Fail(1<<30, "500", func(r *http.Request) bool { return testutil.RangeGets(r) && strings.Contains(r.URL.Path, "part-001") })
	out := filepath.Join(t.TempDir(), "s3")
	sumPath := filepath.Join(t.TempDir(), "sum.json")
	args := []string{"run", "--model", "s3://ninbatch-in/models/m.nin", "--out", out, "--summary", sumPath, "s3://ninbatch-in/archive/2026/"}
	cmd := s3Run(s, args...)
	b, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(b), "part-001") || !strings.Contains(string(b), "the store failed") {
		t.Fatalf("exit %d, want 1 naming part-001 and the store\n%s", code, b)
	}
	if sum := readSummary(t, sumPath); sum.Status != "failed" || sum.FilesFailed != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if _, err := os.Stat(filepath.Join(out, "part-001.parquet")); !os.IsNotExist(err) {
		t.Fatalf("the failed unit left an output: %v", err)
	}
	if man, _ := pipeline.ReadManifests(out); len(man) > 0 {
		if _, ok := man["part-001.parquet"]; ok {
			t.Fatalf("the manifest records part-001: %+v", man["part-001.parquet"])
		}
	}
	// the store is back: the rerun completes the output
	s.Clear()
	if b, err := s3Run(s, args...).CombinedOutput(); err != nil {
		t.Fatalf("rerun: %v\n%s", err, b)
	}
	sameOutputs(t, local, out)
}

// TestRunS3Memory: scoring the 10,000 MNIST test images from the store
// peaks within 1.2× the resident memory of the same run on the local file
// (the read-ahead window is bounded; nothing is downloaded whole).
func TestRunS3Memory(t *testing.T) {
	if testing.Short() {
		t.Skip("scores 10,000 images four times")
	}
	test := mnistTest(t)
	s := testutil.NewS3(t, "ninbatch-rss")
	b, err := os.ReadFile(test)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backend.PutObject("ninbatch-rss", "mnist/test.parquet", map[string]string{}, bytes.NewReader(b), int64(len(b)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		t.Skip("needs /usr/bin/time (Debian package time; scripts/setup.sh installs it)")
	}
	// measured by time(1): a child's own peak would include this test
	// process's pages at fork
	peak := func(in string) int64 {
		rss := filepath.Join(t.TempDir(), "rss")
		cmd := exec.Command("/usr/bin/time", "-f", "%M", "-o", rss, os.Args[0], "--log-format", "json", "--threads", "2",
			"run", "--model", "../../models/nin-mnist.nin", "--out", t.TempDir(), in)
		cmd.Env = append(append(os.Environ(), "NINBATCH_TEST_MAIN=1"), s.Env()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", in, err, out)
		}
		b, err := os.ReadFile(rss)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatalf("time(1) wrote %q", b)
		}
		return kb
	}
	var local, remote []int64
	for range 2 {
		local = append(local, peak(test))
		remote = append(remote, peak("s3://ninbatch-rss/mnist/test.parquet"))
	}
	l, r := slices.Min(local), slices.Min(remote)
	t.Logf("peak RSS: local %v KiB, s3 %v KiB (%.2f×); input %d bytes", local, remote, float64(r)/float64(l), len(b))
	if float64(r) > 1.2*float64(l) {
		t.Fatalf("s3 run peaks at %d KiB, more than 1.2× the local run's %d KiB", r, l)
	}
}

// s3Scored downloads the outputs below s3://ninbatch-in/<prefix>/ into a
// new directory and returns it.
func s3Scored(t *testing.T, s *testutil.S3, prefix string) string {
	dir := t.TempDir()
	s.Download(t, "ninbatch-in", prefix+"/", dir)
	return dir
}

// TestRunS3Output: an s3:// output (multipart uploads with small parts)
// holds the same rows as a local run, a record per output under
// _ninbatch_manifest/, no unfinished uploads; a rerun skips every unit;
// another model's rerun replaces every output.
func TestRunS3Output(t *testing.T) {
	testutil.DuckDBDir(t)
	s, model, inDir := s3Fixture(t, 3, 500, 64)
	local := filepath.Join(t.TempDir(), "local")
	if out, err := subprocess("run", "--model", model, "--out", local, inDir).CombinedOutput(); err != nil {
		t.Fatalf("local run: %v\n%s", err, out)
	}
	sumPath := filepath.Join(t.TempDir(), "sum.json")
	args := []string{"run", "--model", "s3://ninbatch-in/models/m.nin", "--out", "s3://ninbatch-in/scored/", "--summary", sumPath, "s3://ninbatch-in/archive/2026/"}
	run := func() pipeline.RunSummary {
		cmd := s3Run(s, args...)
		cmd.Env = append(cmd.Env, "NINBATCH_S3_PART_BYTES=4096")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		return readSummary(t, sumPath)
	}
	if sum := run(); sum.Status != "succeeded" || sum.FilesDone != 3 {
		t.Fatalf("summary %+v", sum)
	}
	dir := s3Scored(t, s, "scored")
	sameOutputs(t, local, dir)
	man, err := pipeline.ReadManifests(dir)
	if err != nil || len(man) != 0 {
		t.Fatalf("a store output has no JSONL manifest: %v %v", man, err)
	}
	for i := 0; i < 3; i++ {
		b, err := os.ReadFile(filepath.Join(dir, "_ninbatch_manifest", fmt.Sprintf("part-%03d.parquet.json", i)))
		if err != nil || !strings.Contains(string(b), `"output_etag"`) || !strings.Contains(string(b), `"rows_out":500`) {
			t.Fatalf("record %d: %s %v", i, b, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "part-000.parquet")); err != nil || st.Size() <= 3*4096 {
		t.Fatalf("outputs should take several parts: %v %v", st, err)
	}
	if n := s.Uploads(t, "ninbatch-in"); n != 0 {
		t.Fatalf("%d unfinished uploads", n)
	}
	if sum := run(); sum.FilesSkip != 3 || sum.FilesDone != 0 {
		t.Fatalf("rerun: %+v", sum)
	}
	// an output replaced behind the manifest's back fails its check and is redone
	other, _ := os.ReadFile(filepath.Join(dir, "part-001.parquet"))
	s.Backend.PutObject("ninbatch-in", "scored/part-000.parquet", map[string]string{}, bytes.NewReader(other), int64(len(other)), nil)
	if sum := run(); sum.FilesDone != 1 || sum.OutputsRedone != 1 || sum.FilesSkip != 2 {
		t.Fatalf("rerun after a replaced output: %+v", sum)
	}
	sameOutputs(t, local, s3Scored(t, s, "scored"))
}

// TestRunS3KillResume: 20 SIGKILLs of an s3:// → s3:// run at random
// points, a rerun after each; the final output holds every row exactly
// once, as an uninterrupted run does, and no unfinished upload is left.
func TestRunS3KillResume(t *testing.T) {
	if testing.Short() {
		t.Skip("kill loop")
	}
	s, model, inDir := s3Fixture(t, 8, 240, 60)
	base := t.TempDir()
	ref := filepath.Join(base, "ref")
	if b, err := subprocess("run", "--model", model, "--out", ref, "--batch", "16", "--split-rows", "120", inDir).CombinedOutput(); err != nil {
		t.Fatalf("reference: %v\n%s", err, b)
	}
	want := scoredRows(t, ref)
	args := []string{"run", "--model", "s3://ninbatch-in/models/m.nin", "--out", "s3://ninbatch-in/scored", "--batch", "16", "--split-rows", "120", "s3://ninbatch-in/archive/2026/"}
	start := func() *exec.Cmd {
		cmd := s3Run(s, args...)
		cmd.Env = append(cmd.Env, "NINBATCH_S3_PART_BYTES=8192")
		return cmd
	}
	t0 := time.Now()
	if b, err := start().CombinedOutput(); err != nil {
		t.Fatalf("timing run: %v\n%s", err, b)
	}
	span := time.Since(t0)
	clear := func() {
		list, _ := s.Backend.ListBucket("ninbatch-in", &gofakes3.Prefix{HasPrefix: true, Prefix: "scored/"}, gofakes3.ListBucketPage{})
		for _, c := range list.Contents {
			s.Backend.DeleteObject("ninbatch-in", c.Key)
		}
	}
	clear()
	r := rand.New(rand.NewPCG(3, 4))
	kills, attempts, orphans := 0, 0, 0
	for kills < 20 && attempts < 200 {
		attempts++
		cmd := start()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30*time.Millisecond + time.Duration(r.Int64N(int64(span/3))))
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		switch {
		case err != nil && strings.Contains(err.Error(), "killed"):
			kills++
			orphans = max(orphans, s.Uploads(t, "ninbatch-in"))
		case err == nil:
			clear() // finished before the kill: start over so the kills land in live runs
		}
	}
	if kills < 20 {
		t.Fatalf("only %d of %d kill attempts hit a running process", kills, attempts)
	}
	sumPath := filepath.Join(base, "s.json")
	cmd := start()
	cmd.Args = append(cmd.Args, "--summary", sumPath)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("final run: %v\n%s", err, b)
	}
	got := scoredRows(t, s3Scored(t, s, "scored"))
	if len(got) != len(want) {
		t.Fatalf("after %d kills: %d rows, uninterrupted %d", kills, len(got), len(want))
	}
	for id, p := range want {
		if got[id] != p {
			t.Fatalf("id %d differs after kills", id)
		}
	}
	if n := s.Uploads(t, "ninbatch-in"); n != 0 {
		t.Fatalf("%d unfinished uploads after the final run", n)
	}
	fin := readSummary(t, sumPath)
	t.Logf("%d kills (of %d attempts) over runs of ~%v; up to %d unfinished uploads between runs; the final run scored %d units, found %d finished, aborted %d uploads",
		kills, attempts, span, orphans, fin.FilesDone, fin.FilesSkip, fin.StaleTemps)
}

// TestRunS3Shards: four shards at once on one s3:// output cover every
// row once; a rerun of each redoes nothing.
func TestRunS3Shards(t *testing.T) {
	s, model, inDir := s3Fixture(t, 6, 80, 20)
	ref := filepath.Join(t.TempDir(), "ref")
	if b, err := subprocess("run", "--model", model, "--out", ref, "--split-rows", "40", inDir).CombinedOutput(); err != nil {
		t.Fatalf("reference: %v\n%s", err, b)
	}
	want := scoredRows(t, ref)
	shard := func(i int, sum string) *exec.Cmd {
		cmd := s3Run(s, "run", "--model", "s3://ninbatch-in/models/m.nin", "--out", "s3://ninbatch-in/scored", "--split-rows", "40",
			"--shards", "4", "--summary", sum, "s3://ninbatch-in/archive/2026/")
		cmd.Env = append(cmd.Env, fmt.Sprintf("JOB_COMPLETION_INDEX=%d", i))
		return cmd
	}
	for round := 0; round < 2; round++ {
		var cmds []*exec.Cmd
		var outs []*bytes.Buffer
		var sums []string
		for i := 0; i < 4; i++ {
			sums = append(sums, filepath.Join(t.TempDir(), "s.json"))
			cmd := shard(i, sums[i])
			var b bytes.Buffer
			cmd.Stdout, cmd.Stderr = &b, &b
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds, outs = append(cmds, cmd), append(outs, &b)
		}
		done := 0
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("round %d shard %d: %v\n%s", round, i, err, outs[i])
			}
			sum := readSummary(t, sums[i])
			done += sum.FilesDone
			if round == 1 && (sum.FilesDone != 0 || sum.FilesSkip != sum.Files) {
				t.Fatalf("rerun of shard %d: %+v", i, sum)
			}
		}
		if round == 0 && done != 12 {
			t.Fatalf("shards committed %d units, want 12", done)
		}
	}
	got := scoredRows(t, s3Scored(t, s, "scored"))
	if len(got) != len(want) {
		t.Fatalf("shards scored %d rows, unsharded %d", len(got), len(want))
	}
	for id, p := range want {
		if got[id] != p {
			t.Fatalf("id %d differs", id)
		}
	}
}

// TestRunS3SameOutputTwice: two unsharded runs at once on one s3://
// output (a retried pod next to its zombie) leave every row once and a
// manifest that a rerun accepts whole.
func TestRunS3SameOutputTwice(t *testing.T) {
	s, model, inDir := s3Fixture(t, 6, 80, 20)
	ref := filepath.Join(t.TempDir(), "ref")
	if b, err := subprocess("run", "--model", model, "--out", ref, inDir).CombinedOutput(); err != nil {
		t.Fatalf("reference: %v\n%s", err, b)
	}
	want := scoredRows(t, ref)
	args := []string{"run", "--model", "s3://ninbatch-in/models/m.nin", "--out", "s3://ninbatch-in/twice", "s3://ninbatch-in/archive/2026/"}
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 0; i < 2; i++ {
		cmd := s3Run(s, args...)
		var b bytes.Buffer
		cmd.Stdout, cmd.Stderr = &b, &b
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, &b)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("run %d: %v\n%s", i, err, outs[i])
		}
	}
	got := scoredRows(t, s3Scored(t, s, "twice"))
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	sumPath := filepath.Join(t.TempDir(), "s.json")
	if b, err := s3Run(s, append(args, "--summary", sumPath)...).CombinedOutput(); err != nil {
		t.Fatalf("rerun: %v\n%s", err, b)
	}
	if sum := readSummary(t, sumPath); sum.FilesSkip != 6 || sum.FilesDone != 0 {
		t.Fatalf("rerun: %+v", sum)
	}
}
