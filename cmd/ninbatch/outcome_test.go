package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/urfave/cli/v2"

	"github.com/ninbatch/ninbatch/internal/testutil"
	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

// jsonLines parses every stderr line as JSON, failing on one that is not.
func jsonLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for i, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stderr line %d is not JSON: %q", i+1, l)
		}
		out = append(out, m)
	}
	return out
}

// writeWithBadRow writes the quadrant task as n PNG rows with row bad
// replaced by bytes that are no image.
func writeWithBadRow(t *testing.T, path string, n, bad int) {
	t.Helper()
	w, err := nbio.CreateLabeledImages(path, testutil.QuadrantClasses, nbio.WriterOptions{RowGroupRows: 16}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	pix, labels := testutil.Quadrants(n, 1)
	for i := 0; i < n; i++ {
		b, _ := nbio.EncodePNG(pix[i*144:(i+1)*144], 12, 12, 1)
		if i == bad {
			b = []byte("not an image at all")
		}
		if err := w.Append(b, "", int64(labels[i])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestRunLogsForSchedulers: in JSON mode every stderr line is JSON, the
// last one states the outcome with the error, and the summary carries the
// same status, for a run that succeeds, one that is partial and one that
// fails.
func TestRunLogsForSchedulers(t *testing.T) {
	model, _ := nightlyFixture(t, 0, 0, 1)
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.parquet"), filepath.Join(dir, "bad.parquet")
	writeWithBadRow(t, good, 40, -1)
	writeWithBadRow(t, bad, 40, 21)
	for _, tc := range []struct {
		name, input, onError string
		code                 int
		status, level, inErr string
	}{
		{"succeeded", good, "record", 0, "succeeded", "info", ""},
		{"partial", bad, "record", 3, "partial", "warn", "1 rows could not be scored"},
		{"failed", bad, "fail", 1, "failed", "error", "row 21"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := filepath.Join(t.TempDir(), "sub", "summary.json") // its directory is created
			prom := filepath.Join(t.TempDir(), "ninbatch.prom")
			code, _, e := runCLI(t, "--log-format", "json", "run", "--model", model, "--out", t.TempDir(), "--on-error", tc.onError,
				"--summary", sum, "--metrics-file", prom, tc.input)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, e)
			}
			lines := jsonLines(t, e)
			last := lines[len(lines)-1]
			if last["status"] != tc.status || last["level"] != tc.level || last["exit_code"] != float64(tc.code) || last["message"] != tc.status {
				t.Fatalf("final line %v", last)
			}
			errText, _ := last["error"].(string)
			if !strings.Contains(errText, tc.inErr) || (tc.inErr == "") != (errText == "") {
				t.Fatalf("final line's error %q, want it to contain %q", errText, tc.inErr)
			}
			if tc.status != "failed" && last["rows"] != float64(40) {
				t.Fatalf("final line has no counts: %v", last)
			}
			s := readSummary(t, sum)
			if s.Status != tc.status || s.Error != errText {
				t.Fatalf("summary status %q error %q; the log said %q %q", s.Status, s.Error, tc.status, errText)
			}
			if tc.status == "failed" && !strings.Contains(s.Error, bad) {
				t.Fatalf("summary error does not name the file: %q", s.Error)
			}
			checkPromFile(t, prom, tc.status, tc.code, tc.status != "failed")
		})
	}
}

// checkPromFile: the metrics file is valid Prometheus text whose gauges
// say the run's status, exit code and (when it got that far) its rows.
func checkPromFile(t *testing.T, path, status string, code int, counted bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sample := regexp.MustCompile(`^ninbatch_[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [-+0-9.e]+$`)
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if strings.HasPrefix(l, "# HELP ") || strings.HasPrefix(l, "# TYPE ") {
			continue
		}
		if !sample.MatchString(l) {
			t.Fatalf("not a Prometheus sample line: %q", l)
		}
		k, v, _ := strings.Cut(l, " ")
		got[k] = v
	}
	success := "0"
	if status == "succeeded" {
		success = "1"
	}
	want := map[string]string{`ninbatch_run_status{status="` + status + `"}`: "1", "ninbatch_run_success": success,
		"ninbatch_run_exit_code": strconv.Itoa(code)}
	if counted {
		want[`ninbatch_run_rows{kind="in"}`] = "40"
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q:\n%s", k, got[k], v, b)
		}
	}
	if ts, err := strconv.ParseFloat(got["ninbatch_run_last_completion_timestamp_seconds"], 64); err != nil || time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("completion timestamp %q", got["ninbatch_run_last_completion_timestamp_seconds"])
	}
}

