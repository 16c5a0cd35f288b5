package native

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ninbatch/ninbatch/native/nativeref"
)

// TestGemmPackedConformance compares every build of the packed GEMM this
// CPU runs (AVX-512, AVX2, the scalar baseline) with the float64 reference
// over a grid of shapes: m across the 6- and 12-row blocks (1, 5, 6, 7,
// 12, 13, 25, 49), n across the 16-column panels and 32-column pairs (1,
// 10, 16, 17, 31, 33, 48), k from 1 to past the unrolls,
// column ranges starting on later panels, padded leading dimensions, with
// and without bias and ReLU, and both packing layouts.
func TestGemmPackedConformance(t *testing.T) {
	type shape = struct{ m, n, k int }
	var shapes []shape
	for _, m := range []int{1, 5, 6, 7, 12, 13, 25, 49} {
		for _, n := range []int{1, 10, 16, 17, 31, 33, 48} {
			for _, k := range []int{1, 3, 4, 9, 64} {
				shapes = append(shapes, shape{m, n, k})
			}
		}
	}
	// rows in several L2 blocks (128 KiB of A: 42 rows at k = 700), the
	// last one partial, and blocks that end mid micro-kernel
	shapes = append(shapes, shape{61, 17, 700}, shape{130, 33, 700}, shape{1100, 16, 30})
	t.Run("default", func(t *testing.T) { gemmPackedGrid(t, shapes) })
	// K over 512 in blocks through C whatever the size of B (by default
	// only when B is over 4 MiB): two blocks at k = 700
	old := setGemmStreamBytes(0)
	defer setGemmStreamBytes(old)
	t.Run("kblocks", func(t *testing.T) { gemmPackedGrid(t, shapes) })
}

func gemmPackedGrid(t *testing.T, shapes []struct{ m, n, k int }) {
	r := rand.New(rand.NewPCG(7, 1))
	builds := Levels()
	for _, sh := range shapes {
		m, n, k := sh.m, sh.n, sh.k
		for _, cr := range [][2]int{{0, n}, {16, n}, {0, min(n, 16)}, {16, min(n, 32)}} {
			j0, j1 := cr[0], cr[1]
			if j0 > n || j1 < j0 {
				continue
			}
			for v := 0; v < 4; v++ {
				trans, relu, withBias := v&1 == 1, v&2 == 2, (m+n+k+v)%3 != 0
				lda, ldc := k+(v%3)*3, (j1-j0)+v*5
				a := randSlice(r, m*lda)
				b := randSlice(r, k*n) // (k, n) plain
				src, ldb := b, n
				if trans { // the same B stored (n, k) with a padded stride
					ldb = k + 2
					src = make([]float32, n*ldb)
					for p := 0; p < k; p++ {
						for j := 0; j < n; j++ {
							src[j*ldb+p] = b[p*n+j]
						}
					}
				}
				var bias []float32
				if withBias {
					bias = randSlice(r, j1-j0)
				}
				bp := make([]float32, PackLen(k, n))
				PackB(bp, src, k, n, ldb, trans)
				want := make([]float32, max(1, m*ldc))
				nativeref.Gemm(want, ldc, a, lda, b, k, n, j0, j1, m, bias, relu)
				for _, isa := range builds {
					got := make([]float32, len(want))
					for i := range got {
						got[i] = float32(math.NaN()) // untouched padding must stay as it was
					}
					old, _ := SetISA(isa)
					gemmPacked(got, ldc, a, lda, bp, k, n, j0, j1, m, bias, relu, false)
					SetISA(old)
					name := fmt.Sprintf("m%d n%d k%d cols[%d,%d) lda%d ldc%d trans=%v relu=%v bias=%v isa=%v",
						m, n, k, j0, j1, lda, ldc, trans, relu, withBias, isa)
					for i := 0; i < m; i++ {
						for j := 0; j < ldc; j++ {
							g, w := got[i*ldc+j], want[i*ldc+j]
							if j >= j1-j0 {
								if !math.IsNaN(float64(g)) {
									t.Fatalf("%s: wrote c[%d,%d] past the column range", name, i, j)
								}
								continue
							}
							if d := math.Abs(float64(g - w)); !(d <= 1e-5*math.Max(1, math.Abs(float64(w)))*math.Sqrt(float64(k))) {
								t.Fatalf("%s: c[%d,%d] = %g, want %g", name, i, j, g, w)
							}
						}
					}
				}
			}
		}
	}
}

