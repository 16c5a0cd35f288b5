package native

/*
#include "kernels.h"
*/
import "C"

// Peak instruction kinds for PeakLoop.
const (
	PeakFMA512  = 0 // VFMADD231PS zmm: 32 flops
	PeakDPBF16  = 1 // VDPBF16PS zmm: 32 bf16 products, 64 flops
	PeakDPBUSD  = 2 // VPDPBUSD zmm: 64 u8×s8 products, 128 ops
	peakPerIter = 12
)

// PeakLoop issues 12·n instructions of kind from registers only; the
// caller checks that the CPU has them.
func PeakLoop(kind int, n int64) float32 { return float32(C.nb_peak(C.int(kind), C.int64_t(n))) }

// PeakOps is the arithmetic of PeakLoop(kind, n): flops (or integer ops).
func PeakOps(kind int, n int64) float64 {
	per := map[int]float64{PeakFMA512: 32, PeakDPBF16: 64, PeakDPBUSD: 128}[kind]
	return per * peakPerIter * float64(n)
}
