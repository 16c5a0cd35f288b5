//go:build purego

package blas

import (
	gblas "gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// Impl is the BLAS implementation behind Sgemm: gonum's pure Go code.
var Impl gblas.Float32 = gonum.Implementation{}

// Backend names the implementation behind Impl.
const Backend = "gonum (purego)"

// SetThreads is a no-op in the pure-Go build (gonum parallelises internally).
func SetThreads(n int) {}

// Threads reports 1 in the pure-Go build.
func Threads() int { return 1 }

// Config describes the pure-Go build.
func Config() string { return "gonum pure Go" }

// CoreName describes the pure-Go build.
func CoreName() string { return "go" }
