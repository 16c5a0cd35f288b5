package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ninbatch/ninbatch/internal/testutil"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

func tinySpec() *nin.Spec {
	s, err := nin.ParseSpec([]byte(testutil.TinySpecJSON))
	if err != nil {
		panic(err)
	}
	return s
}

// tinyData is testutil.Quadrants as a decoded labelled set.
func tinyData(n int, seed uint64) *nbio.Labeled {
	pix, labels := testutil.Quadrants(n, seed)
	return &nbio.Labeled{N: n, H: 12, W: 12, C: 1, Pixels: pix, Labels: labels, Fingerprint: "tiny"}
}

func newTiny(t *testing.T) *nin.Model {
	m, err := nin.NewModel(tinySpec())
	if err != nil {
		t.Fatal(err)
	}
	m.Params.InitKaiming(1)
	return m
}

func tinyConfig(epochs int) TrainConfig {
	return TrainConfig{Epochs: epochs, Batch: 16, LR: 0.05, Schedule: "step", StepEpochs: []int{5}, Gamma: 0.5,
		WarmupEpochs: 0.5, Momentum: 0.9, WeightDecay: 1e-4, Seed: 7, CropPad: 1}
}

// TestResumeIsExact: training 2 epochs, then resuming from the checkpoint
// for the 3rd and 4th, gives bit-identical weights and metrics to 4
// uninterrupted epochs (1 thread).
func TestResumeIsExact(t *testing.T) {
	data, val := tinyData(400, 1), tinyData(40, 2)
	dir := t.TempDir()
	full := newTiny(t)
	ref := &Trainer{Model: full, Train: data, Val: val, Prep: PreprocessFor(full), Config: tinyConfig(6), Threads: 1}
	if err := ref.Run(context.Background()); err != nil {
		t.Fatal(err)
	}

	ckpt := filepath.Join(dir, "c.ckpt")
	part := newTiny(t)
	first := &Trainer{Model: part, Train: data, Val: val, Prep: PreprocessFor(part), Config: tinyConfig(6), Threads: 1, Files: TrainFiles{Checkpoint: ckpt}}
	ctx, cancel := context.WithCancel(context.Background())
	first.Hooks.Epoch = func(m EpochMetrics) {
		if m.Epoch == 2 {
			cancel() // stop as if killed after the epoch-2 checkpoint
		}
	}
	if err := first.Run(ctx); err != context.Canceled {
		t.Fatalf("interrupted run returned %v", err)
	}
	m, vel, st, err := LoadCheckpoint(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch != 2 {
		t.Fatalf("checkpoint at epoch %d", st.Epoch)
	}
	resumed := &Trainer{Model: m, Train: data, Val: val, Prep: PreprocessFor(m), Config: tinyConfig(6), Threads: 1,
		Files: TrainFiles{Checkpoint: ckpt}, State: st, Velocity: vel}
	if err := resumed.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Params.Data, full.Params.Data) {
		t.Fatal("resumed weights differ from the uninterrupted run")
	}
	if len(resumed.State.History) != 6 {
		t.Fatalf("resumed history has %d epochs", len(resumed.State.History))
	}
	for e := 2; e < 6; e++ { // seconds and img/s differ between runs; the learning metrics must not
		a, b := resumed.State.History[e], ref.State.History[e]
		if a.TrainLoss != b.TrainLoss || a.ValLoss != b.ValLoss || a.TrainAcc != b.TrainAcc || a.Step != b.Step || a.LR != b.LR {
			t.Fatalf("epoch %d metrics differ:\n resumed %+v\n full    %+v", e+1, a, b)
		}
	}
	if last := ref.State.History[5]; last.ValAcc < 0.9 {
		t.Fatalf("the tiny task was not learned: %+v", last)
	}

	// resuming with other settings is refused
	cfg := tinyConfig(6)
	cfg.LR = 0.5
	m2, vel2, st2, _ := LoadCheckpoint(ckpt)
	bad := &Trainer{Model: m2, Train: data, Prep: PreprocessFor(m2), Config: cfg, Threads: 1, State: st2, Velocity: vel2}
	if err := bad.Run(context.Background()); err == nil {
		t.Fatal("resume with a different learning rate accepted")
	}
}

func TestLRSchedule(t *testing.T) {
	c := TrainConfig{Epochs: 10, LR: 1, Schedule: "step", StepEpochs: []int{5, 8}, Gamma: 0.1, WarmupEpochs: 1}
	for _, tc := range []struct{ e, want float64 }{{0, 0}, {0.5, 0.5}, {1, 1}, {4.9, 1}, {5, 0.1}, {8, 0.01}} {
		if got := c.LRAt(tc.e); got < tc.want-1e-12 || got > tc.want+1e-12 {
			t.Errorf("step LR at %g = %g, want %g", tc.e, got, tc.want)
		}
	}
	c = TrainConfig{Epochs: 10, LR: 1, Schedule: "cosine"}
	if c.LRAt(0) != 1 || c.LRAt(5) > 0.5+1e-12 || c.LRAt(10) > 1e-12 {
		t.Error("cosine schedule wrong")
	}
}

