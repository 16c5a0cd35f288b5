package main

import (
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ninbatch/ninbatch/internal/testutil"

	"github.com/apache/arrow-go/v18/arrow/memory"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

// TestMain lets tests run the real binary as a subprocess (to kill it).
func TestMain(m *testing.M) {
	if os.Getenv("NINBATCH_TEST_MAIN") == "1" {
		os.Exit(run(os.Args, os.Stdout, os.Stderr))
	}
	code := m.Run()
	if mnistData.dir != "" {
		os.RemoveAll(mnistData.dir)
	}
	os.Exit(code)
}

func subprocess(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "NINBATCH_TEST_MAIN=1")
	return cmd
}

// trainFixture writes the tiny spec and a tiny labelled dataset of n rows
// into a new directory.
func trainFixture(t *testing.T, n int, seed uint64) (dir, spec, data string) {
	t.Helper()
	dir = t.TempDir()
	spec = filepath.Join(dir, "tiny.json")
	os.WriteFile(spec, []byte(testutil.TinySpecJSON), 0o644)
	data = filepath.Join(dir, "train.parquet")
	writeTinyDataset(t, data, n, seed)
	return dir, spec, data
}

// writeTinyDataset writes testutil.Quadrants as n labelled 12×12 gray PNG rows.
func writeTinyDataset(t *testing.T, path string, n int, seed uint64) {
	t.Helper()
	w, err := nbio.CreateLabeledImages(path, testutil.QuadrantClasses, nbio.WriterOptions{RowGroupRows: 50}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	pix, labels := testutil.Quadrants(n, seed)
	for i := 0; i < n; i++ {
		b, _ := nbio.EncodePNG(pix[i*144:(i+1)*144], 12, 12, 1)
		if err := w.Append(b, "", int64(labels[i])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestTrainEvalRun: train a tiny model from Parquet, evaluate it, score
// with it; with the GAP head and the fc head.
func TestTrainEvalRun(t *testing.T) {
	for _, head := range []string{nin.HeadGAP, nin.HeadFC} {
		t.Run(head, func(t *testing.T) { trainEvalRun(t, head) })
	}
}

func trainEvalRun(t *testing.T, head string) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "spec.json")
	os.WriteFile(spec, []byte(testutil.TinySpecJSON), 0o644)
	train, val := filepath.Join(dir, "train.parquet"), filepath.Join(dir, "val.parquet")
	writeTinyDataset(t, train, 800, 1)
	writeTinyDataset(t, val, 40, 2)
	model := filepath.Join(dir, "m.nin")
	lr := "0.05"
	if head == nin.HeadFC {
		lr = "0.01" // the fc layer's gradient is not divided by the map's size as GAP's is: 0.05 diverges
	}
	code, _, e := runCLI(t, "train", "--spec", spec, "--head", head, "--init-scheme", "kaiming", "--epochs", "6", "--batch", "16",
		"--lr", lr, "--warmup", "0.5", "--val", val, "--out", model, "--threads", "1", train)
	if code != 0 {
		t.Fatalf("train: exit %d\n%s", code, e)
	}
	if f, err := os.Open(model + ".curves.png"); err != nil {
		t.Fatalf("no training curves: %v", err)
	} else if _, err := png.Decode(f); err != nil {
		t.Fatalf("curves are not a PNG: %v", err)
	} else {
		f.Close()
	}
	lines := readLines(t, model+".metrics.jsonl")
	if len(lines) != 6 {
		t.Fatalf("%d metric lines", len(lines))
	}
	m, err := nin.LoadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	if m.Spec.HeadKind() != head {
		t.Fatalf("model head %q, trained with --head %s", m.Spec.Head, head)
	}
	if m.Provenance.Epochs != 6 || m.Provenance.DatasetFingerprint == "" || !strings.Contains(m.Provenance.Command, "train") ||
		len(m.Classes) != 4 || m.Provenance.Metrics["val_acc"] < 0.9 {
		t.Fatalf("provenance %+v classes %v", m.Provenance, m.Classes)
	}
	// --export writes the checkpoint's model: here the same weights as the final model
	exported := filepath.Join(dir, "exported.nin")
	if code, _, e := runCLI(t, "train", "--export", "--checkpoint", model+".ckpt", "--out", exported); code != 0 {
		t.Fatalf("export: %d %s", code, e)
	}
	if xm, err := nin.LoadFile(exported); err != nil || xm.Provenance.Epochs != 6 || !slices.Equal(xm.Params.Data, m.Params.Data) ||
		!strings.Contains(xm.Provenance.Command, "exported from checkpoint") {
		t.Fatalf("exported model: %v %+v", err, xm.Provenance)
	}
	code, out, e := runCLI(t, "eval", "--model", model, "--json", val)
	if code != 0 {
		t.Fatalf("eval: exit %d %s", code, e)
	}
	var ev struct {
		N    int     `json:"n"`
		Top1 float64 `json:"top1_accuracy"`
	}
	json.Unmarshal([]byte(out), &ev)
	if ev.N != 40 || ev.Top1 != m.Provenance.Metrics["val_acc"] {
		t.Fatalf("eval %+v, training said val_acc %g", ev, m.Provenance.Metrics["val_acc"])
	}
	code, out, _ = runCLI(t, "eval", "--model", model, val)
	if code != 0 || !strings.Contains(out, "top-1 accuracy") || !strings.Contains(out, "true\\pred") {
		t.Fatalf("eval table:\n%s", out)
	}
	// scoring agrees with eval: every row, the same top-1 accuracy
	scored := filepath.Join(dir, "scored")
	if code, _, e := runCLI(t, "run", "--model", model, "--out", scored, val); code != 0 {
		t.Fatalf("run: exit %d %s", code, e)
	}
	rows := duck(t, fmt.Sprintf(`SELECT count(*)::INT AS n, sum((label = top1)::INT)::INT AS hits FROM '%s'`, filepath.Join(scored, "val.parquet")))
	if n, hits := rows[0]["n"], rows[0]["hits"]; fmt.Sprint(n) != "40" || fmt.Sprint(hits) != fmt.Sprint(int(ev.Top1*40+0.5)) {
		t.Fatalf("run scored %v rows, %v right; eval said %g", n, hits, ev.Top1)
	}
}

// TestTrainKillResume: a training process killed with SIGKILL mid-epoch
// resumes with --resume and ends with exactly the weights of an
// uninterrupted run; a corrupt checkpoint is a clear error.
func TestTrainKillResume(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess training")
	}
	for _, head := range []string{nin.HeadGAP, nin.HeadFC} {
		t.Run(head, func(t *testing.T) { trainKillResume(t, head) })
	}
}

func trainKillResume(t *testing.T, head string) {
	dir, spec, train := trainFixture(t, 600, 3)
	args := func(out string) []string {
		return []string{"train", "--spec", spec, "--head", head, "--init-scheme", "kaiming", "--epochs", "4", "--batch", "8", "--lr", "0.01",
			"--shuffle-buffer", "64", "--out", out, "--threads", "1", train}
	}
	ref := filepath.Join(dir, "ref.nin")
	if code, _, e := runCLI(t, args(ref)...); code != 0 {
		t.Fatalf("reference run: %d %s", code, e)
	}
	killed := filepath.Join(dir, "k.nin")
	cmd := subprocess(args(killed)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// wait for the first checkpoint, then kill in the middle of epoch 2
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(killed + ".ckpt"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no checkpoint appeared; stderr:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(killed); err == nil {
		t.Skip("the run finished before it could be killed (machine too fast); nothing to resume")
	}
	resume := append(args(killed), "--resume")
	if code, _, e := runCLI(t, resume...); code == 0 || !strings.Contains(e, "has its head already") {
		t.Fatalf("--resume with --head: exit %d %s", code, e) // the checkpoint's head is fixed
	}
	resume = slices.Delete(resume, 3, 5) // drop --head HEAD
	if code, _, e := runCLI(t, resume...); code != 0 {
		t.Fatalf("resume: %d %s", code, e)
	}
	a, _ := nin.LoadFile(ref)
	b, _ := nin.LoadFile(killed)
	for i := range a.Params.Data {
		if a.Params.Data[i] != b.Params.Data[i] {
			t.Fatal("resumed model differs from the uninterrupted run")
		}
	}
	// a corrupted checkpoint
	ck := killed + ".ckpt"
	data, _ := os.ReadFile(ck)
	os.WriteFile(ck, data[:len(data)/2], 0o644)
	code, _, e := runCLI(t, resume...)
	if code != 2 || !strings.Contains(e, "checkpoint") || !strings.Contains(e, ck) {
		t.Fatalf("corrupt checkpoint: exit %d %s", code, e)
	}
}

func readLines(t *testing.T, p string) []string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// A set under 8,192 images trains at batch 32 unless --batch (or its alias
// --batch-size) says otherwise: the metrics' step count shows which.
func TestTrainSmallSetBatch(t *testing.T) {
	dir, spec, data := trainFixture(t, 100, 1)
	for i, tc := range []struct {
		args  []string
		steps string
	}{{nil, `"step":4,`}, {[]string{"--batch-size", "50"}, `"step":2,`}, {[]string{"--batch", "128"}, `"step":1,`}} {
		out := filepath.Join(dir, fmt.Sprintf("m%d.nin", i))
		args := append([]string{"train", "--spec", spec, "--epochs", "1", "--threads", "1", "--out", out}, tc.args...)
		if code, _, e := runCLI(t, append(args, data)...); code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, e)
		}
		if m := readLines(t, out+".metrics.jsonl"); len(m) != 1 || !strings.Contains(m[0], tc.steps) {
			t.Errorf("%v: metrics %v, want %s", tc.args, m, tc.steps)
		}
	}
}
