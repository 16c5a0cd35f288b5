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
	checkPack(len(bp), PackLenInt8(k, n), len(b), k, n, ldb, trans)
	C.nb_pack_b_int8((*C.int8_t)(unsafe.Pointer(&b[0])), C.int64_t(k), C.int64_t(n), C.int64_t(ldb), cbool(trans), (*C.int8_t)(unsafe.Pointer(&bp[0])))
}

var amx8 struct {
	once sync.Once
	err  error
}

// AMXInt8 reports whether GemmInt8 runs on AMX tiles here.
func AMXInt8() bool {
	if amxOff || !cpu.X86.HasAMXTile || !cpu.X86.HasAMXInt8 || Current() < AVX512 {
		return false
	}
	amx8.once.Do(func() { amx8.err = EnableAMX() })
	return amx8.err == nil
}

// VNNIInt8 reports whether the CPU runs the AVX-512 VNNI int8 kernel
// (VPDPBUSD) at the current level.
func VNNIInt8() bool { return cpu.X86.HasAVX512VNNI && Current() >= AVX512 }

// Int8 kernels: where GemmInt8 runs.
const (
	Int8C    = "c"    // the plain-C loop (tests; far slower than fp32)
	Int8VNNI = "vnni" // AVX-512 VNNI
	Int8AMX  = "amx"  // AMX tiles
)

// Int8Kernel is the fastest int8 kernel this CPU runs at the current
// level, or "" when it has none worth running (GemmInt8 then uses the
// plain-C loop).
func Int8Kernel() string {
	switch {
	case AMXInt8():
		return Int8AMX
	case VNNIInt8():
		return Int8VNNI
	}
	return ""
}

// Int8Kernels lists the int8 kernels this CPU can run, the plain-C loop
// first: what a conformance test covers.
func Int8Kernels() []string {
	ks := []string{Int8C}
	if VNNIInt8() {
		ks = append(ks, Int8VNNI)
	}
	if AMXInt8() {
		ks = append(ks, Int8AMX)
	}
	return ks
}

func int8Path(kernel string) C.int {
	switch kernel {
	case Int8AMX:
		return 2
	case Int8VNNI:
		return 1
	}
	return 0
}

// GemmInt8 computes columns [j0, j1) of
//
//	c[i·ldc + j−j0] = act(sa·sw[j−j0]·Σ_p qa[i][p]·B[p][j] + bias[j−j0] + corr[j−j0])
//
// with qa = clamp(round(a/sa) + zp, 0, 255) (NaN 0) and B the s8 operand
// packed by PackInt8: exact int32 sums, fp32 epilogue. A signed input takes
// a zero point zp, and corr[j] = −zp·sa·sw[j]·Σ_p B[p][j] removes it (nil
// when zp is 0; bias may be nil too). It runs Int8Kernel (AMX tiles, else
// AVX-512 VNNI), else a plain-C loop; all three give identical results.
func GemmInt8(c []float32, ldc int, a []float32, lda int, sa float32, zp int, bp []int8, sw []float32, k, n, j0, j1, m int, bias, corr []float32, relu bool) {
	gemmInt8(c, ldc, a, lda, sa, zp, bp, sw, k, n, j0, j1, m, bias, corr, relu, Int8Kernel())
}

func gemmInt8(c []float32, ldc int, a []float32, lda int, sa float32, zp int, bp []int8, sw []float32, k, n, j0, j1, m int, bias, corr []float32, relu bool, kernel string) {
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
	case len(sw) < nc || (bias != nil && len(bias) < nc) || (corr != nil && len(corr) < nc):
		panic("native: short scales, bias or correction")
	case zp < 0 || zp > 255:
		panic("native: zero point out of 0..255")
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
	var bb, cc *C.float
	if bias != nil {
		bb = f32(bias)
	}
	if corr != nil {
		cc = f32(corr)
	}
	C.nb_gemm_int8(C.int64_t(m), C.int64_t(k), C.int64_t(j0), C.int64_t(j1), f32(a), C.int64_t(lda), C.float(sa), C.int(zp),
		(*C.int8_t)(unsafe.Pointer(&bp[0])), f32(sw), bb, cc, cbool(relu), f32(c), C.int64_t(ldc), int8Path(kernel))
}
