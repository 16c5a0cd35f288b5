package native

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ninbatch/ninbatch/native/nativeref"
)

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

func TestPoolBackwardConformance(t *testing.T) { eachISA(t, testPoolBackwardConformance) }

func testPoolBackwardConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, ceil := range []bool{true, false} {
		for i, g := range windowGrid(ceil) {
			if i%3 != 0 { // a third of the grid keeps the test fast and still covers every shape class
				continue
			}
			in := randSlice(r, g.InLen())
			out := make([]float32, g.PoolOutLen())
			arg := make([]int32, g.PoolOutLen())
			MaxPool(out, arg, in, g)
			dout := randSlice(r, g.PoolOutLen())
			got, want := randSlice(r, g.InLen()), make([]float32, g.InLen())
			copy(want, got)
			MaxPoolBackward(got, dout, arg, g)
			nativeref.MaxPoolBackward(want, dout, arg, ref(g))
			if !slices.Equal(got, want) {
				t.Fatalf("maxpool backward %+v differs", g)
			}
			copy(want, got)
			AvePoolBackward(got, dout, g)
			nativeref.AvePoolBackward(want, dout, ref(g))
			if j, ok := closeTo(got, want, 1e-5); !ok {
				t.Fatalf("avepool backward %+v: [%d] %g want %g", g, j, got[j], want[j])
			}
			// adjoint: <avepool(x), dy> == <x, avepool_bwd(dy)>
			AvePool(out, in, g)
			dx := make([]float32, g.InLen())
			AvePoolBackward(dx, dout, g)
			if a, b := dot(out, dout), dot(in, dx); math.Abs(a-b) > 1e-4*math.Max(1, math.Abs(a)) {
				t.Fatalf("avepool %+v not adjoint: %g vs %g", g, a, b)
			}
		}
	}
}

func TestBiasActBackwardConformance(t *testing.T) { eachISA(t, testBiasActBackwardConformance) }

func testBiasActBackwardConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	for _, rows := range []int{0, 1, 5, 64} {
		for _, c := range []int{1, 7, 192} {
			for _, relu := range []bool{true, false} {
				y := randSlice(r, rows*c)
				for i := range y {
					y[i] = max(y[i], 0) // a ReLU output
				}
				dy := randSlice(r, rows*c)
				db := randSlice(r, c)
				dy2, db2 := slices.Clone(dy), slices.Clone(db)
				BiasActBackward(dy, y, rows, c, db, relu)
				nativeref.BiasActBackward(dy2, y, rows, c, db2, relu)
				if !slices.Equal(dy, dy2) {
					t.Fatalf("bias_act backward dy rows=%d c=%d relu=%v", rows, c, relu)
				}
				if j, ok := closeTo(db, db2, 1e-5); !ok {
					t.Fatalf("bias_act backward db[%d] %g want %g", j, db[j], db2[j])
				}
			}
		}
	}
}

func TestGAPSoftmaxXentBackward(t *testing.T) { eachISA(t, testGAPSoftmaxXentBackward) }

func testGAPSoftmaxXentBackward(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, n := range []int{1, 3} {
		for _, c := range []int{1, 10, 1000} {
			for _, hw := range []int{1, 49} {
				dout := randSlice(r, n*c)
				got, want := make([]float32, n*hw*c), make([]float32, n*hw*c)
				GAPBackward(got, dout, n, hw, c)
				nativeref.GAPBackward(want, dout, n, hw, c)
				if j, ok := closeTo(got, want, 1e-6); !ok {
					t.Fatalf("gap backward [%d]", j)
				}
			}
			logits := randSlice(r, n*c)
			labels := make([]int32, n)
			for i := range labels {
				labels[i] = int32(r.IntN(c))
			}
			p1, d1, p2, d2 := make([]float32, n*c), make([]float32, n*c), make([]float32, n*c), make([]float32, n*c)
			l1 := SoftmaxXent(p1, d1, logits, labels, n, c, 0.5)
			l2 := nativeref.SoftmaxXent(p2, d2, logits, labels, n, c, 0.5)
			if math.Abs(l1-l2) > 1e-5*math.Max(1, l2) {
				t.Fatalf("xent loss %g want %g", l1, l2)
			}
			if j, ok := closeTo(d1, d2, 1e-6); !ok {
				t.Fatalf("xent dlogits [%d] %g want %g", j, d1[j], d2[j])
			}
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("label out of range accepted")
			}
		}()
		SoftmaxXent(make([]float32, 2), make([]float32, 2), make([]float32, 2), []int32{5}, 1, 2, 1)
	}()
}

func TestMul(t *testing.T) {
	x := []float32{1, 2, 3}
	Mul(x, []float32{0, 2, 0.5})
	if !slices.Equal(x, []float32{0, 4, 1.5}) {
		t.Fatal(x)
	}
}
