package native

/*
#include "kernels.h"
*/
import "C"

// PanelCols is the column count of one panel of a packed GEMM operand:
// GemmPacked computes whole panels, so a column range it is given starts
// on a multiple of PanelCols.
const PanelCols = 16

// PackLen is the length of a (k, n) operand packed by PackB: n rounded up
// to PanelCols, times k.
func PackLen(k, n int) int { return (n + PanelCols - 1) / PanelCols * PanelCols * k }

// PackB packs the GEMM operand B (k, n) for GemmPacked into bp (PackLen(k,
// n) floats): B[p][j] = b[p·ldb + j], or b[j·ldb + p] when trans (b is
// then (n, k), the layout of conv weights: one row of k per output channel).
func PackB(bp, b []float32, k, n, ldb int, trans bool) {
	checkPack(len(bp), PackLen(k, n), len(b), k, n, ldb, trans)
	C.nb_pack_b(f32(b), C.int64_t(k), C.int64_t(n), C.int64_t(ldb), cbool(trans), f32(bp))
}

// checkPack validates the arguments every Pack* shares: B (k, n) of
// blen values with leading dimension ldb (transposed when trans) into a
// packed operand of bplen values, need of them used.
func checkPack(bplen, need, blen, k, n, ldb int, trans bool) {
	rows, cols := k, n
	if trans {
		rows, cols = n, k
	}
	switch {
	case k < 1 || n < 1:
		panic("native: bad packed operand shape")
	case ldb < cols:
		panic("native: bad leading dimension")
	case blen < (rows-1)*ldb+cols:
		panic("native: short operand")
	case bplen < need:
		panic("native: short packed operand")
	}
}

// GemmPacked computes columns [j0, j1) of act(A·B + bias):
//
//	c[i·ldc + j−j0] = act(Σ_p a[i·lda + p]·B[p][j] + bias[j−j0])
//
// for i < m, with B (k, n) packed by PackB into bp. j0 is a multiple of
// PanelCols and j1 ≤ n; bias may be nil (zero); act is ReLU when relu.
//
//	a:  (m, lda), the first k columns used
//	c:  (m, ldc), columns [0, j1−j0) written
func GemmPacked(c []float32, ldc int, a []float32, lda int, bp []float32, k, n, j0, j1, m int, bias []float32, relu bool) {
	gemmPacked(c, ldc, a, lda, bp, k, n, j0, j1, m, bias, relu, false)
}

// GemmFast reports whether GemmPacked runs its AVX2+FMA kernel here; on
// other CPUs it runs a scalar loop, far slower than OpenBLAS.
func GemmFast() bool { return C.nb_gemm_fast() != 0 }

func gemmPacked(c []float32, ldc int, a []float32, lda int, bp []float32, k, n, j0, j1, m int, bias []float32, relu, generic bool) {
	nc := j1 - j0
	switch {
	case k < 1 || n < 1 || m < 0:
		panic("native: bad GEMM shape")
	case j0 < 0 || j0%PanelCols != 0 || j1 < j0 || j1 > n:
		panic("native: bad column range")
	case lda < k || ldc < nc:
		panic("native: bad leading dimension")
	case len(bp) < PackLen(k, n):
		panic("native: short packed operand")
	case bias != nil && len(bias) < nc:
		panic("native: short bias")
	}
	if m == 0 || nc == 0 {
		return
	}
	switch {
	case len(a) < (m-1)*lda+k:
		panic("native: short a")
	case len(c) < (m-1)*ldc+nc:
		panic("native: short c")
	}
	var bb *C.float
	if bias != nil {
		bb = f32(bias)
	}
	C.nb_gemm_packed(C.int64_t(m), C.int64_t(k), C.int64_t(j0), C.int64_t(j1), f32(a), C.int64_t(lda),
		f32(bp), bb, cbool(relu), f32(c), C.int64_t(ldc), cbool(generic))
}

// setGemmStreamBytes sets the packed-B size above which GemmPacked cuts a
// long K into blocks, returning the old value (tests reach the K-blocked
// path with small shapes by setting 0). Not safe during GEMM calls.
func setGemmStreamBytes(n int64) int64 {
	return int64(C.nb_gemm_set_stream_bytes(C.int64_t(n)))
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// SetGemmBlockBytes sets the bytes of A one row block of GemmPacked covers
// (kept in L2 while the block's panels go by) and returns the old value.
// Not safe during GEMM calls.
func SetGemmBlockBytes(n int) int { return int(C.nb_gemm_set_block_bytes(C.int64_t(n))) }

// GemmAtB accumulates the weight-gradient product C += Aᵀ·B:
//
//	c[i·ldc + j] += Σ_r a[r·lda + i]·b[r·ldb + j]   for i < m, j < n, r < rows
//
// with A (rows, lda) and B (rows, ldb) row-major, as a conv's output
// gradient and its input (or im2col tile) are. It runs the AVX-512 kernel
// when GemmAtBFast, else a scalar loop far slower than OpenBLAS.
func GemmAtB(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, n, rows int) {
	gemmAtB(c, ldc, a, lda, b, ldb, m, n, rows, false)
}

// GemmAtBFast reports whether GemmAtB runs its AVX-512 kernel at the
// current ISA level.
func GemmAtBFast() bool { return C.nb_gemm_atb_fast() != 0 }

func gemmAtB(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, n, rows int, generic bool) {
	switch {
	case m < 0 || n < 0 || rows < 0:
		panic("native: bad GEMM shape")
	case lda < m || ldb < n || ldc < n:
		panic("native: bad leading dimension")
	}
	if m == 0 || n == 0 || rows == 0 {
		return
	}
	switch {
	case len(a) < (rows-1)*lda+m:
		panic("native: short a")
	case len(b) < (rows-1)*ldb+n:
		panic("native: short b")
	case len(c) < (m-1)*ldc+n:
		panic("native: short c")
	}
	C.nb_gemm_atb(C.int64_t(m), C.int64_t(n), C.int64_t(rows), f32(a), C.int64_t(lda), f32(b),
		C.int64_t(ldb), f32(c), C.int64_t(ldc), cbool(generic))
}

// setGemmAtBRows sets the row chunk of GemmAtB and returns the old value.
// Not safe during GEMM calls.
func setGemmAtBRows(n int) int { return int(C.nb_gemm_atb_set_rows(C.int64_t(n))) }
