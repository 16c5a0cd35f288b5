// Package blas is ninbatch's single GEMM entry point.
//
// Every matrix product in the project goes through it, in one of two ways:
//
//   - Weights.Mul, for products with a layer's weights (conv forward passes,
//     Winograd products, input gradients): the weights are laid out once
//     for the kernel chosen when they are allocated, the packed-weight
//     kernel (native.GemmPacked, whose instruction set native picks at run
//     time) or OpenBLAS, with the bias and ReLU fused or applied after.
//   - AddAtB, for weight gradients (C += AᵀB over pixel rows): native's
//     AVX-512 kernel where the CPU runs it and the layer uses packed
//     weights, else Sgemm.
//   - Sgemm, for general products, which forwards to Impl, a gonum
//     blas.Float32.
//
// The default build backs Impl with gonum.org/v1/netlib over OpenBLAS (this
// package carries the `#cgo pkg-config: openblas` directive that also
// resolves netlib's CBLAS symbols, so a plain `go build ./...` links).
// Building with `-tags purego` swaps in gonum's pure-Go implementation
// instead; both pass the same conformance test.
//
// OpenBLAS keeps a global thread pool. SetThreads sets its size for the whole
// process; ninbatch either runs one stream with several OpenBLAS threads or
// several streams with OpenBLAS at one thread each (see nin.Tuning).
package blas

import (
	gblas "gonum.org/v1/gonum/blas"

	"github.com/ninbatch/ninbatch/native"
)

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices, with
// op(X) = Xᵀ when the matching trans flag is set. C is m×n, op(A) m×k,
// op(B) k×n. Argument errors are programming errors and panic (gonum style).
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := gblas.NoTrans, gblas.NoTrans
	if transA {
		ta = gblas.Trans
	}
	if transB {
		tb = gblas.Trans
	}
	Impl.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// AddAtB accumulates a weight gradient, C += Aᵀ·B:
//
//	c[i·ldc + j] += Σ_r a[r·lda + i]·b[r·ldb + j]   for i < m, j < n, r < rows
//
// A (rows, lda) is a layer's output gradient and B (rows, ldb) its input
// or im2col tile. With own (the layer's weights are packed for native's
// kernels) it runs native.GemmAtB when that has its AVX-512 build at the
// current ISA level, about twice OpenBLAS's Haswell kernels on these
// shapes; otherwise OpenBLAS sgemm.
func AddAtB(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, n, rows int, own bool) {
	if own && native.GemmAtBFast() {
		native.GemmAtB(c, ldc, a, lda, b, ldb, m, n, rows)
		return
	}
	if m == 0 || n == 0 || rows == 0 {
		return
	}
	Sgemm(true, false, m, n, rows, 1, a, lda, b, ldb, 1, c, ldc)
}
