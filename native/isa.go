package native

/*
#include "kernels.h"
*/
import "C"

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/cpu"
)

// ISA is an instruction-set level of the kernels.
type ISA int

const (
	Scalar ISA = iota // plain C loops
	AVX2              // AVX2 + FMA, 8 floats a vector
	AVX512            // AVX-512 F/BW/VL/DQ, 16 floats a vector
)

func (i ISA) String() string {
	switch i {
	case AVX2:
		return "avx2"
	case AVX512:
		return "avx512"
	}
	return "scalar"
}

// ParseISA reads "scalar", "avx2" or "avx512".
func ParseISA(s string) (ISA, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "scalar":
		return Scalar, nil
	case "avx2":
		return AVX2, nil
	case "avx512", "avx-512":
		return AVX512, nil
	}
	return 0, fmt.Errorf("ISA %q: want avx512, avx2 or scalar", s)
}

// Supported is the widest level this CPU and OS run: CPUID and XGETBV as
// golang.org/x/sys/cpu reads them, and the C side's own check agreeing.
func Supported() ISA {
	top := Scalar
	x := cpu.X86
	switch {
	case x.HasAVX512F && x.HasAVX512BW && x.HasAVX512VL && x.HasAVX512DQ && x.HasFMA:
		top = AVX512
	case x.HasAVX2 && x.HasFMA:
		top = AVX2
	}
	return min(top, ISA(C.nb_isa_supported()))
}

// isaErr is a NINBATCH_ISA the process could not honour; NewNet and the
// trainer return it, so a bad setting is a clear error, never a SIGILL.
var isaErr error

func init() {
	v, ok := os.LookupEnv("NINBATCH_ISA")
	if !ok || v == "" {
		C.nb_set_isa(C.int(Supported()))
		return
	}
	want, err := ParseISA(v)
	if err == nil && want > Supported() {
		err = fmt.Errorf("NINBATCH_ISA=%s: this CPU supports up to %s (flags: %s)", v, Supported(), CPUFlags())
	}
	if err != nil {
		isaErr = fmt.Errorf("NINBATCH_ISA: %w", err)
		want = Supported()
	}
	C.nb_set_isa(C.int(want))
}

// ISAError is the error of an unusable NINBATCH_ISA, or nil.
func ISAError() error { return isaErr }

// Current is the level the kernels run now: the widest supported, or
// NINBATCH_ISA's lower choice.
func Current() ISA { return ISA(C.nb_isa_level()) }

// SetISA makes the kernels run at level (for tests and benchmarks that
// compare levels) and returns the previous one. A level above Supported
// is an error. Not safe while kernels run.
func SetISA(level ISA) (ISA, error) {
	old := Current()
	if level > Supported() || level < Scalar {
		return old, fmt.Errorf("ISA %s is not supported here (up to %s)", level, Supported())
	}
	C.nb_set_isa(C.int(level))
	return old, nil
}

// Levels lists every level this CPU runs, widest first.
func Levels() []ISA {
	var out []ISA
	for l := Supported(); l >= Scalar; l-- {
		out = append(out, l)
	}
	return out
}

// CPUFlags is the CPU's SIMD feature flags that matter to the kernels, as
// printed next to every measured figure.
func CPUFlags() string {
	x := cpu.X86
	var f []string
	for _, c := range []struct {
		ok   bool
		name string
	}{{x.HasAVX2, "avx2"}, {x.HasFMA, "fma"}, {x.HasAVX512F, "avx512f"}, {x.HasAVX512BW, "avx512bw"},
		{x.HasAVX512VL, "avx512vl"}, {x.HasAVX512DQ, "avx512dq"}, {x.HasAVX512VNNI, "avx512vnni"},
		{x.HasAVX512BF16, "avx512bf16"}, {x.HasAVXVNNI, "avxvnni"}} {
		if c.ok {
			f = append(f, c.name)
		}
	}
	if len(f) == 0 {
		return "none"
	}
	return strings.Join(f, " ")
}

// Relax is one step of a spin-wait: a few PAUSE instructions, so a spinning
// thread leaves its core's execution units to the SMT sibling doing work.
func Relax() { C.nb_relax(16) }

// amxOff is NINBATCH_AMX=off: the bf16 and int8 products skip the AMX
// tiles for VDPBF16PS and VPDPBUSD, so those kernels can be run (and
// compared) on a CPU that has both.
var amxOff = func() bool {
	switch v := os.Getenv("NINBATCH_AMX"); v {
	case "", "on", "auto":
		return false
	case "off":
		return true
	default:
		if isaErr == nil {
			isaErr = fmt.Errorf("NINBATCH_AMX=%s: want on or off", v)
		}
		return false
	}
}()

// SetAMX allows (on) or forbids the AMX kernels, as NINBATCH_AMX does, and
// returns the previous setting. Not safe while kernels run.
func SetAMX(on bool) bool {
	old := !amxOff
	amxOff = !on
	return old
}
