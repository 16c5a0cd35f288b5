// Package pipeline ties the data layer (package io) to the network
// (package nin): preprocessing translation, training and evaluation loops,
// and the streaming scoring pipeline behind `ninbatch run`.
package pipeline

import (
	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

// PreprocessFor translates a model's preprocessing into the data layer's.
func PreprocessFor(m *nin.Model) *nbio.Preprocess {
	p := &nbio.Preprocess{
		H: m.Spec.Input.H, W: m.Spec.Input.W, C: m.Spec.Input.C,
		Resize: m.Preprocess.Resize, ResizeTo: m.Preprocess.ResizeTo, Scale: float32(m.Preprocess.Scale),
	}
	for _, v := range m.Preprocess.Mean {
		p.Mean = append(p.Mean, float32(v))
	}
	for _, v := range m.Preprocess.Std {
		p.Std = append(p.Std, float32(v))
	}
	return p
}
