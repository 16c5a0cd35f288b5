package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ninbatch/ninbatch/nin"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(append([]string{"ninbatch", "--log-format", "json"}, args...), &o, &e)
	return code, o.String(), e.String()
}

// The acceptance totals of reference §5, in the table and in --json.
func TestInfoTotals(t *testing.T) {
	for _, c := range []struct {
		preset, params, gflop string
		paramsN               int64
		gflopN                float64
	}{
		{"nin-cifar10", "966,986", "0.445", 966986, 0.445},
		{"nin-imagenet", "7,595,176", "2.200", 7595176, 2.20},
		{"nin-mnist", "349,674", "0.101", 349674, 0.101},
	} {
		code, out, errs := runCLI(t, "info", "--preset", c.preset)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", c.preset, code, errs)
		}
		if !strings.Contains(out, c.params+" parameters") || !strings.Contains(out, c.gflop+" GFLOP/image") {
			t.Errorf("%s table lacks %s params / %s GFLOP:\n%s", c.preset, c.params, c.gflop, out)
		}
		code, out, _ = runCLI(t, "info", "--preset", c.preset, "--json")
		if code != 0 {
			t.Fatalf("%s --json: exit %d", c.preset, code)
		}
		var info infoJSON
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatal(err)
		}
		if info.TotalParams != c.paramsN || int(info.GFLOPPerImage*1000+0.5) != int(c.gflopN*1000+0.5) {
			t.Errorf("%s json: %d params %.4f GFLOP", c.preset, info.TotalParams, info.GFLOPPerImage)
		}
	}
}

func TestInitInfoRoundTrip(t *testing.T) {
	out := filepath.Join(t.TempDir(), "m.nin")
	if code, _, e := runCLI(t, "init", "--preset", "nin-mnist", "--seed", "3", "--out", out); code != 0 {
		t.Fatalf("init: exit %d: %s", code, e)
	}
	// flags after the positional argument are honoured
	code, o, e := runCLI(t, "info", out, "--json")
	if code != 0 {
		t.Fatalf("info: exit %d: %s", code, e)
	}
	var info infoJSON
	if err := json.Unmarshal([]byte(o), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.ModelID) != 64 || info.TotalParams != 349674 || info.Provenance == nil || info.Provenance.Init != "gaussian seed=3" {
		t.Fatalf("info of init'd model: %+v", info)
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.nin")
	os.WriteFile(bad, []byte("not a model at all"), 0o644)
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"info"}, 2, "--preset"},
		{[]string{"info", "--preset", "nin-nope"}, 2, "unknown preset"},
		{[]string{"info", bad}, 2, bad},
		{[]string{"info", "--bogus"}, 2, "bogus"},
		{[]string{"init", "--preset", "nin-mnist"}, 2, "out"},
		{[]string{"--threads", "0", "info", "--preset", "nin-mnist"}, 2, "threads"},
		{[]string{"--log-format", "xml", "info", "--preset", "nin-mnist"}, 2, "log-format"},
		{[]string{"bench", "--preset", "nin-mnist", "--batch", "0"}, 2, "batch"},
		{[]string{"bench", "--preset", "nin-mnist", "--tuning", `{"mode":"gpu"}`}, 2, "mode"},
		{[]string{"bench", "--preset", "nin-mnist", "--tuning", `{"winograd":"offf"}`}, 2, "winograd"},
		{[]string{"bench", "--preset", "nin-mnist", "--tuning", `{"wingrad":"off"}`}, 2, "unknown field"},
	}
	for _, c := range cases {
		code, _, e := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(e, c.msg) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want it to mention %q)", c.args, code, c.code, e, c.msg)
		}
	}
}