// A --summary that cannot be written is refused before anything is scored.
func TestRunSummaryCheckedFirst(t *testing.T) {
	model, in := nightlyFixture(t, 1, 20, 10)
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file.txt")
	os.WriteFile(notDir, []byte("x"), 0o644)
	out := filepath.Join(dir, "out")
	for _, sum := range []string{filepath.Join(notDir, "s.json"), filepath.Join(notDir, "sub", "s.json"), dir} {
		for _, flag := range []string{"--summary", "--metrics-file"} {
			code, _, e := runCLI(t, "run", "--model", model, "--out", out, flag, sum, in)
			if code != 2 || !strings.Contains(e, flag) {
				t.Fatalf("%s %s: exit %d: %s", flag, sum, code, e)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("%s %s: the run started (%v)", flag, sum, err)
			}
		}
	}
}

// TestSignalsExit130And143: SIGINT and SIGTERM stop run and train with
// the shell's codes, and the final line says interrupted.
func TestSignalsExit130And143(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocesses")
	}
	model, in := nightlyFixture(t, 2, 2000, 250)
	_, spec, data := trainFixture(t, 400, 1)
	for _, tc := range []struct {
		cmd  string
		sig  syscall.Signal
		code int
	}{{"run", syscall.SIGINT, 130}, {"run", syscall.SIGTERM, 143}, {"train", syscall.SIGINT, 130}, {"train", syscall.SIGTERM, 143}} {
		args := []string{"run", "--model", model, "--out", t.TempDir(), "--batch", "8", in}
		started := "scoring"
		if tc.cmd == "train" {
			args = []string{"train", "--spec", spec, "--epochs", "1000", "--batch", "8", "--out", filepath.Join(t.TempDir(), "m.nin"), data}
			started = "data loaded"
		}
		cmd := subprocess(args...)
		pipe, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var lines []string
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), `"message":"`+started+`"`) {
				time.Sleep(50 * time.Millisecond)
				cmd.Process.Signal(tc.sig)
				break
			}
		}
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		cmd.Wait()
		last := jsonLines(t, strings.Join(lines, "\n"))
		if code := cmd.ProcessState.ExitCode(); code == 0 {
			t.Skipf("%s finished before the signal (machine too fast)", tc.cmd)
		} else if code != tc.code || last[len(last)-1]["status"] != "interrupted" {
			t.Fatalf("%s %v: exit %d, want %d; last line %v", tc.cmd, tc.sig, code, tc.code, last[len(last)-1])
		}
	}
}

// A run that fails its preflight into a new output directory leaves no
// directory, lock file or manifest behind.
func TestFailedPreflightLeavesNothing(t *testing.T) {
	model, in := nightlyFixture(t, 2, 20, 10)
	os.WriteFile(filepath.Join(in, "zz_bad.parquet"), []byte("not parquet"), 0o644)
	out := filepath.Join(t.TempDir(), "new", "out")
	code, _, e := runCLI(t, "run", "--model", model, "--out", out, "--on-error", "fail", in)
	if code != 1 || !strings.Contains(e, "zz_bad.parquet") {
		t.Fatalf("exit %d: %s", code, e)
	}
	if _, err := os.Stat(filepath.Dir(out)); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(out)
		t.Fatalf("a failed preflight left %s behind (%v): %v", out, err, entries)
	}
	// the same inputs under --on-error record: the bad file is recorded, the others scored
	if code, _, e := runCLI(t, "run", "--model", model, "--out", out, in); code != 3 {
		t.Fatalf("record: exit %d: %s", code, e)
	}
}

