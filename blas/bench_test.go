package blas

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkSgemm measures the sgemm ceiling (square) and NIN's real per-image
// GEMM shapes (M = output pixels, K = k·k·Cin, N = Cout) at 1 and 2 threads.
func BenchmarkSgemm(b *testing.B) {
	shapes := []struct {
		name    string
		m, k, n int
	}{
		{"square1024", 1024, 1024, 1024},
		{"cifar_conv1", 1024, 75, 192},
		{"cifar_cccp1", 1024, 192, 160},
		{"cifar_conv2", 256, 2400, 192},
		{"cifar_cccp6", 64, 192, 10},
		{"imagenet_conv2", 729, 2400, 256},
		{"imagenet_cccp8", 36, 1024, 1000},
		{"mnist_conv1", 784, 25, 96},
		{"mnist_conv2", 196, 1200, 128},
		// Winograd F(2x2,5x5) products, one per transform position:
		// M = tiles, K = Cin, N = Cout
		{"wino_cifar_conv2", 64, 96, 192},
		{"wino_cifar_conv2_mb4", 256, 96, 192},
		{"wino_imagenet_conv2", 196, 96, 256},
		{"wino_mnist_conv2_mb2", 98, 48, 128},
	}
	prev := Threads()
	defer SetThreads(prev)
	for _, th := range []int{1, 2} {
		for _, s := range shapes {
			b.Run(fmt.Sprintf("%s/t%d", s.name, th), func(b *testing.B) {
				SetThreads(th)
				r := rand.New(rand.NewPCG(1, 1))
				a, w, c := randSlice(r, s.m*s.k), randSlice(r, s.n*s.k), make([]float32, s.m*s.n)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					Sgemm(false, true, s.m, s.n, s.k, 1, a, s.k, w, s.k, 0, c, s.n)
				}
				b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
