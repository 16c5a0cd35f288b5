package nin

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPairedAB compares two sets of Options on the same model and input by
// alternating their Forward calls in one process and reporting the median
// time ratio B/A with its interquartile range. On this shared VM the speed
// drifts by 15–30% within minutes, so two separate runs (or two benchmark
// binaries) disagree by more than most optimisations gain; pairs taken
// back to back see the same drift. Skipped unless NINBATCH_AB_B is set:
//
//	NINBATCH_AB_A='{}' NINBATCH_AB_B='{"micro_batch":4}' NINBATCH_AB_BATCH=64 \
//	    go test -run PairedAB -v ./nin
//
// A and B are JSON Options (MaxBatch is set to the batch; Threads defaults
// to 2); NINBATCH_AB_PRESETS (comma-free list, default all three) and
// NINBATCH_AB_PAIRS (default 21) are optional.
func TestPairedAB(t *testing.T) {
	bj := os.Getenv("NINBATCH_AB_B")
	if bj == "" {
		t.Skip("set NINBATCH_AB_B (and optionally NINBATCH_AB_A, NINBATCH_AB_BATCH) to compare two Options")
	}
	batch, _ := strconv.Atoi(os.Getenv("NINBATCH_AB_BATCH"))
	if batch == 0 {
		batch = 64
	}
	pairs, _ := strconv.Atoi(os.Getenv("NINBATCH_AB_PAIRS"))
	if pairs == 0 {
		pairs = 21
	}
	parse := func(s string) Options {
		o := Options{Threads: 2}
		if s != "" {
			dec := json.NewDecoder(strings.NewReader(s))
			dec.DisallowUnknownFields() // a misspelt knob must not compare the default with itself
			if err := dec.Decode(&o); err != nil {
				t.Fatalf("options %q: %v", s, err)
			}
		}
		o.MaxBatch = batch
		return o
	}
	optA, optB := parse(os.Getenv("NINBATCH_AB_A")), parse(bj)
	presets := []string{"nin-mnist", "nin-cifar10", "nin-imagenet"}
	if p := os.Getenv("NINBATCH_AB_PRESETS"); p != "" {
		presets = []string{p}
	}
	for _, preset := range presets {
		m := randomModel(t, preset, 1)
		na, err := NewNet(m, optA)
		if err != nil {
			t.Fatal(err)
		}
		nb, err := NewNet(m, optB)
		if err != nil {
			t.Fatal(err)
		}
		x := randomInput(batch, na.InputLen(), 3)
		probs := make([]float32, batch*na.Classes())
		// each side of a pair runs about 0.1 s
		reps := 1
		t0 := time.Now()
		if err := na.Forward(x, batch, probs, nil); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d < 100*time.Millisecond {
			reps = int(100*time.Millisecond/max(d, time.Microsecond)) + 1
		}
		timed := func(n *Net) time.Duration {
			t0 := time.Now()
			for range reps {
				if err := n.Forward(x, batch, probs, nil); err != nil {
					t.Fatal(err)
				}
			}
			return time.Since(t0)
		}
		var ratios []float64
		var ta, tb time.Duration
		for range pairs {
			a := timed(na)
			b := timed(nb)
			ratios = append(ratios, b.Seconds()/a.Seconds())
			ta, tb = ta+a, tb+b
		}
		na.Close()
		nb.Close()
		slices.Sort(ratios)
		q := len(ratios) / 4
		imgs := float64(pairs * reps * batch)
		t.Logf("%s batch %d: A %.1f img/s, B %.1f img/s; B/A time median %.3f, IQR [%.3f, %.3f] over %d pairs",
			preset, batch, imgs/ta.Seconds(), imgs/tb.Seconds(), ratios[len(ratios)/2], ratios[q], ratios[len(ratios)-1-q], pairs)
	}
}
