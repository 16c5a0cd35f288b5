package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// PlotCurves draws the training curves (loss and error rate per epoch,
// train and validation) into a PNG file.
func PlotCurves(path string, history []EpochMetrics) error {
	if len(history) == 0 {
		return nil
	}
	b, err := CurvesPNG(history)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	w, err := createFile(path)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if _, err := w.Write(b); err != nil {
		w.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return w.Close()
}

// CurvesPNG is PlotCurves' picture as PNG bytes.
func CurvesPNG(history []EpochMetrics) ([]byte, error) {
	if len(history) == 0 {
		return nil, errors.New("no epochs to plot")
	}
	series := func(f func(EpochMetrics) float64) plotter.XYs {
		xy := make(plotter.XYs, len(history))
		for i, m := range history {
			xy[i].X, xy[i].Y = float64(m.Epoch), f(m)
		}
		return xy
	}
	hasVal := history[0].ValAcc > 0 || history[0].ValLoss > 0
	mk := func(title, ylabel string, train, val plotter.XYs, logY bool) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, "epoch", ylabel
		if logY {
			p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, logTicks{}
		}
		p.Add(plotter.NewGrid())
		for _, s := range []struct {
			name string
			xy   plotter.XYs
			c    color.Color
		}{{"train", train, color.RGBA{R: 200, A: 255}}, {"validation", val, color.RGBA{B: 200, A: 255}}} {
			if s.xy == nil {
				continue
			}
			l, err := plotter.NewLine(s.xy)
			if err != nil {
				return nil, err
			}
			l.Color, l.Width = s.c, vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(s.name, l)
		}
		p.Legend.Top = true
		if logY && p.Y.Min >= p.Y.Max/1.5 {
			// one point, or a flat curve: gonum pads the range by ±1, which
			// goes below 0 under 1; pad by a factor instead
			p.Y.Min, p.Y.Max = p.Y.Min/2, p.Y.Max*2
		}
		return p, nil
	}
	clamp := func(v float64) float64 { // log scale needs positive, finite values
		if !(v < math.MaxFloat64) {
			return math.MaxFloat64
		}
		return max(v, 1e-5)
	}
	var vLoss, vErr plotter.XYs
	if hasVal {
		vLoss = series(func(m EpochMetrics) float64 { return clamp(m.ValLoss) })
		vErr = series(func(m EpochMetrics) float64 { return clamp(100 * (1 - m.ValAcc)) })
	}
	loss, err := mk("loss", "cross-entropy", series(func(m EpochMetrics) float64 { return clamp(m.TrainLoss) }), vLoss, true)
	if err != nil {
		return nil, err
	}
	errp, err := mk("top-1 error", "error %", series(func(m EpochMetrics) float64 { return clamp(100 * (1 - m.TrainAcc)) }), vErr, true)
	if err != nil {
		return nil, err
	}
	img := vgimg.New(12*vg.Inch, 4.5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{{loss, errp}}, tiles, dc)
	loss.Draw(canvases[0][0])
	errp.Draw(canvases[0][1])
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func createFile(path string) (*os.File, error) { return os.Create(path) }

// logTicks labels a log axis at powers of ten, or, when fewer than two of
// those fall in range (a short run whose loss stays within a decade), at
// 1-2-5 steps, or else at plain linear ticks: the axis always has numbers.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.LogTicks{Prec: -1}.Ticks(lo, hi)
	if labelled(ticks, lo, hi) >= 2 {
		return ticks
	}
	if steps := (Ticks125{}).Ticks(lo, hi); len(steps) >= 2 {
		return steps
	}
	return plot.DefaultTicks{}.Ticks(lo, hi)
}

// Ticks125 labels a log axis at 1-2-5 steps, for curves whose differences
// lie within a decade or two (error rates between 0.5% and 2%).
type Ticks125 struct{}

func (Ticks125) Ticks(lo, hi float64) []plot.Tick {
	var steps []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, e); v >= lo && v <= hi {
				steps = append(steps, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', 3, 64)})
			}
		}
	}
	return steps
}

func labelled(ticks []plot.Tick, lo, hi float64) int {
	n := 0
	for _, t := range ticks {
		if t.Label != "" && t.Value >= lo && t.Value <= hi {
			n++
		}
	}
	return n
}
