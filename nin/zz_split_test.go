package nin

import (
	"fmt"
	"testing"
	"time"

	"github.com/ninbatch/ninbatch/blas"
)

func TestZZSplitProfile(t *testing.T) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10", "nin-imagenet"} {
		m := randomModel(t, preset, 1)
		for _, thr := range []int{1, 2} {
			net, err := NewNet(m, Options{MaxBatch: 1, Threads: thr})
			if err != nil {
				t.Fatal(err)
			}
			blas.SetThreads(1)
			st := net.streams[0]
			st.split = thr > 1
			x := randomInput(1, net.InputLen(), 3)
			acc := make([]time.Duration, len(net.ops))
			iters := 400
			if preset != "nin-mnist" {
				iters = 100
			}
			var tot time.Duration
			for it := 0; it < iters; it++ {
				src := x
				dst := st.a
				t0 := time.Now()
				for i, o := range net.ops {
					ts := time.Now()
					net.layer(st, o, dst, src, 1)
					acc[i] += time.Since(ts)
					src = dst
					if &dst[0] == &st.a[0] {
						dst = st.b
					} else {
						dst = st.a
					}
				}
				tot += time.Since(t0)
			}
			s := fmt.Sprintf("%s t%d total %.0f us:", preset, thr, float64(tot.Microseconds())/float64(iters))
			for i := range acc {
				s += fmt.Sprintf(" %.0f", float64(acc[i].Microseconds())/float64(iters))
			}
			t.Log(s)
			net.Close()
		}
	}
}
