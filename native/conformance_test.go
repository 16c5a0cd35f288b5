package native

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ninbatch/ninbatch/internal/testutil"

	"github.com/ninbatch/ninbatch/native/nativeref"
)

func ref(g Geom) nativeref.Geom { return nativeref.Geom(g) }

var randSlice = testutil.RandSlice

// closeTo reports whether got matches want to a relative tolerance with a
// floor of 1 (Caffe's rule), and where it does not.
func closeTo(got, want []float32, tol float64) (int, bool) {
	for i := range want {
		scale := math.Max(1, math.Abs(float64(want[i])))
		if !(math.Abs(float64(got[i])-float64(want[i])) <= tol*scale) {
			return i, false
		}
	}
	return -1, true
}

// windowGrid is the shape grid: NIN's real windows (kernels 1, 3, 5, 11;
// strides 1, 2, 4; pads 0, 1, 2) over sizes including 1, odd and even
// images, channel counts 1, 3 and odd, and pooling windows hanging over the
// edge (ceil rounding).
func windowGrid(pool bool) []Geom {
	var gs []Geom
	for _, n := range []int{1, 3} {
		for _, hw := range [][2]int{{1, 1}, {2, 3}, {5, 5}, {7, 6}, {8, 8}, {13, 13}, {14, 14}, {28, 28}} {
			for _, c := range []int{1, 3, 7, 16} {
				for _, k := range []int{1, 2, 3, 5, 11} {
					for _, s := range []int{1, 2, 4} {
						for _, p := range []int{0, 1, 2} {
							if p >= k {
								continue
							}
							oh := OutSize(hw[0], k, s, p, pool)
							ow := OutSize(hw[1], k, s, p, pool)
							if oh < 1 || ow < 1 {
								continue
							}
							g := Geom{N: n, H: hw[0], W: hw[1], C: c, K: k, S: s, P: p, OH: oh, OW: ow}
							if (g.OH-1)*g.S-g.P >= g.H || (g.OW-1)*g.S-g.P >= g.W {
								continue
							}
							gs = append(gs, g)
						}
					}
				}
			}
		}
	}
	return gs
}

func TestOutSize(t *testing.T) {
	cases := []struct {
		in, k, s, p, want int
		ceil              bool
	}{
		{32, 3, 2, 0, 16, true}, {16, 3, 2, 0, 8, true}, {54, 3, 2, 0, 27, true}, {27, 3, 2, 0, 13, true},
		{13, 3, 2, 0, 6, true}, {28, 3, 2, 0, 14, true}, {14, 3, 2, 0, 7, true},
		{32, 3, 2, 0, 15, false}, {224, 11, 4, 0, 54, false}, {32, 5, 1, 2, 32, false},
		{3, 2, 2, 1, 2, true}, // ceil gives 3, but the third window starts in the bottom padding: dropped
		{2, 3, 1, 0, 0, false},
	}
	for _, c := range cases {
		if got := OutSize(c.in, c.k, c.s, c.p, c.ceil); got != c.want {
			t.Errorf("OutSize(%d,%d,%d,%d,ceil=%v) = %d, want %d", c.in, c.k, c.s, c.p, c.ceil, got, c.want)
		}
	}
}

func TestIm2colConformance(t *testing.T) { eachISA(t, testIm2colConformance) }

func testIm2colConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, g := range windowGrid(false) {
		in := randSlice(r, g.InLen())
		in0 := slices.Clone(in)
		rows := g.Rows()
		// whole matrix, and an odd tile from the middle
		for _, rg := range [][2]int{{0, rows}, {rows / 3, (rows + 1) / 2}} {
			r0, nr := rg[0], rg[1]-rg[0]
			got := randSlice(r, nr*g.Cols()+5)
			want := slices.Clone(got)
			Im2col(got, in, g, r0, nr)
			nativeref.Im2col(want, in, ref(g), r0, nr)
			if !slices.Equal(got, want) {
				t.Fatalf("im2col %+v rows [%d,+%d): differs from reference", g, r0, nr)
			}
		}
		if !slices.Equal(in, in0) {
			t.Fatalf("im2col %+v modified its input", g)
		}
	}
}

func TestCol2imConformance(t *testing.T) { eachISA(t, testCol2imConformance) }

func testCol2imConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, g := range windowGrid(false) {
		rows := g.Rows()
		col := randSlice(r, rows*g.Cols())
		col0 := slices.Clone(col)
		got := randSlice(r, g.InLen())
		want := slices.Clone(got)
		Col2im(got, col, g, 0, rows/2)
		Col2im(got, col[rows/2*g.Cols():], g, rows/2, rows-rows/2)
		nativeref.Col2im(want, col, ref(g), 0, rows)
		if i, ok := closeTo(got, want, 1e-5); !ok {
			t.Fatalf("col2im %+v: din[%d] = %g, want %g", g, i, got[i], want[i])
		}
		if !slices.Equal(col, col0) {
			t.Fatalf("col2im %+v modified col", g)
		}
	}
}

