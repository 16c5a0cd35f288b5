package blas

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/ninbatch/ninbatch/native"
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

// BenchmarkWeights runs NIN's 1×1-conv and Winograd-product shapes through
// both kinds of Weights at 1 thread: packed (per instruction set this CPU
// has) and OpenBLAS sgemm NT plus the bias+ReLU pass the packed kernel fuses.
func BenchmarkWeights(b *testing.B) {
	shapes := []struct {
		name    string
		m, n, k int
	}{
		{"mnist-cccp1-b8", 6272, 64, 96},
		{"mnist-cccp3-b8", 1568, 96, 128},
		{"mnist-cccp5-b1", 49, 96, 128},
		{"mnist-cccp6-b8", 392, 10, 96},
		{"mnist-wino-b1", 16, 128, 48},
		{"cifar-cccp1-b8", 8192, 160, 192},
		{"cifar-wino", 512, 192, 192},
		{"imagenet-cccp7-b8", 288, 1024, 1024},
		{"imagenet-conv4-b1", 36, 1024, 3456},
	}
	prev := Threads()
	SetThreads(1)
	defer SetThreads(prev)
	if kib, err := strconv.Atoi(os.Getenv("NINBATCH_BENCH_BLOCK_KIB")); err == nil {
		defer native.SetGemmBlockBytes(native.SetGemmBlockBytes(kib << 10))
	}
	for _, s := range shapes {
		r := rand.New(rand.NewPCG(1, 2))
		a, w, bias := randSlice(r, s.m*s.k), randSlice(r, s.n*s.k), randSlice(r, s.n)
		c := make([]float32, s.m*s.n)
		flops := 2 * float64(s.m*s.n*s.k)
		run := func(b *testing.B, packed bool) {
			ws := NewWeights(s.k, s.n, packed)
			ws.Load(w, s.k, true)
			for b.Loop() {
				ws.Mul(c, s.n, a, s.k, s.m, 0, s.n, bias, true)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		}
		for _, isa := range native.Levels() {
			if isa == native.Scalar {
				continue
			}
			b.Run(s.name+"/packed-"+isa.String(), func(b *testing.B) {
				old, _ := native.SetISA(isa)
				defer native.SetISA(old)
				run(b, true)
			})
		}
		b.Run(s.name+"/openblas", func(b *testing.B) { run(b, false) })
	}
}

// BenchmarkFirstConv times the presets' first convs (C = 1 or 3) per image
// on one core: the direct kernel against im2col + a GEMM on OpenBLAS and on
// the packed kernel.
func BenchmarkFirstConv(b *testing.B) {
	SetThreads(1)
	r := rand.New(rand.NewPCG(1, 1))
	for _, s := range []struct {
		name string
		g    native.Geom
		cout int
	}{
		{"mnist_conv1", native.Geom{N: 8, H: 28, W: 28, C: 1, K: 5, S: 1, P: 2, OH: 28, OW: 28}, 96},
		{"cifar_conv1", native.Geom{N: 8, H: 32, W: 32, C: 3, K: 5, S: 1, P: 2, OH: 32, OW: 32}, 192},
		{"imagenet_conv1", native.Geom{N: 2, H: 224, W: 224, C: 3, K: 11, S: 4, P: 0, OH: 54, OW: 54}, 96},
	} {
		g, kkc, rows := s.g, s.g.Cols(), s.g.Rows()
		in, w, bias := randSlice(r, g.InLen()), randSlice(r, s.cout*kkc), randSlice(r, s.cout)
		out := make([]float32, rows*s.cout)
		flops := 2 * float64(rows*s.cout*kkc)
		report := func(b *testing.B) {
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*g.N), "us/img")
		}
		b.Run(s.name+"/direct", func(b *testing.B) {
			wt, ws := native.DirectWeights(w, s.cout, kkc)
			pad := make([]float32, native.DirectPadLen(g))
			for b.Loop() {
				native.ConvDirect(out, in, wt, ws, bias, g, s.cout, true, 0, rows, pad)
			}
			report(b)
		})
		for _, packed := range []bool{false, true} {
			name := map[bool]string{false: "/im2col-openblas", true: "/im2col-packed"}[packed]
			b.Run(s.name+name, func(b *testing.B) {
				ws := NewWeights(kkc, s.cout, packed)
				ws.Load(w, kkc, true)
				tile := min(rows, max(64, (4<<20)/(4*kkc)))
				col := make([]float32, tile*kkc)
				for b.Loop() {
					for r0 := 0; r0 < rows; r0 += tile {
						nr := min(tile, rows-r0)
						native.Im2col(col, in, g, r0, nr)
						ws.Mul(out[r0*s.cout:], s.cout, col[:nr*kkc], kkc, nr, 0, s.cout, bias, true)
					}
				}
				report(b)
			})
		}
	}
}

// BenchmarkWeightGradGemm runs training's weight-gradient products
// (dW += dYᵀ·X: M = Cout, N = k·k·Cin or Cin, R = pixels or Winograd tiles
// of a micro-batch) on one thread through OpenBLAS sgemm TN and, where the
// CPU has AVX-512, native.GemmAtB.
func BenchmarkWeightGradGemm(b *testing.B) {
	shapes := []struct {
		name       string
		m, n, rows int
	}{
		{"mnist_conv1_mb8", 96, 25, 784 * 8},
		{"mnist_cccp1_mb8", 64, 96, 784 * 8},
		{"mnist_cccp2_mb8", 48, 64, 784 * 8},
		{"mnist_cccp3_mb8", 96, 128, 196 * 8},
		{"mnist_cccp6_mb8", 10, 96, 49 * 8},
		{"wino_mnist_conv2_mb8", 128, 48, 128},
		{"cifar_conv1_mb8", 192, 75, 1024 * 8},
		{"cifar_cccp1_mb8", 160, 192, 1024 * 8},
		{"wino_cifar_conv2_mb8", 192, 96, 512},
	}
	prev := Threads()
	defer SetThreads(prev)
	SetThreads(1)
	for _, s := range shapes {
		r := rand.New(rand.NewPCG(1, 1))
		a, x, c := randSlice(r, s.rows*s.m), randSlice(r, s.rows*s.n), make([]float32, s.m*s.n)
		flops := 2 * float64(s.m*s.n*s.rows)
		b.Run(s.name+"/openblas", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				Sgemm(true, false, s.m, s.n, s.rows, 1, a, s.m, x, s.n, 1, c, s.n)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		if !native.GemmAtBFast() {
			continue
		}
		b.Run(s.name+"/avx512", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				native.GemmAtB(c, s.n, a, s.m, x, s.n, s.m, s.n, s.rows)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