// Numeric flags out of range are usage errors naming the range, before
// anything is written.
func TestRunFlagRanges(t *testing.T) {
	model, in := nightlyFixture(t, 1, 10, 10)
	for _, tc := range []struct {
		flag, value, want string
	}{
		{"--topk", "-1", "--topk -1: want 0"},
		{"--topk", "1000", "--topk 1000: want 0..4"},
		{"--row-group-rows", "0", "--row-group-rows 0: want 1.."},
		{"--row-group-rows", "-1", "--row-group-rows -1: want 1.."},
		{"--decode-workers", "-2", "--decode-workers -2: want 1..256"},
		{"--decode-workers", "1000", "--decode-workers 1000: want 1..256"},
		{"--batch", "0", "--batch 0: want 1.."},
	} {
		out := filepath.Join(t.TempDir(), "out")
		code, _, e := runCLI(t, "run", "--model", model, "--out", out, tc.flag, tc.value, in)
		if code != 2 || !strings.Contains(e, tc.want) {
			t.Errorf("%s %s: exit %d, want 2 and %q: %s", tc.flag, tc.value, code, tc.want, e)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s %s: the output directory was created", tc.flag, tc.value)
		}
	}
}

// info takes --model as run and eval do, and the argument form still.
func TestInfoModelFlag(t *testing.T) {
	model, _ := nightlyFixture(t, 0, 0, 1)
	_, a, e := runCLI(t, "info", "--json", model)
	_, b, e2 := runCLI(t, "info", "--json", "--model", model)
	if a == "" || a != b {
		t.Fatalf("info MODEL and info --model MODEL differ:\n%s\n%s\n%s %s", a, b, e, e2)
	}
	if code, _, e := runCLI(t, "info", "--model", model, model); code != 2 || !strings.Contains(e, "not both") {
		t.Fatalf("both forms: exit %d: %s", code, e)
	}
}

// An unknown flag is one error line pointing to the help, not the help;
// --batch-size is --batch.
func TestFlagErrorsAreOneLine(t *testing.T) {
	for _, args := range [][]string{{"run", "--bogus"}, {"--bogus"}, {"dataset", "mnist", "--bogus"}, {"run", "--batch", "x"}} {
		code, out, e := runCLI(t, append([]string{"--log-format", "json"}, args...)...)
		lines := jsonLines(t, e)
		if code != 2 || len(lines) != 1 || out != "" || !strings.Contains(lines[0]["error"].(string), "--help)") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, e)
		}
	}
	model, in := nightlyFixture(t, 1, 10, 10)
	sum := filepath.Join(t.TempDir(), "s.json")
	if code, _, e := runCLI(t, "run", "--model", model, "--out", t.TempDir(), "--batch-size", "3", "--summary", sum, in); code != 0 {
		t.Fatalf("--batch-size: exit %d: %s", code, e)
	}
}

// Every flag of every command says what it does in --help.
func TestEveryFlagHasHelp(t *testing.T) {
	app := newApp(nil, nil)
	n := 0
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				n++
				if d, ok := f.(cli.DocGenerationFlag); !ok || d.GetUsage() == "" {
					t.Errorf("%s%s --%s has no help text", prefix, c.Name, f.Names()[0])
				}
			}
			walk(prefix+c.Name+" ", c.Subcommands)
		}
	}
	walk("", app.Commands)
	if n < 50 {
		t.Fatalf("only %d flags seen", n)
	}
}

// run --help lists the flags most people need first, in declared order,
// and the engine knobs last under their own heading.
func TestHelpPutsEngineFlagsLast(t *testing.T) {
	code, out, e := runCLI(t, "run", "--help")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, e)
	}
	at := func(s string) int {
		i := strings.Index(out, s)
		if i < 0 {
			t.Fatalf("run --help lacks %q:\n%s", s, out)
		}
		return i
	}
	if !(at("--model") < at("--out") && at("--out") < at("--topk") && at("--topk") < at("Nightly runs:") &&
		at("Output files:") < at("Nightly runs:") && at("Nightly runs:") < at("Engine tuning:") &&
		at("Nightly runs:") < at("--shard ") && at("Engine tuning:") < at("--threads") && at("Engine tuning:") < at("--decode-workers")) {
		t.Errorf("run --help order:\n%s", out)
	}
	if strings.Count(out, "Engine tuning:") != 1 {
		t.Errorf("one Engine tuning heading expected:\n%s", out)
	}
}