// TestCol2imAdjoint checks <im2col(x), y> == <x, col2im(y)>, the property
// the conv backward pass relies on.
func TestCol2imAdjoint(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, g := range windowGrid(false)[:200] {
		x := randSlice(r, g.InLen())
		y := randSlice(r, g.Rows()*g.Cols())
		cx := make([]float32, len(y))
		Im2col(cx, x, g, 0, g.Rows())
		dx := make([]float32, len(x))
		Col2im(dx, y, g, 0, g.Rows())
		var a, b float64
		for i := range y {
			a += float64(cx[i]) * float64(y[i])
		}
		for i := range x {
			b += float64(x[i]) * float64(dx[i])
		}
		if math.Abs(a-b) > 1e-4*math.Max(1, math.Abs(a)) {
			t.Fatalf("%+v: <im2col x, y> = %g, <x, col2im y> = %g", g, a, b)
		}
	}
}

// TestMaxPoolArgmaxTies: the argmax kernel (8 channels per vector, then a
// scalar tail) keeps the reference's first-in-window choice when values tie,
// with channel counts that mix the vector body and the tail.
func TestMaxPoolArgmaxTies(t *testing.T) { eachISA(t, testMaxPoolArgmaxTies) }

func testMaxPoolArgmaxTies(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, c := range []int{8, 19, 96} {
		for _, p := range []int{0, 1} {
			g := Geom{N: 2, H: 7, W: 6, C: c, K: 3, S: 2, P: p, OH: OutSize(7, 3, 2, p, true), OW: OutSize(6, 3, 2, p, true)}
			in := make([]float32, g.InLen())
			for i := range in {
				in[i] = float32(r.IntN(3)) / 2 // 0, 0.5, 1: many ties
			}
			got, want := make([]float32, g.PoolOutLen()), make([]float32, g.PoolOutLen())
			gotArg, wantArg := make([]int32, g.PoolOutLen()), make([]int32, g.PoolOutLen())
			MaxPool(got, gotArg, in, g)
			nativeref.MaxPool(want, wantArg, in, ref(g))
			if !slices.Equal(got, want) || !slices.Equal(gotArg, wantArg) {
				t.Fatalf("maxpool %+v with ties: differs from the reference", g)
			}
		}
	}
}

func TestPoolConformance(t *testing.T) { eachISA(t, testPoolConformance) }

func testPoolConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, ceil := range []bool{true, false} {
		var grid []Geom
		for i, g := range windowGrid(ceil) {
			grid = append(grid, g)
			if i%6 == 0 {
				// NIN's channel counts: full 64-channel blocks of the
				// register-accumulating kernels and a tail
				g.C = 70 + 64*(i%12/6)
				grid = append(grid, g)
			}
		}
		for _, g := range grid {
			name := fmt.Sprintf("ceil=%v %+v", ceil, g)
			in := randSlice(r, g.InLen())
			in0 := slices.Clone(in)
			got, want := make([]float32, g.PoolOutLen()), make([]float32, g.PoolOutLen())
			gotArg, wantArg := make([]int32, g.PoolOutLen()), make([]int32, g.PoolOutLen())
			MaxPool(got, gotArg, in, g)
			nativeref.MaxPool(want, wantArg, in, ref(g))
			if !slices.Equal(got, want) || !slices.Equal(gotArg, wantArg) {
				t.Fatalf("maxpool %s: differs from reference", name)
			}
			got2 := make([]float32, g.PoolOutLen())
			MaxPool(got2, nil, in, g)
			if !slices.Equal(got2, want) {
				t.Fatalf("maxpool %s without argmax differs", name)
			}
			AvePool(got, in, g)
			nativeref.AvePool(want, in, ref(g))
			if i, ok := closeTo(got, want, 1e-6); !ok {
				t.Fatalf("avepool %s: out[%d] = %g, want %g", name, i, got[i], want[i])
			}
			if !slices.Equal(in, in0) {
				t.Fatalf("pool %s modified its input", name)
			}
		}
	}
}

// TestAvePoolCaffeBorder pins the Caffe divisor on a hand-worked case:
// 4×4 input, 3×3/2 ceil windows → 2×2 output; the bottom-right window is
// 2×2 in bounds and divides by 4, not 9.
func TestAvePoolCaffeBorder(t *testing.T) { eachISA(t, testAvePoolCaffeBorder) }

