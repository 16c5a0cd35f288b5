package nin

import (
	"math"
	"testing"
)

// TestForwardMapsMeanIsLogit: the class maps of every image average to its
// logits, with the GAP head and the fc head (whose maps are computed apart
// from its GEMM), batched, split over threads, and fc over a 1×1 map.
func TestForwardMapsMeanIsLogit(t *testing.T) {
	oneByOne := &Spec{Name: "t", Input: Dims{6, 6, 1}, Head: HeadFC, Blocks: []Block{
		{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{6, 5}, Pool: &Pool{"max", 3, 2, 0}},
		{Kernel: 3, Stride: 1, Pad: 0, Channels: []int{6, 4, 4}}}}
	for _, name := range []string{"nin-mnist", "nin-mnist+fc", "nin-cifar10+fc", "1x1-map+fc"} {
		var m *Model
		if name == "1x1-map+fc" {
			var err error
			if m, err = NewModel(oneByOne); err != nil {
				t.Fatal(err)
			}
			m.Params.InitHe(2)
		} else {
			m = randomModel(t, name, 12)
		}
		for _, opt := range []Options{
			{MaxBatch: 5, Threads: 2},
			{MaxBatch: 5, Threads: 1},
			{MaxBatch: 5, Threads: 2, Tuning: Tuning{Mode: ModeBLAS}},
		} {
			net, err := NewNet(m, opt)
			if err != nil {
				t.Fatal(err)
			}
			md := net.MapDims()
			for _, b := range []int{1, 5} {
				c := net.Classes()
				probs, logits, maps := make([]float32, b*c), make([]float32, b*c), make([]float32, b*md.Len())
				x := randomInput(b, m.Spec.Input.Len(), 8)
				if err := net.ForwardMaps(x, b, probs, logits, maps); err != nil {
					t.Fatal(err)
				}
				plain := make([]float32, b*c)
				net.Forward(x, b, make([]float32, b*c), plain)
				var spread float64
				for i := 0; i < b; i++ {
					for k := 0; k < c; k++ {
						var sum float64
						for p := 0; p < md.H*md.W; p++ {
							v := float64(maps[(i*md.H*md.W+p)*c+k])
							sum += v
							spread = math.Max(spread, math.Abs(v))
						}
						mean, l := sum/float64(md.H*md.W), float64(logits[i*c+k])
						if math.Abs(mean-l) > 1e-4*math.Max(1, math.Abs(l)) || logits[i*c+k] != plain[i*c+k] {
							t.Fatalf("%s %+v batch %d image %d class %d: map mean %g, logit %g (Forward %g)", name, opt, b, i, k, mean, l, plain[i*c+k])
						}
					}
				}
				if spread == 0 {
					t.Fatalf("%s: all maps are 0", name)
				}
			}
			if err := net.ForwardMaps(make([]float32, m.Spec.Input.Len()), 1, make([]float32, net.Classes()), nil, make([]float32, md.Len()-1)); err == nil {
				t.Fatal("short maps buffer accepted")
			}
			net.Close()
		}
	}
}
