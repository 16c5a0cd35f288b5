package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

// EvalResult summarises a model on a labelled set.
type EvalResult struct {
	N         int       `json:"n"`
	Top1      float64   `json:"top1_accuracy"`
	Top5      float64   `json:"top5_accuracy"`
	Error     float64   `json:"top1_error"`
	LogLoss   float64   `json:"mean_log_loss"`
	PerClass  []float64 `json:"per_class_accuracy"`
	ClassN    []int     `json:"per_class_count"`
	Confusion [][]int   `json:"confusion"` // [true][predicted]
	// RowsSkipped bad rows were left out (eval --on-error skip).
	RowsSkipped int     `json:"rows_skipped,omitempty"`
	Seconds     float64 `json:"seconds"`
	ImgPerSec   float64 `json:"img_per_s"`
}

// LabeledSet is a labelled image set that training and evaluation pass
// over: nbio.Labeled in memory or nbio.LabeledStream from its files.
type LabeledSet interface {
	Rows() int
	Digest() string
	Each(ctx context.Context, ord nbio.Order, batch int, fn func(pix []uint8, labels []int32, n int) error) error
}

// Evaluate scores every image of data, in order, with net (built with
// MaxBatch ≥ batch).
func Evaluate(ctx context.Context, net *nin.Net, data LabeledSet, prep *nbio.Preprocess, batch int) (*EvalResult, error) {
	return EvaluateMaps(ctx, net, data, prep, batch, nil)
}

// EvaluateMaps is Evaluate that also hands every image with its class maps
// to mc (when not nil). With mc.StopWhenFull the pass ends as soon as mc
// has its images, and the result covers the images seen so far.
func EvaluateMaps(ctx context.Context, net *nin.Net, data LabeledSet, prep *nbio.Preprocess, batch int, mc *MapCollector) (*EvalResult, error) {
	c := net.Classes()
	var maps []float32
	ml := net.MapDims().Len()
	if mc != nil {
		mc.init(c)
		maps = make([]float32, batch*ml)
	}
	r := &EvalResult{PerClass: make([]float64, c), ClassN: make([]int, c), Confusion: make([][]int, c)}
	for i := range r.Confusion {
		r.Confusion[i] = make([]int, c)
	}
	sz := prep.Len()
	x := make([]float32, batch*sz)
	probs := make([]float32, batch*c)
	var top1, top5 int
	var loss float64
	idx := make([]int, 0, 5)
	err := data.Each(ctx, nbio.Order{}, batch, func(pix []uint8, labels []int32, n int) error {
		for j := 0; j < n; j++ {
			prep.Normalize(x[j*sz:(j+1)*sz], pix[j*sz:(j+1)*sz])
		}
		if err := net.ForwardMaps(x, n, probs, nil, maps); err != nil {
			return err
		}
		for j := 0; j < n; j++ {
			p := probs[j*c : (j+1)*c]
			y := int(labels[j])
			idx = topK(idx, p, 5)
			if idx[0] == y {
				top1++
			}
			for k := range idx {
				if idx[k] == y {
					top5++
				}
			}
			loss -= math.Log(math.Max(float64(p[y]), 1e-30))
			r.ClassN[y]++
			r.Confusion[y][idx[0]]++
			if mc != nil {
				mc.add(r.N+j, pix[j*sz:(j+1)*sz], y, idx[0], p, maps[j*ml:(j+1)*ml])
			}
		}
		r.N += n
		if mc != nil && mc.full() {
			return errCollected
		}
		return nil
	})
	if err != nil && !errors.Is(err, errCollected) {
		return nil, err
	}
	if r.N == 0 {
		return nil, fmt.Errorf("no images to evaluate")
	}
	n := float64(r.N)
	r.Top1 = float64(top1) / n
	r.Top5 = float64(top5) / n
	r.Error = 1 - r.Top1
	r.LogLoss = loss / n
	for k := range r.PerClass {
		if r.ClassN[k] > 0 {
			r.PerClass[k] = float64(r.Confusion[k][k]) / float64(r.ClassN[k])
		}
	}
	return r, nil
}