func testAvePoolCaffeBorder(t *testing.T) {
	in := make([]float32, 16)
	for i := range in {
		in[i] = float32(i)
	}
	g := Geom{N: 1, H: 4, W: 4, C: 1, K: 3, S: 2, OH: OutSize(4, 3, 2, 0, true), OW: OutSize(4, 3, 2, 0, true)}
	out := make([]float32, g.PoolOutLen())
	AvePool(out, in, g)
	want := []float32{5, 6.5, 11, 12.5} // (0+1+2+4+5+6+8+9+10)/9, (2+3+6+7+10+11)/6, ..., (10+11+14+15)/4
	if !slices.Equal(out, want) {
		t.Fatalf("avepool = %v, want %v", out, want)
	}
}

func TestBiasActConformance(t *testing.T) { eachISA(t, testBiasActConformance) }

func testBiasActConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, rows := range []int{0, 1, 7, 64} {
		for _, c := range []int{1, 3, 10, 192} {
			for _, relu := range []bool{true, false} {
				// ld > c: a column slice; the other columns must stay as they are
				for _, ld := range []int{c, c + 5} {
					x, b := randSlice(r, rows*ld), randSlice(r, c)
					want := slices.Clone(x)
					BiasAct(x, rows, c, ld, b, relu)
					nativeref.BiasAct(want, rows, c, ld, b, relu)
					if !slices.Equal(x, want) {
						t.Fatalf("bias_act rows=%d c=%d ld=%d relu=%v differs", rows, c, ld, relu)
					}
				}
			}
		}
	}
}

func TestGAPSoftmaxConformance(t *testing.T) { eachISA(t, testGAPSoftmaxConformance) }

func testGAPSoftmaxConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for _, n := range []int{0, 1, 3} {
		for _, hw := range []int{1, 7, 49, 64} {
			for _, c := range []int{1, 10, 1000} {
				in := randSlice(r, n*hw*c)
				got, want := make([]float32, n*c), make([]float32, n*c)
				GAP(got, in, n, hw, c)
				nativeref.GAP(want, in, n, hw, c)
				if i, ok := closeTo(got, want, 1e-5); !ok {
					t.Fatalf("gap n=%d hw=%d c=%d: [%d] = %g, want %g", n, hw, c, i, got[i], want[i])
				}
				for i := range got { // large logits: stability
					got[i] *= 40
				}
				sm, smWant := make([]float32, n*c), make([]float32, n*c)
				Softmax(sm, got, n, c)
				nativeref.Softmax(smWant, got, n, c)
				if i, ok := closeTo(sm, smWant, 1e-6); !ok {
					t.Fatalf("softmax n=%d c=%d: [%d] = %g, want %g", n, c, i, sm[i], smWant[i])
				}
				Softmax(got, got, n, c) // aliasing allowed
				if !slices.Equal(got, sm) {
					t.Fatalf("softmax in place differs")
				}
			}
		}
	}
}

func TestSoftmaxExtremes(t *testing.T) { eachISA(t, testSoftmaxExtremes) }

func testSoftmaxExtremes(t *testing.T) {
	in := []float32{1e30, -1e30, 0, 88, 89, 1000}
	out := make([]float32, 6)
	Softmax(out, in, 2, 3)
	for i, v := range out {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("softmax(%v)[%d] = %v", in, i, v)
		}
	}
	if out[0] != 1 || out[5] != 1 {
		t.Fatalf("softmax extremes = %v", out)
	}
}

func TestValidationPanics(t *testing.T) {
	g := Geom{N: 1, H: 4, W: 4, C: 2, K: 3, S: 1, P: 1, OH: 4, OW: 4}
	cases := map[string]func(){
		"short in":  func() { Im2col(make([]float32, 1000), make([]float32, 3), g, 0, 1) },
		"short col": func() { Im2col(make([]float32, 3), make([]float32, 32), g, 0, 1) },
		"bad rows":  func() { Im2col(make([]float32, 1000), make([]float32, 32), g, 10, 10) },
		"bad pad":   func() { g2 := g; g2.P = 3; Im2col(make([]float32, 1000), make([]float32, 32), g2, 0, 1) },
		"outside":   func() { g2 := g; g2.OH = 9; MaxPool(make([]float32, 1000), nil, make([]float32, 32), g2) },
		"short out": func() { AvePool(make([]float32, 1), make([]float32, 32), g) },
		"short arg": func() { MaxPool(make([]float32, 32), make([]int32, 1), make([]float32, 32), g) },
		"bias":      func() { BiasAct(make([]float32, 8), 4, 2, 2, make([]float32, 1), true) },
		"bias ld":   func() { BiasAct(make([]float32, 8), 4, 2, 1, make([]float32, 2), true) },
	}
	for name, f := range cases {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
