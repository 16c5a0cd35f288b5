package nin

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

func sqrt(x float64) float64 { return math.Sqrt(x) }

// Model is a network's architecture, weights and the metadata that travels
// with them in a .nin file.
type Model struct {
	Spec       Spec
	Preprocess Preprocess
	Classes    []string // class names, empty or one per output
	Provenance Provenance
	Params     *Params
	// Quant is the int8 calibration (`ninbatch quantize`), or nil. A model
	// with one is stored as format ninbatch.nin/2; changing the weights
	// invalidates it (training drops it).
	Quant *Quant
	// ID is the model's content id (ContentID) as of its last load or save:
	// identical weights, architecture, preprocessing and class names have
	// one id whatever their provenance; empty for a model only in memory.
	ID string
	// FileHash is the hex sha256 of the .nin file last loaded or saved.
	FileHash string
}

// ContentID is the hex sha256 of what decides a model's scores: the spec,
// the preprocessing, the class names, the tensors (in file order and
// layout) and the int8 calibration, but not the provenance, whose timestamps would give every
// retraining a new id.
func (m *Model) ContentID() string {
	h := sha256.New()
	h.Write([]byte("ninbatch model v1\n"))
	classes := m.Classes
	if classes == nil {
		classes = []string{}
	}
	for _, v := range []any{m.Spec, m.Preprocess, classes} {
		b, _ := json.Marshal(v) // plain structs: cannot fail
		h.Write(append(b, '\n'))
	}
	bw := bufio.NewWriterSize(h, 1<<16)
	var buf []float32
	var b4 [4]byte
	for _, c := range m.Params.Convs {
		buf = slices.Grow(buf[:0], len(c.W))[:len(c.W)]
		c.toFileLayout(buf)
		for _, vs := range [][]float32{buf, c.B} {
			for _, v := range vs {
				binary.LittleEndian.PutUint32(b4[:], math.Float32bits(v))
				bw.Write(b4[:])
			}
		}
	}
	bw.Flush()
	if m.Quant != nil { // the int8 scores depend on it; without one the id is as before
		b, _ := json.Marshal(m.Quant)
		h.Write([]byte("quant "))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Preprocess says how an image becomes the network's input tensor. One
// implementation (package io) serves run, eval and train.
type Preprocess struct {
	// Resize is "exact" (resize to the input H×W), "shorter" (shorter side
	// to ResizeTo, then a center crop to H×W) or "none" (images must
	// already be H×W).
	Resize   string    `json:"resize"`
	ResizeTo int       `json:"resize_to,omitempty"`
	Color    string    `json:"color"` // "gray" or "rgb", must match the input channels
	Scale    float64   `json:"scale"` // pixel value 0..255 × Scale
	Mean     []float64 `json:"mean,omitempty"`
	Std      []float64 `json:"std,omitempty"` // per channel: (x·Scale − Mean) / Std
}

// Provenance records where a model came from.
type Provenance struct {
	Created            string             `json:"created,omitempty"` // RFC 3339
	NinbatchVersion    string             `json:"ninbatch_version,omitempty"`
	Command            string             `json:"command,omitempty"`
	Init               string             `json:"init,omitempty"` // how the weights started, "gaussian seed=1"
	Dataset            string             `json:"dataset,omitempty"`
	DatasetFingerprint string             `json:"dataset_fingerprint,omitempty"`
	Epochs             int                `json:"epochs,omitempty"`
	TrainingSeconds    float64            `json:"training_seconds,omitempty"`
	Metrics            map[string]float64 `json:"metrics,omitempty"`
	// Source and SourceSHA256 name the file an imported model came from
	// ("onnx model.onnx", "safetensors nin.safetensors") and its hex sha256.
	Source       string `json:"source,omitempty"`
	SourceSHA256 string `json:"source_sha256,omitempty"`
}

// DefaultPreprocess is the preprocessing a preset's model gets at init.
func DefaultPreprocess(s *Spec) Preprocess {
	switch {
	case s.Name == "nin-imagenet":
		// Caffe ImageNet mean (RGB order, 0..255 scale), no std.
		return Preprocess{Resize: "shorter", ResizeTo: 256, Color: "rgb", Scale: 1,
			Mean: []float64{123.68, 116.78, 103.94}, Std: []float64{1, 1, 1}}
	case s.Input.C == 1:
		// MNIST statistics: zero-mean, unit-variance input.
		return Preprocess{Resize: "exact", Color: "gray", Scale: 1.0 / 255, Mean: []float64{0.1307}, Std: []float64{0.3081}}
	default:
		// CIFAR-10 channel statistics.
		return Preprocess{Resize: "exact", Color: "rgb", Scale: 1.0 / 255,
			Mean: []float64{0.4914, 0.4822, 0.4465}, Std: []float64{0.2470, 0.2435, 0.2616}}
	}
}

// Validate checks preprocessing against the spec's input.
func (p *Preprocess) Validate(s *Spec) error {
	switch p.Resize {
	case "exact", "none":
	case "shorter":
		if p.ResizeTo < min(s.Input.H, s.Input.W) || p.ResizeTo > maxSide {
			return fmt.Errorf("preprocess: resize_to %d must be in %d..%d", p.ResizeTo, min(s.Input.H, s.Input.W), maxSide)
		}
	default:
		return fmt.Errorf("preprocess: resize %q: want exact, shorter or none", p.Resize)
	}
	want := map[int]string{1: "gray", 3: "rgb"}[s.Input.C]
	if p.Color != want {
		return fmt.Errorf("preprocess: color %q does not match %d input channels (want %q)", p.Color, s.Input.C, want)
	}
	if !(p.Scale > 0 && p.Scale < 1e6) {
		return fmt.Errorf("preprocess: scale %g must be positive", p.Scale)
	}
	if p.Mean != nil && len(p.Mean) != s.Input.C || p.Std != nil && len(p.Std) != s.Input.C {
		return fmt.Errorf("preprocess: mean/std need %d entries", s.Input.C)
	}
	for _, v := range p.Std {
		if !(v > 0) {
			return fmt.Errorf("preprocess: std %g must be positive", v)
		}
	}
	for _, v := range p.Mean {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("preprocess: mean %g is not finite", v)
		}
	}
	return nil
}

// NewModel returns a model of the spec with zeroed weights and the default
// preprocessing.
func NewModel(s *Spec) (*Model, error) {
	p, err := NewParams(s)
	if err != nil {
		return nil, err
	}
	return &Model{Spec: *s, Preprocess: DefaultPreprocess(s), Params: p}, nil
}
