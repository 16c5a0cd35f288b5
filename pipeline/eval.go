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
	// Compare is the agreement with a reference net on the same images
	// (eval --compare-to).
	Compare *Agreement `json:"compare,omitempty"`
}

// Agreement compares a net's scores with a reference net's.
type Agreement struct {
	Precision     string  `json:"precision"`       // the reference's
	Top1Agreement float64 `json:"top1_agreement"`  // share of images with the same top-1 class
	MaxProbChange float64 `json:"max_prob_change"` // largest |p − p_ref| over images and classes
	ErrorRef      float64 `json:"top1_error_reference"`
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
	return evaluate(ctx, net, nil, data, prep, batch, mc)
}

// EvaluateCompare is EvaluateMaps that also runs ref on every batch and
// records in Compare how far net's scores are from ref's.
func EvaluateCompare(ctx context.Context, net, ref *nin.Net, data LabeledSet, prep *nbio.Preprocess, batch int, mc *MapCollector) (*EvalResult, error) {
	return evaluate(ctx, net, ref, data, prep, batch, mc)
}

func evaluate(ctx context.Context, net, ref *nin.Net, data LabeledSet, prep *nbio.Preprocess, batch int, mc *MapCollector) (*EvalResult, error) {
	c := net.Classes()
	var refProbs []float32
	var agree, refHits int
	var maxDP float64
	if ref != nil {
		refProbs = make([]float32, batch*c)
	}
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
		if ref != nil {
			if err := ref.Forward(x, n, refProbs, nil); err != nil {
				return err
			}
			for j := 0; j < n; j++ {
				p, q := probs[j*c:(j+1)*c], refProbs[j*c:(j+1)*c]
				a, b := argmax(p), argmax(q)
				if a == b {
					agree++
				}
				if b == int(labels[j]) {
					refHits++
				}
				for k := range p {
					maxDP = math.Max(maxDP, math.Abs(float64(p[k]-q[k])))
				}
			}
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
	if ref != nil {
		r.Compare = &Agreement{Precision: ref.Precision(), Top1Agreement: float64(agree) / n, MaxProbChange: maxDP, ErrorRef: 1 - float64(refHits)/n}
	}
	for k := range r.PerClass {
		if r.ClassN[k] > 0 {
			r.PerClass[k] = float64(r.Confusion[k][k]) / float64(r.ClassN[k])
		}
	}
	return r, nil
}

func argmax(p []float32) int {
	k := 0
	for i, v := range p {
		if v > p[k] {
			k = i
		}
	}
	return k
}
