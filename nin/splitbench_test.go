package nin

import (
	"fmt"
	"testing"

	"github.com/ninbatch/ninbatch/blas"
)

// BenchmarkSplitLayers times each op of one image (as the forward pass
// runs them: chains fused) on 1 thread and split over 2, so the split's
// loss per layer shows: compare t2 with half of t1.
func BenchmarkSplitLayers(b *testing.B) {
	for _, preset := range []string{"nin-mnist", "nin-cifar10", "nin-imagenet"} {
		m := randomModel(b, preset, 1)
		for _, threads := range []int{1, 2} {
			net, err := NewNet(m, Options{MaxBatch: 1, Threads: threads})
			if err != nil {
				b.Fatal(err)
			}
			x := randomInput(1, net.InputLen(), 3)
			probs := make([]float32, net.Classes())
			net.Forward(x, 1, probs, nil) // settle the mode (Go processors, BLAS threads)
			blas.SetThreads(1)
			st := net.streams[0]
			st.split = threads > 1
			src, dst := x, st.a
			for i, o := range net.run {
				in, out := src, dst
				b.Run(fmt.Sprintf("%s/%02d-%s/t%d", preset, i, opName(o), threads), func(b *testing.B) {
					for k := 0; k < b.N; k++ {
						net.layer(st, o, out, in, 1)
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/op")
				})
				src = dst
				if &dst[0] == &st.a[0] {
					dst = st.b
				} else {
					dst = st.a
				}
			}
			st.split = false
			net.Close()
		}
	}
}

func opName(o op) string {
	switch o := o.(type) {
	case *conv:
		switch {
		case o.wino != nil:
			return o.name + "-wino"
		case o.direct != nil:
			return o.name + "-direct"
		}
		return o.name
	case *chainOp:
		return o.stages[0].name + "-chain"
	case *poolOp:
		return "pool"
	}
	return fmt.Sprintf("%T", o)
}
