package native

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bf16ref rounds to bfloat16 by nearest even, independently of the C code.
func bf16ref(f float32) float64 {
	u := math.Float32bits(f)
	u += 0x7fff + (u>>16)&1
	return float64(math.Float32frombits(u &^ 0xffff))
}

// TestGemmBF16Conformance: every bf16 kernel the CPU runs (AMX,
// VDPBF16PS, the plain-C loop) against float64 over bf16-rounded operands, over shapes
// with sizes 1, odd, tails of the 32-row, 32-column and 32-deep tile
// steps, padded leading dimensions, column ranges from a later panel,
// with and without bias and ReLU: within fp32 summation error of the
// rounded product, and within the bf16 bound (2⁻⁷ of Σ|a·b|) of the
// unrounded one.
func TestGemmBF16Conformance(t *testing.T) {
	paths := BF16Kernels()
	t.Logf("bf16 kernels here: %v", paths)
	r := rand.New(rand.NewPCG(11, 12))
	for _, tiles := range paths {
		for _, m := range []int{1, 5, 16, 17, 31, 32, 33, 70} {
			for _, k := range []int{1, 3, 31, 32, 33, 100, 300, 1100, 4200} { // 1100, 4200: A converted step by step, chunk by chunk
				for _, n := range []int{1, 7, 16, 17, 32, 33, 50} {
					j0 := 0
					if n > 16 && (m+k)%2 == 1 {
						j0 = 16
					}
					lda, ldc := k+(m%3), n-j0+(k%2)
					a := make([]float32, m*lda)
					for i := range a {
						a[i] = float32(r.NormFloat64())
					}
					b := make([]float32, k*n)
					for i := range b {
						b[i] = float32(r.NormFloat64())
					}
					var bias []float32
					if k%2 == 0 {
						bias = make([]float32, n-j0)
						for i := range bias {
							bias[i] = float32(r.NormFloat64())
						}
					}
					relu := n%2 == 1
					bp := make([]uint16, PackLenBF16(k, n))
					PackBF16(bp, b, k, n, n, false)
					c := make([]float32, m*ldc)
					gemmBF16(c, ldc, a, lda, bp, k, n, j0, n, m, bias, relu, tiles)
					for i := 0; i < m; i++ {
						for j := j0; j < n; j++ {
							var s, s64, mag float64
							for p := 0; p < k; p++ {
								s += bf16ref(a[i*lda+p]) * bf16ref(b[p*n+j])
								s64 += float64(a[i*lda+p]) * float64(b[p*n+j])
								mag += math.Abs(float64(a[i*lda+p]) * float64(b[p*n+j]))
							}
							if bias != nil {
								s += float64(bias[j-j0])
								s64 += float64(bias[j-j0])
								mag += math.Abs(float64(bias[j-j0]))
							}
							if relu {
								s, s64 = math.Max(s, 0), math.Max(s64, 0)
							}
							got := float64(c[i*ldc+j-j0])
							if d := math.Abs(got - s); d > float64(k+2)*0x1p-24*mag+1e-30 {
								t.Fatalf("tiles %v m %d k %d n %d j0 %d: c[%d][%d] = %v, bf16 reference %v (|Σab| %v)", tiles, m, k, n, j0, i, j, got, s, mag)
							}
							if d := math.Abs(got - s64); d > 0x1p-7*mag {
								t.Fatalf("tiles %v m %d k %d n %d: c[%d][%d] = %v, fp64 %v: beyond the bf16 bound", tiles, m, k, n, i, j, got, s64)
							}
						}
					}
				}
			}
		}
	}
}

// BenchmarkGemmBF16: the AMX bf16 and int8 kernels against the fp32
// packed GEMM on NIN layer shapes (one thread; int8 counts the same ops).
func BenchmarkGemmBF16(b *testing.B) {
	for _, s := range []struct {
		name    string
		m, k, n int
	}{
		{"cifar-1x1-b64", 64 * 32 * 32, 192, 160},
		{"imagenet-1x1-b1", 13 * 13, 1024, 1024},
		{"cifar-im2col", 4096, 2400, 192},
	} {
		a := make([]float32, s.m*s.k)
		w := make([]float32, s.k*s.n)
		for i := range a {
			a[i] = float32(i%7) - 3
		}
		for i := range w {
			w[i] = float32(i%5) - 2
		}
		c := make([]float32, s.m*s.n)
		flops := 2 * float64(s.m) * float64(s.k) * float64(s.n)
		b.Run(s.name+"/fp32", func(b *testing.B) {
			bp := make([]float32, PackLen(s.k, s.n))
			PackB(bp, w, s.k, s.n, s.n, false)
			for i := 0; i < b.N; i++ {
				GemmPacked(c, s.n, a, s.k, bp, s.k, s.n, 0, s.n, s.m, nil, true)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(s.name+"/bf16-"+BF16Kernel(), func(b *testing.B) {
			if BF16Kernel() == "" {
				b.Skip("no bf16 kernel")
			}
			bp := make([]uint16, PackLenBF16(s.k, s.n))
			PackBF16(bp, w, s.k, s.n, s.n, false)
			for i := 0; i < b.N; i++ {
				GemmBF16(c, s.n, a, s.k, bp, s.k, s.n, 0, s.n, s.m, nil, true)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(s.name+"/int8-"+Int8Kernel(), func(b *testing.B) {
			if Int8Kernel() == "" {
				b.Skip("no int8 kernel")
			}
			q := make([]int8, len(w))
			for i, v := range w {
				q[i] = int8(v)
			}
			bp := make([]int8, PackLenInt8(s.k, s.n))
			PackInt8(bp, q, s.k, s.n, s.n, false)
			sw := make([]float32, s.n)
			for i := range sw {
				sw[i] = 0.01
			}
			for i := 0; i < b.N; i++ {
				GemmInt8(c, s.n, a, s.k, 0.05, 0, bp, sw, s.k, s.n, 0, s.n, s.m, nil, nil, true)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
