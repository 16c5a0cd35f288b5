package native

import (
	"math"
	"math/rand/v2"
	"testing"
)

// quantRef is the activation quantiser, independently: round half to even
// of min(a/sa, 255 − zp), plus zp, negatives and NaN 0.
func quantRef(a, inv float32, zp int) int32 {
	x := a * inv
	if x != x {
		return 0
	}
	if x > float32(255-zp) {
		x = float32(255 - zp)
	}
	q := math.RoundToEven(float64(x)) + float64(zp)
	if !(q > 0) {
		return 0
	}
	return int32(q)
}

// TestGemmInt8Conformance: the AMX kernel (where the CPU has it) and the
// plain-C loop over shapes with sizes 1, odd, and tails of the 32-row,
// 32-column and 64-deep tile steps, padded strides and a later column
// panel. With unit scales and no bias the outputs are the int32 sums,
// which must equal an integer reference exactly (activations with ties,
// negatives and values past 255 included); with scales, bias and ReLU the
// two kernels agree bit for bit and stay within float32 rounding of a
// float64 epilogue.
func TestGemmInt8Conformance(t *testing.T) {
	paths := Int8Kernels()
	t.Logf("int8 kernels here: %v", paths)
	r := rand.New(rand.NewPCG(21, 22))
	for _, m := range []int{1, 5, 16, 17, 31, 32, 33, 70} {
		for _, k := range []int{1, 3, 63, 64, 65, 130, 300, 4200, 8200} { // past 4096: A quantised chunk by chunk
			for _, n := range []int{1, 7, 16, 17, 32, 33, 50} {
				if k > 8000 && m > 17 {
					continue // three K chunks: a few shapes suffice
				}
				j0 := 0
				if n > 16 && (m+k)%2 == 1 {
					j0 = 16
				}
				lda, ldc, nc := k+(m%3), n-j0+(k%2), n-j0
				a := make([]float32, m*lda)
				for i := range a {
					switch r.IntN(8) {
					case 0:
						a[i] = float32(r.IntN(40)) - 20 // negatives quantise to 0
					case 1:
						a[i] = 250 + float32(r.IntN(40)) // past 255: saturates
					case 2:
						a[i] = float32(r.IntN(100)) + 0.5 // ties to even
					default:
						a[i] = float32(r.IntN(256))
					}
				}
				b := make([]int8, k*n)
				for i := range b {
					b[i] = int8(r.IntN(255) - 127)
				}
				bp := make([]int8, PackLenInt8(k, n))
				PackInt8(bp, b, k, n, n, false)
				ones := make([]float32, nc)
				for i := range ones {
					ones[i] = 1
				}
				sw := make([]float32, nc)
				bias := make([]float32, nc)
				for i := range sw {
					sw[i] = float32(0.001 + r.Float64()*0.05)
					bias[i] = float32(r.NormFloat64())
				}
				var outs [][]float32
				for _, kern := range paths { // the plain-C loop, then each SIMD kernel
					c := make([]float32, m*ldc)
					gemmInt8(c, ldc, a, lda, 1, 0, bp, ones, k, n, j0, n, m, nil, nil, false, kern)
					for i := 0; i < m; i++ {
						for j := j0; j < n; j++ {
							var s int32
							for p := 0; p < k; p++ {
								s += quantRef(a[i*lda+p], 1, 0) * int32(b[p*n+j])
							}
							if got := c[i*ldc+j-j0]; got != float32(s) {
								t.Fatalf("%s: m %d k %d n %d j0 %d: sum[%d][%d] = %v, want %d", kern, m, k, n, j0, i, j, got, s)
							}
						}
					}
					sa := float32(0.37)
					zp := (m * 37) % 200 // a zero point on most shapes
					corr := make([]float32, nc)
					for j := range corr {
						var cs int64
						for p := 0; p < k; p++ {
							cs += int64(b[p*n+j0+j])
						}
						corr[j] = -float32(zp) * sa * sw[j] * float32(cs)
					}
					gemmInt8(c, ldc, a, lda, sa, zp, bp, sw, k, n, j0, n, m, bias, corr, n%2 == 1, kern)
					outs = append(outs, append([]float32(nil), c...))
					for i := 0; i < m; i++ {
						for j := j0; j < n; j++ {
							var s int64
							for p := 0; p < k; p++ {
								s += int64(quantRef(a[i*lda+p], 1/sa, zp)) * int64(b[p*n+j])
							}
							want := float64(s)*float64(sa*sw[j-j0]) + float64(bias[j-j0]) + float64(corr[j-j0])
							if n%2 == 1 {
								want = math.Max(want, 0)
							}
							got := float64(c[i*ldc+j-j0])
							if math.Abs(got-want) > 3e-7*(math.Abs(float64(s)*float64(sa*sw[j-j0]))+math.Abs(float64(bias[j-j0]))+math.Abs(float64(corr[j-j0])))+1e-30 {
								t.Fatalf("%s: m %d k %d n %d: c[%d][%d] = %v, want %v", kern, m, k, n, i, j, got, want)
							}
						}
					}
				}
				for pi := 1; pi < len(outs); pi++ {
					for i := range outs[0] {
						if math.Float32bits(outs[0][i]) != math.Float32bits(outs[pi][i]) {
							t.Fatalf("m %d k %d n %d: %s %v and C %v differ at %d", m, k, n, paths[pi], outs[pi][i], outs[0][i], i)
						}
					}
				}
			}
		}
	}
}
