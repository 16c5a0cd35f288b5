package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ninbatch/ninbatch/internal/testutil"
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

	// part-001 keeps failing: that unit fails (exit 3), part-000 commits
	s.Fail(1<<30, "500", func(r *http.Request) bool { return testutil.RangeGets(r) && strings.Contains(r.URL.Path, "part-001") })
	out := filepath.Join(t.TempDir(), "s3")
	sumPath := filepath.Join(t.TempDir(), "sum.json")
	cmd := s3Run(s, "run", "--model", "s3://ninbatch-in/models/m.nin", "--out", out, "--summary", sumPath, "s3://ninbatch-in/archive/2026/")
	b, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("exit %d, want 3 (a file failed)\n%s", code, b)
	}
	sum := readSummary(t, sumPath)
	if sum.FilesDone != 1 || sum.FilesFailed != 1 || !strings.Contains(sum.Failures[0].Error, "part-001") {
		t.Fatalf("summary %+v", sum)
	}
	if _, err := os.Stat(filepath.Join(out, "part-001.parquet")); !os.IsNotExist(err) {
		t.Fatalf("the failed unit left an output: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "part-000.parquet")); err != nil {
		t.Fatal(err)
	}
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
