package pipeline

import (
	"errors"
	"slices"
)

// MapSample is one image with its class maps, as the maps figure and the
// report show it.
type MapSample struct {
	Index int       `json:"index"` // position in the data, file order (0-based)
	Label int       `json:"label"`
	Pred  int       `json:"pred"`
	Prob  float32   `json:"prob"` // the prediction's probability
	Pix   []uint8   `json:"-"`    // the network's input before normalisation: H×W×C
	Maps  []float32 `json:"-"`    // (mapH, mapW, classes), see nin.Net.ForwardMaps
}

// MapCollector keeps, during one pass over labelled data, the images a
// class-map figure shows: the first PerClass correctly classified images of
// each class, the Mistakes most confident misclassifications, and the
// first First images whatever their outcome. Memory is bounded by those
// counts, not by the data.
type MapCollector struct {
	PerClass, Mistakes, First int
	// StopWhenFull ends the pass once every class has PerClass images and
	// First is reached (Mistakes must then be 0: the most confident ones
	// are known only at the end).
	StopWhenFull bool

	Correct [][]MapSample // by label
	Wrong   []MapSample   // most confident first
	FirstN  []MapSample
	pending int // classes still short of PerClass images
}

// errCollected ends an evaluation pass early: the collector has its images.
var errCollected = errors.New("maps collected")

func (mc *MapCollector) init(classes int) {
	mc.Correct = make([][]MapSample, classes)
	mc.pending = classes
	if mc.PerClass == 0 {
		mc.pending = 0
	}
}

// full reports whether the pass can stop.
func (mc *MapCollector) full() bool {
	return mc.StopWhenFull && mc.Mistakes == 0 && mc.pending == 0 && len(mc.FirstN) >= mc.First
}

// add considers image index with its label, probabilities and maps; it
// copies what it keeps.
func (mc *MapCollector) add(index int, pix []uint8, label, pred int, probs, maps []float32) {
	s := func() MapSample {
		return MapSample{Index: index, Label: label, Pred: pred, Prob: probs[pred],
			Pix: slices.Clone(pix), Maps: slices.Clone(maps)}
	}
	if len(mc.FirstN) < mc.First {
		mc.FirstN = append(mc.FirstN, s())
	}
	if pred == label && len(mc.Correct[label]) < mc.PerClass {
		mc.Correct[label] = append(mc.Correct[label], s())
		if len(mc.Correct[label]) == mc.PerClass {
			mc.pending--
		}
	}
	if pred != label && mc.Mistakes > 0 {
		w := mc.Wrong
		if len(w) == mc.Mistakes && probs[pred] <= w[len(w)-1].Prob {
			return
		}
		pos, _ := slices.BinarySearchFunc(w, probs[pred], func(a MapSample, p float32) int {
			if a.Prob >= p { // equal confidence: the earlier image first
				return -1
			}
			return 1
		})
		w = slices.Insert(w, pos, s())
		mc.Wrong = w[:min(len(w), mc.Mistakes)]
	}
}

// Grid is the collected correctly classified images in rows: the first of
// each class in class order, then the second of each, and so on, up to
// rows (all of them when rows ≤ 0).
func (mc *MapCollector) Grid(rows int) []MapSample {
	var out []MapSample
	for k := 0; ; k++ {
		added := false
		for _, c := range mc.Correct {
			if k < len(c) {
				out = append(out, c[k])
				added = true
			}
			if rows > 0 && len(out) == rows {
				return out
			}
		}
		if !added {
			return out
		}
	}
}
