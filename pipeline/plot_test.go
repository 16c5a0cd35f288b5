package pipeline

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLogTicksAlwaysLabelled: a log axis has at least two numbered ticks in
// range whether it spans decades, one decade, or a sliver of one.
func TestLogTicksAlwaysLabelled(t *testing.T) {
	for _, r := range [][2]float64{{1e-3, 10}, {0.3, 0.9}, {0.31, 0.39}, {2.2, 2.31}, {12, 70}} {
		if n := labelled(logTicks{}.Ticks(r[0], r[1]), r[0], r[1]); n < 2 {
			t.Errorf("range %v: %d labelled ticks, want at least 2", r, n)
		}
	}
}

// TestPlotCurvesShortRun: a one-epoch run without validation draws, with
// its loss above 1 or below it (a ±1 pad would reach below 0 on a log axis),
// and so does a flat curve.
func TestPlotCurvesShortRun(t *testing.T) {
	for _, h := range [][]EpochMetrics{
		{{Epoch: 1, TrainLoss: 2.25, TrainAcc: 0.18}},
		{{Epoch: 1, TrainLoss: 0.35, TrainAcc: 0.9}},
		{{Epoch: 1, TrainLoss: 0.35, TrainAcc: 0.9, ValLoss: 0.3, ValAcc: 0.91}, {Epoch: 2, TrainLoss: 0.35, TrainAcc: 0.9, ValLoss: 0.3, ValAcc: 0.91}},
	} {
		path := filepath.Join(t.TempDir(), "curves.png")
		if err := PlotCurves(path, h); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(path); err != nil || st.Size() == 0 {
			t.Fatalf("no curves: %v", err)
		}
	}
}
