package native

import (
	"runtime"
	"testing"

	"golang.org/x/sys/cpu"
)

// BenchmarkInstrPeak: register-only throughput of one core for the fp32
// FMA the engine runs on and the bf16 and int8 dot products a reduced
// precision would use (GFLOP/s or GOP/s), to decide which can pay.
func BenchmarkInstrPeak(b *testing.B) {
	for _, c := range []struct {
		name string
		kind int
		has  bool
	}{
		{"fma512", PeakFMA512, cpu.X86.HasAVX512F},
		{"vdpbf16ps", PeakDPBF16, cpu.X86.HasAVX512BF16},
		{"vpdpbusd", PeakDPBUSD, cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512BW},
		{"tdpbf16ps", PeakAMXBF16, cpu.X86.HasAMXTile && cpu.X86.HasAMXBF16},
		{"tdpbssd", PeakAMXInt8, cpu.X86.HasAMXTile && cpu.X86.HasAMXInt8},
	} {
		b.Run(c.name, func(b *testing.B) {
			if !c.has {
				b.Skip("the CPU lacks the instruction")
			}
			if c.kind >= PeakAMXBF16 {
				runtime.LockOSThread() // the tile permission and state are per thread
				defer runtime.UnlockOSThread()
				if err := EnableAMX(); err != nil {
					b.Skip(err)
				}
			}
			const n = 1 << 22
			for i := 0; i < b.N; i++ {
				PeakLoop(c.kind, n)
			}
			b.ReportMetric(PeakOps(c.kind, n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gop/s")
		})
	}
}