func TestGemmPackedValidation(t *testing.T) {
	bp := make([]float32, PackLen(4, 20))
	a, c := make([]float32, 3*4), make([]float32, 3*20)
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"column range off a panel", func() { GemmPacked(c, 20, a, 4, bp, 4, 20, 8, 20, 3, nil, false) }},
		{"column range past n", func() { GemmPacked(c, 20, a, 4, bp, 4, 20, 0, 21, 3, nil, false) }},
		{"short a", func() { GemmPacked(c, 20, a, 4, bp, 4, 20, 0, 20, 4, nil, false) }},
		{"short c", func() { GemmPacked(c[:50], 20, a, 4, bp, 4, 20, 0, 20, 3, nil, false) }},
		{"short packed", func() { GemmPacked(c, 20, a, 4, bp[:10], 4, 20, 0, 20, 3, nil, false) }},
		{"short bias", func() { GemmPacked(c, 20, a, 4, bp, 4, 20, 0, 20, 3, make([]float32, 19), false) }},
		{"lda < k", func() { GemmPacked(c, 20, a, 3, bp, 4, 20, 0, 20, 3, nil, false) }},
		{"short pack source", func() { PackB(bp, make([]float32, 79), 4, 20, 20, false) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tc.name)
				}
			}()
			tc.f()
		}()
	}
}

// TestGemmAtBConformance compares every build of the weight-gradient GEMM
// this CPU runs with a float64 reference: m across the 12-row blocks, n
// across the 16-column vectors and 32-column pairs (masked tails), rows
// across the row chunks (and with the chunk forced to 5 rows), padded
// leading dimensions, and a C that already holds a sum (it accumulates).
func TestGemmAtBConformance(t *testing.T) {
	t.Run("default", gemmAtBGrid)
	old := setGemmAtBRows(5)
	defer setGemmAtBRows(old)
	t.Run("chunk5", gemmAtBGrid)
}

func gemmAtBGrid(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 2))
	for _, m := range []int{1, 5, 11, 12, 13, 25, 96} {
		for _, n := range []int{1, 10, 16, 17, 31, 32, 33, 75} {
			for _, rows := range []int{1, 3, 191, 193, 400} {
				v := m + n + rows
				lda, ldb, ldc := m+v%3, n+(v/3)%3*5, n+v%4
				a, b := randSlice(r, rows*lda), randSlice(r, rows*ldb)
				c0 := randSlice(r, m*ldc)
				want := make([]float64, len(c0))
				for i := range m {
					for j := range ldc {
						want[i*ldc+j] = float64(c0[i*ldc+j])
						if j >= n {
							c0[i*ldc+j] = float32(math.NaN()) // padding: must stay untouched
							continue
						}
						for p := range rows {
							want[i*ldc+j] += float64(a[p*lda+i]) * float64(b[p*ldb+j])
						}
					}
				}
				for _, isa := range Levels() {
					got := append([]float32(nil), c0...)
					old, _ := SetISA(isa)
					gemmAtB(got, ldc, a, lda, b, ldb, m, n, rows, false)
					SetISA(old)
					name := fmt.Sprintf("m%d n%d rows%d lda%d ldb%d ldc%d isa=%v", m, n, rows, lda, ldb, ldc, isa)
					for i := range m {
						for j := range ldc {
							g, w := got[i*ldc+j], want[i*ldc+j]
							if j >= n {
								if !math.IsNaN(float64(g)) {
									t.Fatalf("%s: wrote c[%d,%d] past n", name, i, j)
								}
								continue
							}
							if d := math.Abs(float64(g) - w); !(d <= 1e-5*math.Max(1, math.Abs(w))*math.Sqrt(float64(rows))) {
								t.Fatalf("%s: c[%d,%d] = %g, want %g", name, i, j, g, w)
							}
						}
					}
				}
			}
		}
	}
}

func TestGemmAtBValidation(t *testing.T) {
	a, b, c := make([]float32, 3*4), make([]float32, 3*5), make([]float32, 4*5)
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"short a", func() { GemmAtB(c, 5, a, 4, b, 5, 4, 5, 4) }},
		{"short c", func() { GemmAtB(c[:19], 5, a, 4, b, 5, 4, 5, 3) }},
		{"lda < m", func() { GemmAtB(c, 5, a, 3, b, 5, 4, 5, 3) }},
		{"ldc < n", func() { GemmAtB(c, 4, a, 4, b, 5, 4, 5, 3) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tc.name)
				}
			}()
			tc.f()
		}()
	}
}
