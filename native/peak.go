package native

/*
#include "kernels.h"
*/
import "C"

import "fmt"

// Peak instruction kinds for PeakLoop.
const (
	PeakFMA512  = 0 // VFMADD231PS zmm: 32 flops
	PeakDPBF16  = 1 // VDPBF16PS zmm: 32 bf16 products, 64 flops
	PeakDPBUSD  = 2 // VPDPBUSD zmm: 64 u8×s8 products, 128 ops
	PeakAMXBF16 = 3 // TDPBF16PS: 16×16×32 bf16 products, 16384 flops
	PeakAMXInt8 = 4 // TDPBSSD: 16×16×64 s8 products, 32768 ops
)

// PeakLoop issues 12·n instructions of kind from registers only; the
// caller checks that the CPU has them.
func PeakLoop(kind int, n int64) float32 { return float32(C.nb_peak(C.int(kind), C.int64_t(n))) }

// PeakOps is the arithmetic of PeakLoop(kind, n): flops (or integer ops).
func PeakOps(kind int, n int64) float64 {
	switch kind {
	case PeakAMXBF16:
		return 4 * 16384 * float64(n)
	case PeakAMXInt8:
		return 4 * 32768 * float64(n)
	}
	per := map[int]float64{PeakFMA512: 32, PeakDPBF16: 64, PeakDPBUSD: 128}[kind]
	return per * 12 * float64(n)
}

// EnableAMX asks the OS for the AMX tile state; an error when refused.
func EnableAMX() error {
	if r := C.nb_amx_enable(); r != 0 {
		return fmt.Errorf("the kernel refused the AMX tile state (arch_prctl: %d)", int(r))
	}
	return nil
}
