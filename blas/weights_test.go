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

// TestWeightsInt8 checks int8 Weights against the definition of what they
// compute, in float64 from the quantised operands: act(sa·sw[j]·Σ
// qa·qb + bias) with qa = clamp(round(a/sa), 0, 255) and qb the rounded
// weights, over both source layouts, later column ranges and tails; and
// that the quantisation itself moves the product by no more than its
// steps allow.
func TestWeightsInt8(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, m := range []int{1, 5, 33} {
		for _, n := range []int{1, 17, 40} {
			for _, k := range []int{1, 9, 70} {
				for _, tz := range []int{0, 1, 2, 3} {
					trans, zp := tz%2 == 1, 128*(tz/2) // zp 128: a signed input
					ldb := n + 2
					rows := k
					if trans {
						ldb, rows = k+1, n
					}
					b := randSlice(r, rows*ldb)
					sw := make([]float32, n)
					for j := range sw {
						col := make([]float32, k)
						for p := range col {
							if trans {
								col[p] = b[j*ldb+p]
							} else {
								col[p] = b[p*ldb+j]
							}
						}
						sw[j] = WeightScale(col)
					}
					a := make([]float32, m*k)
					for i := range a {
						a[i] = max(0, r.Float32()*1.2-0.2) // post-ReLU: zeros and positives, below the clip at 255·sa = 1
						if zp != 0 {
							a[i] = r.Float32() - 0.5 // signed, within −zp·sa .. (255−zp)·sa
						}
					}
					const sa = float32(1.0 / 255)
					w := NewWeightsInt8(k, n, sa, zp, sw)
					w.Load(b, ldb, trans)
					j0 := 0
					if n > 16 {
						j0 = 16
					}
					nc := n - j0
					bias := randSlice(r, nc)
					c := randSlice(r, m*nc)
					w.Mul(c, nc, a, k, m, j0, n, bias, true)
					for i := 0; i < m; i++ {
						for j := j0; j < n; j++ {
							var s, exact float64
							for p := 0; p < k; p++ {
								var bv float32
								if trans {
									bv = b[j*ldb+p]
								} else {
									bv = b[p*ldb+j]
								}
								qa := math.RoundToEven(math.Min(float64(a[i*k+p]/sa), float64(255-zp)))
								s += qa * float64(QuantizeWeight(bv, sw[j])) // (q − zp)·w: the zero point cancels
								exact += float64(a[i*k+p]) * float64(bv)
							}
							want := math.Max(0, float64(sa)*float64(sw[j])*s+float64(bias[j-j0]))
							got := float64(c[i*nc+j-j0])
							if math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
								t.Fatalf("m%d n%d k%d t%v: c[%d][%d] = %g, want %g", m, n, k, trans, i, j, got, want)
							}
							// each product is off by at most half a step of each operand
							bound := float64(k) * (0.5*float64(sa)*float64(127*sw[j]) + 0.5*float64(sw[j]) + 0.25*float64(sa*sw[j]))
							if ex := math.Max(0, exact+float64(bias[j-j0])); math.Abs(got-ex) > bound+1e-6 {
								t.Fatalf("m%d n%d k%d: c[%d][%d] = %g, float result %g: off by more than %g", m, n, k, i, j, got, ex, bound)
							}
						}
					}
				}
			}
		}
	}
}