// TestTrainFilesFollowCheckpoint: the metrics file always matches the
// checkpoint's history (a resume rewrites it, dropping a line the
// checkpoint never recorded), and a finished run writes model and curves.
func TestTrainFilesFollowCheckpoint(t *testing.T) {
	data := tinyData(64, 1)
	dir := t.TempDir()
	files := TrainFiles{Model: filepath.Join(dir, "m.nin"), Checkpoint: filepath.Join(dir, "m.ckpt"),
		Metrics: filepath.Join(dir, "m.jsonl"), Curves: filepath.Join(dir, "m.png"), Dataset: "tiny", Command: "test"}
	m := newTiny(t)
	ctx, cancel := context.WithCancel(context.Background())
	first := &Trainer{Model: m, Train: data, Prep: PreprocessFor(m), Config: tinyConfig(3), Threads: 1, Files: files}
	first.Hooks.Epoch = func(m EpochMetrics) {
		if m.Epoch == 2 {
			cancel()
		}
	}
	if err := first.Run(ctx); err != context.Canceled {
		t.Fatalf("interrupted run returned %v", err)
	}
	if _, err := os.Stat(files.Model); !os.IsNotExist(err) {
		t.Fatalf("an interrupted run wrote the model: %v", err)
	}
	f, _ := os.OpenFile(files.Metrics, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"epoch":3,"train_loss":99}` + "\n") // as if written for an epoch the checkpoint lacks
	f.Close()

	m2, vel, st, err := LoadCheckpoint(files.Checkpoint)
	if err != nil || st.Epoch != 2 || st.Config == nil || len(st.History) != 2 {
		t.Fatalf("checkpoint: %v %+v", err, st)
	}
	resumed := &Trainer{Model: m2, Train: data, Prep: PreprocessFor(m2), Config: tinyConfig(3), Threads: 1, Files: files, State: st, Velocity: vel}
	if err := resumed.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(files.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d metrics lines:\n%s", len(lines), b)
	}
	for e, l := range lines {
		var em EpochMetrics
		if err := json.Unmarshal([]byte(l), &em); err != nil || em != resumed.State.History[e] {
			t.Fatalf("metrics line %d = %s (%v), history %+v", e+1, l, err, resumed.State.History[e])
		}
	}
	out, err := nin.LoadFile(files.Model)
	if err != nil || out.Provenance.Epochs != 3 || out.Provenance.Command != "test" || out.Provenance.DatasetFingerprint != "tiny" {
		t.Fatalf("model: %v %+v", err, out.Provenance)
	}
	if p, err := os.ReadFile(files.Curves); err != nil || !bytes.HasPrefix(p, []byte("\x89PNG")) {
		t.Fatalf("curves: %v", err)
	}
}

// A one-epoch cosine run reports the rate its last step ran at, not the
// schedule's end (0), and a loss still at ln(classes) after the first
// epoch is warned about.
func TestFirstEpochReports(t *testing.T) {
	m := newTiny(t)
	cfg := tinyConfig(1)
	cfg.Schedule, cfg.WarmupEpochs = "cosine", 0
	var warns []string
	tr := &Trainer{Model: m, Train: tinyData(32, 1), Prep: PreprocessFor(m), Config: cfg, Threads: 1,
		Hooks: TrainHooks{Warn: func(s string) { warns = append(warns, s) }}}
	if err := tr.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lr := tr.State.History[0].LR; !(lr > 0) || lr != cfg.LRAt(0.5) {
		t.Fatalf("epoch 1 lr %g, want the last step's %g", lr, cfg.LRAt(0.5))
	}
	// a zero learning rate cannot move the loss off ln(4)
	m2 := newTiny(t)
	for i := range m2.Params.Data {
		m2.Params.Data[i] = 0
	}
	cfg.LR = 1e-30
	warns = nil
	stuck := &Trainer{Model: m2, Train: tinyData(32, 1), Prep: PreprocessFor(m2), Config: cfg, Threads: 1,
		Hooks: TrainHooks{Warn: func(s string) { warns = append(warns, s) }}}
	if err := stuck.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "epoch 1: loss") || !strings.Contains(warns[0], "not learning") {
		t.Fatalf("warnings %q", warns)
	}
}

// TestResumeExtends: a finished run resumed with more epochs trains on,
// the checkpoint recording the new length; fewer epochs than it holds,
// or any other change, is refused.
func TestResumeExtends(t *testing.T) {
	data := tinyData(64, 1)
	ckpt := filepath.Join(t.TempDir(), "c.ckpt")
	m := newTiny(t)
	first := &Trainer{Model: m, Train: data, Prep: PreprocessFor(m), Config: tinyConfig(2), Threads: 1, Files: TrainFiles{Checkpoint: ckpt}}
	if err := first.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	resume := func(cfg TrainConfig) (*Trainer, error) {
		m, vel, st, err := LoadCheckpoint(ckpt)
		if err != nil {
			t.Fatal(err)
		}
		tr := &Trainer{Model: m, Train: data, Prep: PreprocessFor(m), Config: cfg, Threads: 1, Files: TrainFiles{Checkpoint: ckpt}, State: st, Velocity: vel}
		return tr, tr.Run(context.Background())
	}
	tr, err := resume(tinyConfig(4))
	if err != nil || len(tr.State.History) != 4 || tr.State.Config.Epochs != 4 || tr.State.Step != 16 {
		t.Fatalf("extended: %v, %d epochs, config %d, step %d", err, len(tr.State.History), tr.State.Config.Epochs, tr.State.Step)
	}
	if _, _, st, _ := LoadCheckpoint(ckpt); st.Config.Epochs != 4 || st.Epoch != 4 {
		t.Fatalf("checkpoint after the extension: %+v", st)
	}
	if _, err := resume(tinyConfig(3)); !errors.Is(err, ErrConfigMismatch) || !strings.Contains(err.Error(), "cannot shorten") {
		t.Fatalf("shortening: %v", err)
	}
	other := tinyConfig(6)
	other.LR = 0.01
	if _, err := resume(other); !errors.Is(err, ErrConfigMismatch) {
		t.Fatalf("more epochs and another rate: %v", err)
	}
}
