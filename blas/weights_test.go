package blas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ninbatch/ninbatch/native"
)

// TestWeightsConformance checks both kinds of Weights (packed, on every
// instruction set this CPU runs, and OpenBLAS) against the float64
// definition over a grid of shapes: m and n around the kernel's blocks and
// panels, both source layouts, padded leading dimensions, column ranges
// starting on later panels, with and without bias and ReLU, and a reload
// after the source changed.
func TestWeightsConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	kinds := []struct {
		name   string
		packed bool
		isa    native.ISA
	}{{"openblas", false, native.Current()}}
	for _, isa := range native.Levels() {
		kinds = append(kinds, struct {
			name   string
			packed bool
			isa    native.ISA
		}{"packed-" + isa.String(), true, isa})
	}
	for _, kd := range kinds {
		old, err := native.SetISA(kd.isa)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []int{1, 5, 13, 49} {
			for _, n := range []int{1, 10, 16, 17, 33} {
				for _, k := range []int{1, 7, 48} {
					for _, trans := range []bool{false, true} {
						for _, j0 := range []int{0, 16} {
							if j0 >= n {
								continue
							}
							for _, epi := range []int{0, 1, 2} { // none, bias, bias+ReLU
								name := fmt.Sprintf("%s/m%d-n%d-k%d-t%v-j%d-e%d", kd.name, m, n, k, trans, j0, epi)
								checkWeights(t, r, name, kd.packed, m, n, k, trans, j0, epi)
							}
						}
					}
				}
			}
		}
		native.SetISA(old)
	}
}

func checkWeights(t *testing.T, r *rand.Rand, name string, packed bool, m, n, k int, trans bool, j0, epi int) {
	ldb, lda := n+3, k+2
	if trans {
		ldb = k + 1
	}
	rows := k
	if trans {
		rows = n
	}
	b := randSlice(r, rows*ldb)
	w := NewWeights(k, n, packed)
	w.Load(randSlice(r, rows*ldb), ldb, trans) // replaced below: Load again must take the new source
	w.Load(b, ldb, trans)
	a := randSlice(r, m*lda)
	j1 := n
	nc := j1 - j0
	ldc := nc + 5
	c := randSlice(r, m*ldc) // garbage: Mul overwrites
	var bias []float32
	if epi > 0 {
		bias = randSlice(r, nc)
	}
	w.Mul(c, ldc, a, lda, m, j0, j1, bias, epi == 2)
	for i := 0; i < m; i++ {
		for j := j0; j < j1; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var bv float32
				if trans {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(a[i*lda+p]) * float64(bv)
			}
			if bias != nil {
				s += float64(bias[j-j0])
			}
			if epi == 2 {
				s = math.Max(s, 0)
			}
			got := float64(c[i*ldc+j-j0])
			if math.Abs(got-s) > 1e-5*(1+math.Abs(s))*math.Sqrt(float64(k)) {
				t.Fatalf("%s: c[%d][%d] = %g, want %g", name, i, j, got, s)
			}
		}
	}
}
