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

// PackLenBF16 is the length (bf16 values) of a (k, n) operand packed by
// PackBF16: n rounded up to PanelCols, times k rounded up to 32.
func PackLenBF16(k, n int) int { return int(C.nb_pack_bf16_len(C.int64_t(k), C.int64_t(n))) }

// BF16 rounds f to bfloat16 (nearest even), as the packing does.
func BF16(f float32) uint16 { return uint16(C.nb_bf16(C.float(f))) }

// PackBF16 packs B (k, n) for GemmBF16, rounded to bf16; the layout of b
// is PackB's.
func PackBF16(bp []uint16, b []float32, k, n, ldb int, trans bool) {
	checkPack(len(bp), PackLenBF16(k, n), len(b), k, n, ldb, trans)
	C.nb_pack_b_bf16(f32(b), C.int64_t(k), C.int64_t(n), C.int64_t(ldb), cbool(trans), (*C.uint16_t)(unsafe.Pointer(&bp[0])))
}

var amx struct {
	once sync.Once
	err  error
}

// AMXBF16 reports whether GemmBF16 runs on AMX tiles here: the CPU has
// AMX-BF16 and the OS granted the tile state (asked once per process).
func AMXBF16() bool {
	if amxOff || !cpu.X86.HasAMXTile || !cpu.X86.HasAMXBF16 || !cpu.X86.HasAVX512BF16 || Current() < AVX512 {
		return false
	}
	amx.once.Do(func() { amx.err = EnableAMX() })
	return amx.err == nil
}

// bf16 kernels: where GemmBF16 runs.
const (
	BF16C   = "c"          // the plain-C loop (tests; far slower than fp32)
	BF16DP  = "avx512bf16" // VDPBF16PS (AMD Zen 4/5)
	BF16AMX = "amx"        // AMX tiles
)

// BF16Kernel is the bf16 kernel this CPU runs at the current level: AMX
// tiles where the OS grants them, else VDPBF16PS; "" when it has neither.
func BF16Kernel() string {
	switch {
	case AMXBF16():
		return BF16AMX
	case cpu.X86.HasAVX512BF16 && Current() >= AVX512:
		return BF16DP
	}
	return ""
}

// BF16Kernels lists the bf16 kernels this CPU can run, the plain-C loop
// first: what a conformance test covers.
func BF16Kernels() []string {
	ks := []string{BF16C}
	if cpu.X86.HasAVX512BF16 && Current() >= AVX512 {
		ks = append(ks, BF16DP)
	}
	if AMXBF16() {
		ks = append(ks, BF16AMX)
	}
	return ks
}

// GemmBF16 is GemmPacked with B packed by PackBF16 and A rounded to bf16
// as it is read: fp32 products of bf16 values, fp32 sums, bias and ReLU.
// It runs BF16Kernel, else a plain-C loop (far slower).
func GemmBF16(c []float32, ldc int, a []float32, lda int, bp []uint16, k, n, j0, j1, m int, bias []float32, relu bool) {
	gemmBF16(c, ldc, a, lda, bp, k, n, j0, j1, m, bias, relu, BF16Kernel())
}

func gemmBF16(c []float32, ldc int, a []float32, lda int, bp []uint16, k, n, j0, j1, m int, bias []float32, relu bool, kernel string) {
	nc := j1 - j0
	switch {
	case k < 1 || n < 1 || m < 0:
		panic("native: bad GEMM shape")
	case j0 < 0 || j0%PanelCols != 0 || j1 < j0 || j1 > n:
		panic("native: bad column range")
	case lda < k || ldc < nc:
		panic("native: bad leading dimension")
	case len(bp) < PackLenBF16(k, n):
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
	C.nb_gemm_bf16(C.int64_t(m), C.int64_t(k), C.int64_t(j0), C.int64_t(j1), f32(a), C.int64_t(lda),
		(*C.uint16_t)(unsafe.Pointer(&bp[0])), bb, cbool(relu), f32(c), C.int64_t(ldc), bf16Path(kernel))
}

func bf16Path(kernel string) C.int {
	switch kernel {
	case BF16AMX:
		return 2
	case BF16DP:
		return 1
	}
	return 0
}
