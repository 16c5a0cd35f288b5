package nin

import (
	"math"
	"runtime"
	"sync"
	"testing"

	"github.com/ninbatch/ninbatch/native"
)

// Tuning.Wait forces either wait; auto spins, unless the threads outnumber
// the process's GOMAXPROCS.
func TestWaitChoice(t *testing.T) {
	auto := ownProcs() >= 2 // the nets below run 2 threads
	for _, c := range []struct {
		preset, wait string
		spin         bool
	}{
		{"nin-mnist", "", auto}, {"nin-imagenet", "", auto}, {"nin-mnist", "park", false}, {"nin-cifar10", "spin", true}, {"nin-cifar10", "auto", auto},
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
	over := ownProcs() + 1
	net, err := NewNet(randomModel(t, "nin-mnist", 1), Options{MaxBatch: 1, Threads: over})
	if err != nil {
		t.Fatal(err)
	}
	if net.spin || net.Options().Wait != "park" {
		t.Errorf("%d threads over %d Go processors: wait %q, want park", over, over-1, net.Options().Wait)
	}
	net.Close()
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
						o.forwardPart(nil, got, src, n, part{idx: p, parts: parts})
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

// A batch-1 Forward split over 2 or 3 workers, its units claimed by
// whichever worker is free, gives the single-thread outputs bit for bit:
// every output is computed by the same kernels in the same order whoever
// computes it and however the call is cut.
func TestSplitMatchesOneThread(t *testing.T) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10", "nin-imagenet"} {
		m := randomModel(t, preset, 3)
		one, err := NewNet(m, Options{MaxBatch: 1, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		x := randomInput(1, one.InputLen(), 4)
		want := make([]float32, one.Classes())
		if err := one.Forward(x, 1, make([]float32, one.Classes()), want); err != nil {
			t.Fatal(err)
		}
		one.Close()
		for _, opt := range []Options{
			{MaxBatch: 1, Threads: 2},
			{MaxBatch: 1, Threads: 3, Tuning: Tuning{Wait: "spin"}},
			{MaxBatch: 1, Threads: 2, Tuning: Tuning{Unfused: true, Wait: "park"}},
		} {
			net, err := NewNet(m, opt)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, net.Classes())
			for rep := 0; rep < 5; rep++ { // a different claim order each time
				if err := net.Forward(x, 1, make([]float32, net.Classes()), got); err != nil {
					t.Fatal(err)
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s %+v rep %d: logit %d = %v, one thread %v", preset, opt.Tuning, rep, i, got[i], want[i])
					}
				}
			}
			net.Close()
		}
	}
}

// Claimed units: every unit of a call goes to exactly one part, whatever
// the parts' speeds, for unit counts below, at and above the part count;
// and a part that runs alone still takes every unit.
func TestClaimsTakeEveryUnitOnce(t *testing.T) {
	for parts := 1; parts <= 4; parts++ {
		q := make([]claims, parts)
		for total := 0; total <= 41; total++ {
			for i := range q {
				q[i].Store(0)
			}
			got := make([][]int, parts)
			var wg sync.WaitGroup
			for p := 0; p < parts; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					us := part{idx: p, parts: parts, q: q}.units(total)
					for u, ok := us.take(); ok; u, ok = us.take() {
						got[p] = append(got[p], u)
						if p == 1 { // a slow part
							runtime.Gosched()
						}
					}
				}()
			}
			wg.Wait()
			seen := make([]int, total)
			for _, us := range got {
				for _, u := range us {
					if u < 0 || u >= total {
						t.Fatalf("parts %d total %d: unit %d out of range", parts, total, u)
					}
					seen[u]++
				}
			}
			for u, c := range seen {
				if c != 1 {
					t.Fatalf("parts %d total %d: unit %d taken %d times", parts, total, u, c)
				}
			}
		}
		// one part alone (the others not started yet) drains every share
		for i := range q {
			q[i].Store(0)
		}
		us := part{idx: parts - 1, parts: parts, q: q}.units(23)
		n := 0
		for _, ok := us.take(); ok; _, ok = us.take() {
			n++
		}
		if n != 23 {
			t.Fatalf("parts %d: a lone part took %d of 23 units", parts, n)
		}
	}
}

// Streams run at GOMAXPROCS threads+2, spinning split calls at threads+1,
// parking ones at the process's own setting, switching with the mode of
// each call; a higher setting is kept.
func TestProcsFollowMode(t *testing.T) {
	old := runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(old)
	defer procsForSplit(2, false)
	m := randomModel(t, "nin-mnist", 1)
	net, err := NewNet(m, Options{MaxBatch: 4, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	parker, err := NewNet(m, Options{MaxBatch: 4, Threads: 2, Tuning: Tuning{Wait: "park"}})
	if err != nil {
		t.Fatal(err)
	}
	defer parker.Close()
	x := randomInput(4, net.InputLen(), 2)
	probs := make([]float32, 4*net.Classes())
	for _, c := range []struct {
		park         bool
		batch, procs int
	}{{false, 4, 4}, {false, 2, 4}, {false, 1, 3}, {false, 1, 3}, {true, 1, 2}, {false, 3, 4}, {true, 1, 2}, {false, 1, 3}, {true, 2, 4}, {true, 1, 2}} {
		n := net
		if c.park {
			n = parker
		}
		if err := n.Forward(x, c.batch, probs, nil); err != nil {
			t.Fatal(err)
		}
		if got := runtime.GOMAXPROCS(0); got != c.procs {
			t.Fatalf("after a batch of %d (parking %v): GOMAXPROCS %d, want %d", c.batch, c.park, got, c.procs)
		}
	}
	runtime.GOMAXPROCS(8)
	if err := net.Forward(x, 4, probs, nil); err != nil {
		t.Fatal(err)
	}
	if err := net.Forward(x, 1, probs, nil); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 8 {
		t.Fatalf("GOMAXPROCS 8 set by the process became %d", got)
	}
}