// The same seed gives the same model id twice: from init, and from a
// training run (on one thread), though the files' provenance differs.
func TestSameSeedSameModelID(t *testing.T) {
	dir := t.TempDir()
	id := func(path string) (string, string) {
		t.Helper()
		m, err := nin.LoadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return m.ID, m.FileHash
	}
	for i, name := range []string{"a.nin", "b.nin"} {
		if code, _, e := runCLI(t, "init", "--preset", "nin-mnist", "--seed", "3", "--out", filepath.Join(dir, name)); code != 0 {
			t.Fatalf("init %d: %s", i, e)
		}
		time.Sleep(1100 * time.Millisecond) // a new creation time in the provenance
	}
	a, fa := id(filepath.Join(dir, "a.nin"))
	b, fb := id(filepath.Join(dir, "b.nin"))
	if a != b || fa == fb {
		t.Fatalf("init twice: ids %s %s, file hashes %s %s", a, b, fa, fb)
	}
	_, spec, data := trainFixture(t, 64, 1)
	var ids []string
	for _, name := range []string{"t1.nin", "t2.nin"} {
		out := filepath.Join(dir, name)
		if code, _, e := runCLI(t, "train", "--spec", spec, "--epochs", "1", "--batch", "16", "--threads", "1", "--out", out, data); code != 0 {
			t.Fatalf("train: %s", e)
		}
		i, _ := id(out)
		ids = append(ids, i)
	}
	if ids[0] != ids[1] {
		t.Fatalf("training twice with one seed: ids %v", ids)
	}
}

// eval maps string labels through the model's class names; a null or
// unknown label or a bad image stops it, naming file, row and column, or
// with --on-error skip is left out and counted (exit 3).
func TestEvalStringLabelsAndBadRows(t *testing.T) {
	model, _ := nightlyFixture(t, 0, 0, 1) // classes a, b, c, d
	path := filepath.Join(t.TempDir(), "labels.parquet")
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "image", Type: arrow.BinaryTypes.Binary},
		{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	pix, labels := testutil.Quadrants(20, 1)
	for i := 0; i < 20; i++ {
		png, _ := nbio.EncodePNG(pix[i*144:(i+1)*144], 12, 12, 1)
		if i == 9 {
			png = []byte("not an image")
		}
		b.Field(0).(*array.BinaryBuilder).Append(png)
		switch i {
		case 5:
			b.Field(1).(*array.StringBuilder).AppendNull()
		case 7:
			b.Field(1).(*array.StringBuilder).Append("zebra")
		default:
			b.Field(1).(*array.StringBuilder).Append([]string{"a", "b", "c", "d"}[labels[i]])
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	w, err := nbio.CreateParquet(path, sc, nbio.WriterOptions{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	code, _, e := runCLI(t, "eval", "--model", model, path)
	if code != 1 || !strings.Contains(e, "row 5 column label: the label is null") {
		t.Fatalf("fail: exit %d: %s", code, e)
	}
	code, out, e := runCLI(t, "eval", "--model", model, "--on-error", "skip", "--json", path)
	var r struct {
		N           int `json:"n"`
		RowsSkipped int `json:"rows_skipped"`
	}
	json.Unmarshal([]byte(out), &r)
	if code != 3 || r.N != 17 || r.RowsSkipped != 3 ||
		!strings.Contains(e, `label \"zebra\" is not one of the model's class names`) || !strings.Contains(e, "row 9 column image") {
		t.Fatalf("skip: exit %d, %+v: %s", code, r, e)
	}
}

// TestRunProgressLines: off a terminal, a run logs JSON progress lines
// (rows, img/s, ETA, the current file) at --progress-every, so a long file
// is not silent between "scoring" and "file done".
func TestRunProgressLines(t *testing.T) {
	model, _ := nightlyFixture(t, 0, 0, 1)
	in := filepath.Join(t.TempDir(), "rows.parquet")
	writeWithBadRow(t, in, 64, -1)
	code, _, e := runCLI(t, "--log-format", "json", "--progress-every", "1ns", "run", "--model", model,
		"--out", t.TempDir(), "--batch", "8", in)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, e)
	}
	var rows []float64
	for _, l := range jsonLines(t, e) {
		if l["message"] == "scoring" && l["rows"] != nil {
			if l["input"] != in || l["total"] != float64(64) || l["img_per_s"] == nil || l["eta"] == nil {
				t.Fatalf("progress line %v", l)
			}
			rows = append(rows, l["rows"].(float64))
		}
	}
	if len(rows) < 4 || rows[len(rows)-1] != 64 {
		t.Fatalf("progress rows %v: want one line per 8-row batch up to 64", rows)
	}
	code, _, e = runCLI(t, "--progress-every", "-1s", "info")
	if code != 2 || !strings.Contains(e, "--progress-every") {
		t.Fatalf("--progress-every -1s: exit %d: %s", code, e)
	}
}
