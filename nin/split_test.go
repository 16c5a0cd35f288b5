package nin

import (
	"math"
	"testing"

	"github.com/ninbatch/ninbatch/native"
)

// Tuning.Wait forces either wait; auto spins for small nets only.
func TestWaitChoice(t *testing.T) {
	for _, c := range []struct {
		preset, wait string
		spin         bool
	}{
		{"nin-mnist", "", true}, {"nin-cifar10", "", false}, {"nin-mnist", "park", false}, {"nin-cifar10", "spin", true}, {"nin-cifar10", "auto", false},
	} {
		net, err := NewNet(randomModel(t, c.preset, 1), Options{MaxBatch: 1, Threads: 2, Tuning: Tuning{Wait: c.wait}})
		if err != nil {
			t.Fatal(err)
		}
		if net.spin != c.spin || (net.Options().Wait == "spin") != c.spin {
			t.Errorf("%s wait %q: spinning %v (options %q), want %v", c.preset, c.wait, net.spin, net.Options().Wait, c.spin)
		}
		net.Close()
	}
	if _, err := ParseTuning(`{"wait":"poll"}`); err == nil {
		t.Error(`wait "poll" accepted`)
	}
}

// A batch-1 Forward split over 2 threads allocates nothing, spinning or not.
func TestSplitForwardAllocatesNothing(t *testing.T) {
	m := randomModel(t, "nin-mnist", 1)
	for _, wait := range []string{"spin", "park"} {
		net, err := NewNet(m, Options{MaxBatch: 1, Threads: 2, Tuning: Tuning{Wait: wait}})
		if err != nil {
			t.Fatal(err)
		}
		x := randomInput(1, net.InputLen(), 2)
		probs := make([]float32, net.Classes())
		if a := testing.AllocsPerRun(20, func() { net.Forward(x, 1, probs, nil) }); a != 0 {
			t.Errorf("wait %s: %v allocations per Forward", wait, a)
		}
		net.Close()
	}
}

// A pooling layer split by output rows over any number of parts writes
// exactly what the whole call writes: odd and even sizes, Caffe's
// overhanging last window, stride 1 and 2, parts beyond the rows, padding
// (pooled whole by part 0), several images.
func TestPoolPartsMatchWhole(t *testing.T) {
	for _, c := range []struct{ h, w, k, s, p int }{
		{13, 13, 3, 2, 0}, {54, 54, 3, 2, 0}, {27, 27, 3, 2, 0}, {6, 5, 3, 2, 0},
		{4, 4, 3, 2, 0}, {3, 3, 3, 2, 0}, {8, 7, 2, 2, 0}, {9, 9, 3, 1, 0}, {7, 7, 3, 2, 1}, {1, 1, 1, 1, 0},
	} {
		for _, max := range []bool{true, false} {
			for _, n := range []int{1, 2} {
				g := native.Geom{N: n, H: c.h, W: c.w, C: 19, K: c.k, S: c.s, P: c.p,
					OH: native.OutSize(c.h, c.k, c.s, c.p, true), OW: native.OutSize(c.w, c.k, c.s, c.p, true)}
				o := &poolOp{g: g, max: max}
				src := randomInput(n, c.h*c.w*g.C, 7)
				want := make([]float32, g.PoolOutLen())
				o.forward(nil, want, src, n)
				for parts := 1; parts <= 5; parts++ {
					got := make([]float32, len(want))
					for i := range got {
						got[i] = float32(math.NaN())
					}
					for p := 0; p < parts; p++ {
						o.forwardPart(nil, got, src, n, p, parts)
					}
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%+v max=%v n=%d parts=%d: out[%d] = %v, want %v", c, max, n, parts, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}