func TestBenchJSON(t *testing.T) {
	code, o, e := runCLI(t, "bench", "--preset", "nin-mnist", "--batch", "4", "--threads", "2", "--reps", "1", "--rep-seconds", "0.01", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, e)
	}
	var r benchResult
	if err := json.Unmarshal([]byte(o), &r); err != nil {
		t.Fatal(err)
	}
	if r.ImgPerSec <= 0 || r.Batch != 4 || r.Threads != 2 {
		t.Fatalf("bench result %+v", r)
	}
}

// TestThreadsFlag: the global --threads and a command's own --threads
// (which wins) both reach the command.
func TestThreadsFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"--threads", "1", "bench"}, 1},
		{[]string{"bench", "--threads", "1"}, 1},
		{[]string{"--threads", "1", "bench", "--threads", "2"}, 2},
	} {
		args := append(c.args, "--preset", "nin-mnist", "--batch", "2", "--reps", "1", "--rep-seconds", "0.001", "--json")
		code, o, e := runCLI(t, args...)
		var r benchResult
		if code != 0 || json.Unmarshal([]byte(o), &r) != nil || r.Threads != c.want {
			t.Errorf("%v: exit %d threads %d, want %d (%s)", c.args, code, r.Threads, c.want, e)
		}
	}
}

// TestISAEnvironment: NINBATCH_ISA lowers the kernels' level (info and
// bench say which ran); an unknown or unsupported level is a usage error,
// never a crash.
func TestISAEnvironment(t *testing.T) {
	for _, c := range []struct {
		isa, want string
		code      int
	}{{"avx2", "kernels  avx2", 0}, {"scalar", "kernels  scalar", 0}, {"sse9", "NINBATCH_ISA", 2}} {
		cmd := subprocess("info", "--preset", "nin-mnist")
		cmd.Env = append(cmd.Env, "NINBATCH_ISA="+c.isa)
		out, _ := cmd.CombinedOutput()
		if c.code == 0 && (cmd.ProcessState.ExitCode() != 0 || !strings.Contains(string(out), c.want)) {
			t.Errorf("NINBATCH_ISA=%s info: exit %d\n%s", c.isa, cmd.ProcessState.ExitCode(), out)
		}
		if c.code != 0 {
			cmd := subprocess("bench", "--preset", "nin-mnist", "--batch", "1", "--reps", "1")
			cmd.Env = append(cmd.Env, "NINBATCH_ISA="+c.isa)
			out, _ := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != c.code || !strings.Contains(string(out), c.want) {
				t.Errorf("NINBATCH_ISA=%s bench: exit %d\n%s", c.isa, cmd.ProcessState.ExitCode(), out)
			}
		}
	}
}

// A bad $NINBATCH_TUNING is a usage error naming the variable, before any
// input is read: a typo never silently runs the default engine.
func TestTuningEnvIsChecked(t *testing.T) {
	for _, v := range []string{`{"gemm":"fast"}`, `{"wingrad":"off"}`, `winograd=off`} {
		t.Setenv(nin.TuningEnv, v)
		for _, args := range [][]string{
			{"run", "--model", "missing.nin", "--out", t.TempDir(), "missing.parquet"},
			{"eval", "--model", "missing.nin", "missing.parquet"},
			{"bench", "--preset", "nin-mnist"},
		} {
			code, _, e := runCLI(t, args...)
			if code != 2 || !strings.Contains(e, nin.TuningEnv) {
				t.Errorf("%s with %s=%s: exit %d, want 2 naming the variable: %s", args[0], nin.TuningEnv, v, code, e)
			}
		}
	}
	t.Setenv(nin.TuningEnv, `{"winograd":"off","gemm":"openblas"}`)
	code, o, e := runCLI(t, "bench", "--preset", "nin-mnist", "--batch", "2", "--reps", "1", "--rep-seconds", "0.01", "--json")
	if code != 0 || !strings.Contains(o, `"gemm":"openblas"`) || !strings.Contains(o, `"winograd_layers":null`) {
		t.Fatalf("bench under %s: exit %d: %s %s", nin.TuningEnv, code, o, e)
	}
}
