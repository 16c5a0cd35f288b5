package native

/*
#include "kernels.h"
*/
import "C"

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// PackLenInt8 is the length (bytes) of a (k, n) s8 operand packed by
// PackInt8: n rounded up to PanelCols, times k rounded up to 64.
func PackLenInt8(k, n int) int { return int(C.nb_pack_int8_len(C.int64_t(k), C.int64_t(n))) }

// PackInt8 packs the quantised B (k, n) for GemmInt8; the layout of b is
// PackB's.
func PackInt8(bp, b []int8, k, n, ldb int, trans bool) {
	rows, cols := k, n
	if trans {
		rows, cols = n, k
	}
	switch {
	case k < 1 || n < 1:
		panic("native: bad packed operand shape")
	case ldb < cols:
		panic("native: bad leading dimension")
	case len(b) < (rows-1)*ldb+cols:
		panic("native: short operand")
	case len(bp) < PackLenInt8(k, n):
		panic("native: short packed operand")
	}
	C.nb_pack_b_int8((*C.int8_t)(unsafe.Pointer(&b[0])), C.int64_t(k), C.int64_t(n), C.int64_t(ldb), cbool(trans), (*C.int8_t)(unsafe.Pointer(&bp[0])))
}

var amx8 struct {
	once sync.Once
	err  error
}

// AMXInt8 reports whether GemmInt8 runs on AMX tiles here.
func AMXInt8() bool {
	if !cpu.X86.HasAMXTile || !cpu.X86.HasAMXInt8 || Current() < AVX512 {
		return false
	}
	amx8.once.Do(func() { amx8.err = EnableAMX() })
	return amx8.err == nil
}

// GemmInt8 computes columns [j0, j1) of
//
//	c[i·ldc + j−j0] = act(sa·sw[j−j0]·Σ_p qa[i][p]·B[p][j] + bias[j−j0])
//
// with qa = clamp(round(a/sa), 0, 255) (NaN and negatives 0) and B the s8
// operand packed by PackInt8: exact int32 sums, fp32 epilogue. On AMX it
// runs the tile kernel, else a plain-C loop with identical results.
func GemmInt8(c []float32, ldc int, a []float32, lda int, sa float32, bp []int8, sw []float32, k, n, j0, j1, m int, bias []float32, relu bool) {
	gemmInt8(c, ldc, a, lda, sa, bp, sw, k, n, j0, j1, m, bias, relu, AMXInt8())
}

func gemmInt8(c []float32, ldc int, a []float32, lda int, sa float32, bp []int8, sw []float32, k, n, j0, j1, m int, bias []float32, relu, tiles bool) {
	nc := j1 - j0
	switch {
	case k < 1 || n < 1 || m < 0:
		panic("native: bad GEMM shape")
	case j0 < 0 || j0%PanelCols != 0 || j1 < j0 || j1 > n:
		panic("native: bad column range")
	case lda < k || ldc < nc:
		panic("native: bad leading dimension")
	case len(bp) < PackLenInt8(k, n):
		panic("native: short packed operand")
	case len(sw) < nc || (bias != nil && len(bias) < nc):
		panic("native: short scales or bias")
	case !(sa > 0):
		panic("native: activation scale must be positive")
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
	C.nb_gemm_int8(C.int64_t(m), C.int64_t(k), C.int64_t(j0), C.int64_t(j1), f32(a), C.int64_t(lda), C.float(sa),
		(*C.int8_t)(unsafe.Pointer(&bp[0])), f32(sw), bb, cbool(relu), f32(c), C.int64_t(ldc), cbool(tiles))
}
