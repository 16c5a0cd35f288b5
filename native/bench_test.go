package native

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ninbatch/ninbatch/native/nativeref"
)

// Kernel benchmarks on NIN's real per-image shapes; memory-bound kernels
// report GB/s of bytes read + written. The "ref" variants time the plain-Go
// reference so the speed-up is visible.

func gbps(b *testing.B, bytes int) {
	b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

var im2colShapes = []struct {
	name string
	g    Geom
}{
	{"cifar_conv1", Geom{N: 1, H: 32, W: 32, C: 3, K: 5, S: 1, P: 2, OH: 32, OW: 32}},
	{"cifar_conv2", Geom{N: 1, H: 16, W: 16, C: 96, K: 5, S: 1, P: 2, OH: 16, OW: 16}},
	{"cifar_conv3", Geom{N: 1, H: 8, W: 8, C: 192, K: 3, S: 1, P: 1, OH: 8, OW: 8}},
	{"imagenet_conv1", Geom{N: 1, H: 224, W: 224, C: 3, K: 11, S: 4, P: 0, OH: 54, OW: 54}},
	{"mnist_conv2", Geom{N: 1, H: 14, W: 14, C: 48, K: 5, S: 1, P: 2, OH: 14, OW: 14}},
}

func BenchmarkIm2col(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, s := range im2colShapes {
		in := randSlice(r, s.g.InLen())
		col := make([]float32, s.g.Rows()*s.g.Cols())
		bytes := 4 * (len(in) + len(col))
		b.Run(s.name+"/c", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				Im2col(col, in, s.g, 0, s.g.Rows())
			}
			gbps(b, bytes)
		})
		b.Run(s.name+"/ref", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				nativeref.Im2col(col, in, ref(s.g), 0, s.g.Rows())
			}
			gbps(b, bytes)
		})
	}
}

func BenchmarkPool(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, s := range []struct {
		name string
		g    Geom
	}{
		{"cifar_pool1", Geom{N: 1, H: 32, W: 32, C: 96, K: 3, S: 2, OH: 16, OW: 16}},
		{"cifar_pool2", Geom{N: 1, H: 16, W: 16, C: 192, K: 3, S: 2, OH: 8, OW: 8}},
		{"imagenet_pool0", Geom{N: 1, H: 54, W: 54, C: 96, K: 3, S: 2, OH: 27, OW: 27}},
	} {
		in := randSlice(r, s.g.InLen())
		out := make([]float32, s.g.PoolOutLen())
		bytes := 4 * (len(in) + len(out))
		b.Run(s.name+"/max/c", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				MaxPool(out, nil, in, s.g)
			}
			gbps(b, bytes)
		})
		am := make([]int32, s.g.PoolOutLen())
		b.Run(s.name+"/max-argmax/c", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				MaxPool(out, am, in, s.g)
			}
			gbps(b, bytes)
		})
		b.Run(s.name+"/ave/c", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				AvePool(out, in, s.g)
			}
			gbps(b, bytes)
		})
		b.Run(s.name+"/max/ref", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				nativeref.MaxPool(out, nil, in, ref(s.g))
			}
			gbps(b, bytes)
		})
	}
}

func BenchmarkBiasAct(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, s := range [][2]int{{1024, 192}, {256, 192}, {2916, 96}} {
		x, bias := randSlice(r, s[0]*s[1]), randSlice(r, s[1])
		b.Run(fmt.Sprintf("%dx%d/c", s[0], s[1]), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				BiasAct(x, s[0], s[1], s[1], bias, true)
			}
			gbps(b, 8*len(x))
		})
		b.Run(fmt.Sprintf("%dx%d/ref", s[0], s[1]), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				nativeref.BiasAct(x, s[0], s[1], s[1], bias, true)
			}
			gbps(b, 8*len(x))
		})
	}
}

func BenchmarkGAPSoftmax(b *testing.B) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, s := range [][3]int{{64, 64, 10}, {64, 36, 1000}} {
		n, hw, c := s[0], s[1], s[2]
		in, out := randSlice(r, n*hw*c), make([]float32, n*c)
		b.Run(fmt.Sprintf("gap_%dx%dx%d", n, hw, c), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				GAP(out, in, n, hw, c)
			}
			gbps(b, 4*(len(in)+len(out)))
		})
		b.Run(fmt.Sprintf("softmax_%dx%d", n, c), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				Softmax(out, out, n, c)
			}
			gbps(b, 8*len(out))
		})
	}
}

// BenchmarkWino times the Winograd transforms F(2×2) and F(4×4) on NIN's
// shapes (one micro-batch of tiles), in GB/s of transform output plus input.
func BenchmarkWino(b *testing.B) {
	for _, s := range []struct {
		name                string
		n, hw, cin, cout, k int
	}{
		{"cifar_conv2", 1, 16, 96, 192, 5},
		{"cifar_conv3", 1, 8, 192, 192, 3},
		{"imagenet_conv2", 1, 27, 96, 256, 5},
		{"mnist_conv2", 2, 14, 48, 128, 5},
	} {
		for _, m := range []int{2, 4} {
			p := s.k / 2
			g := Geom{N: s.n, H: s.hw, W: s.hw, C: s.cin, K: s.k, S: 1, P: p, OH: s.hw, OW: s.hw}
			w := NewWino(g, m)
			at64, _, bt64, _ := WinoMatrices(m, s.k)
			at, bt := Float32s(at64), Float32s(bt64)
			T, aa := w.Tiles(), w.A*w.A
			r := rand.New(rand.NewPCG(1, 1))
			in := randSlice(r, g.InLen())
			v := make([]float32, aa*WinoStride(T, s.cin))
			mm := randSlice(r, aa*WinoStride(T, s.cout))
			out := make([]float32, s.n*s.hw*s.hw*s.cout)
			bias := randSlice(r, s.cout)
			b.Run(fmt.Sprintf("%s/F%d/in", s.name, m), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					WinoIn(v, in, w, bt, 0, T)
				}
				b.ReportMetric(float64(len(v)+len(in))*4*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*s.n), "us/img")
			})
			b.Run(fmt.Sprintf("%s/F%d/out", s.name, m), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					WinoOut(out, mm, w, s.cout, s.cout, at, bias, true, 0, T)
				}
				b.ReportMetric(float64(len(mm)+len(out))*4*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*s.n), "us/img")
			})
		}
	}
}
