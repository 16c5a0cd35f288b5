package blas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/ninbatch/ninbatch/internal/testutil"

	gblas "gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// naiveSgemm is the float64 triple-loop definition every implementation is checked against.
func naiveSgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float64, ldc int) {
	at := func(i, p int) float64 {
		if tA {
			return float64(a[p*lda+i])
		}
		return float64(a[i*lda+p])
	}
	bt := func(p, j int) float64 {
		if tB {
			return float64(b[j*ldb+p])
		}
		return float64(b[p*ldb+j])
	}
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += at(i, p) * bt(p, j)
			}
			old := c[i*ldc+j]
			if beta == 0 {
				old = 0 // BLAS: C is not read when beta is 0
			}
			c[i*ldc+j] = float64(alpha)*s + float64(beta)*old
		}
	}
}

var randSlice = testutil.RandSlice

// testSgemmConformance is the shared suite: every Float32 implementation runs it.
func testSgemmConformance(t *testing.T, impl gblas.Float32) {
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 2, 7, 17, 64, 75}
	alphas := []float32{0, 1, -0.7}
	betas := []float32{0, 1, 0.35}
	for _, m := range sizes {
		for _, n := range sizes {
			for _, k := range []int{0, 1, 3, 25, 75} {
				for _, tA := range []bool{false, true} {
					for _, tB := range []bool{false, true} {
						for _, pad := range []int{0, 3} {
							for ai, alpha := range alphas {
								beta := betas[(ai+m+n)%len(betas)]
								name := fmt.Sprintf("m%d_n%d_k%d_tA%v_tB%v_pad%d_a%g_b%g", m, n, k, tA, tB, pad, alpha, beta)
								checkOne(t, impl, name, r, m, n, k, tA, tB, pad, alpha, beta)
							}
						}
					}
				}
			}
		}
	}
}

func checkOne(t *testing.T, impl gblas.Float32, name string, r *rand.Rand, m, n, k int, tA, tB bool, pad int, alpha, beta float32) {
	t.Helper()
	rowsA, colsA := m, k
	if tA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if tB {
		rowsB, colsB = n, k
	}
	lda, ldb, ldc := max(1, colsA)+pad, max(1, colsB)+pad, max(1, n)+pad
	a := randSlice(r, max(0, rowsA*lda))
	b := randSlice(r, max(0, rowsB*ldb))
	c := randSlice(r, max(0, m*ldc))
	if beta == 0 {
		for i := range c { // BLAS must not read C when beta is 0
			c[i] = float32(math.NaN())
		}
	}
	a0, b0, c0 := slices.Clone(a), slices.Clone(b), slices.Clone(c)
	want := make([]float64, len(c))
	for i, v := range c {
		want[i] = float64(v)
	}
	naiveSgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc)

	ta, tb := gblas.NoTrans, gblas.NoTrans
	if tA {
		ta = gblas.Trans
	}
	if tB {
		tb = gblas.Trans
	}
	impl.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

	if !slices.Equal(a, a0) || !slices.Equal(b, b0) {
		t.Fatalf("%s: inputs A or B were modified", name)
	}
	for i := 0; i < m; i++ {
		for j := 0; j < ldc; j++ {
			idx := i*ldc + j
			if j >= n { // padding columns of C must be untouched
				if math.Float32bits(c[idx]) != math.Float32bits(c0[idx]) {
					t.Fatalf("%s: padding C[%d,%d] modified", name, i, j)
				}
				continue
			}
			tol := 1e-5 * float64(k+1) * math.Max(1, math.Abs(want[idx]))
			if d := math.Abs(float64(c[idx]) - want[idx]); !(d <= tol) {
				t.Fatalf("%s: C[%d,%d] = %g, want %g (|diff| %g > %g)", name, i, j, c[idx], want[idx], d, tol)
			}
		}
	}
}

func TestSgemmConformanceGonum(t *testing.T) { testSgemmConformance(t, gonum.Implementation{}) }

// TestSgemmConformanceImpl runs the suite on whatever this build uses (OpenBLAS by default).
func TestSgemmConformanceImpl(t *testing.T) { testSgemmConformance(t, Impl) }

// TestSgemmWrapper checks the package entry point maps its flags onto Impl correctly.
func TestSgemmWrapper(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	m, n, k := 5, 4, 3
	for _, tA := range []bool{false, true} {
		for _, tB := range []bool{false, true} {
			a, b := randSlice(r, m*k), randSlice(r, k*n)
			lda, ldb := k, n
			if tA {
				lda = m
			}
			if tB {
				ldb = k
			}
			c := make([]float32, m*n)
			want := make([]float64, m*n)
			naiveSgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, want, n)
			Sgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, c, n)
			for i := range c {
				if math.Abs(float64(c[i])-want[i]) > 1e-4 {
					t.Fatalf("tA=%v tB=%v: c[%d]=%g want %g", tA, tB, i, c[i], want[i])
				}
			}
		}
	}
}

// TestSgemmConcurrentSingleThreaded checks the mode ninbatch uses for
// streams: OpenBLAS at one thread, called from several goroutines at once.
func TestSgemmConcurrentSingleThreaded(t *testing.T) {
	prev := Threads()
	SetThreads(1)
	defer SetThreads(prev)
	r := rand.New(rand.NewPCG(5, 6))
	m, n, k := 300, 96, 200
	a, b := randSlice(r, m*k), randSlice(r, k*n)
	want := make([]float32, m*n)
	Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, want, n)
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := make([]float32, m*n)
			for rep := 0; rep < 20; rep++ {
				Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c, n)
				if !slices.Equal(c, want) {
					errs <- "concurrent result differs from serial"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func TestThreadsRoundTrip(t *testing.T) {
	prev := Threads()
	defer SetThreads(prev)
	SetThreads(1)
	if Backend == "openblas" && Threads() != 1 {
		t.Fatalf("Threads() = %d after SetThreads(1)", Threads())
	}
	if Config() == "" || CoreName() == "" {
		t.Fatal("empty OpenBLAS config or core name")
	}
}
