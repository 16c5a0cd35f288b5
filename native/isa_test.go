package native

import (
	"os"
	"testing"
)

// eachISA runs a conformance test once per instruction-set level this CPU
// runs (AVX-512, AVX2, scalar): one suite for every implementation.
func eachISA(t *testing.T, test func(t *testing.T)) {
	for _, isa := range Levels() {
		t.Run(isa.String(), func(t *testing.T) {
			old, err := SetISA(isa)
			if err != nil {
				t.Fatal(err)
			}
			defer SetISA(old)
			test(t)
		})
	}
}

// TestISAForcing: NINBATCH_ISA lowers the level, and a level the CPU lacks
// is refused, never run.
func TestISAForcing(t *testing.T) {
	t.Logf("CPU flags: %s; supported %s, current %s; caches %+v", CPUFlags(), Supported(), Current(), DetectedCaches())
	if os.Getenv("NINBATCH_ISA") == "" && Current() != Supported() {
		t.Fatalf("default level %s, want the widest supported %s", Current(), Supported())
	}
	for _, l := range Levels() {
		old, err := SetISA(l)
		if err != nil || Current() != l {
			t.Fatalf("SetISA(%s): %v, now %s", l, err, Current())
		}
		SetISA(old)
	}
	if Supported() < AVX512 {
		if _, err := SetISA(AVX512); err == nil {
			t.Fatal("AVX-512 accepted on a CPU without it")
		}
	}
	for _, s := range []string{"avx512", "AVX2", "scalar"} {
		if _, err := ParseISA(s); err != nil {
			t.Errorf("ParseISA(%q): %v", s, err)
		}
	}
	if _, err := ParseISA("sse9"); err == nil {
		t.Error("ParseISA accepted sse9")
	}
}

// TestCacheSizes: sysfs sizes parse, the GEMM block follows L2 and the
// weight-gradient chunk L1d.
func TestCacheSizes(t *testing.T) {
	for s, want := range map[string]int{"48K": 48 << 10, "1024K": 1 << 20, "32M": 32 << 20, "x": 0} {
		if got := parseSize(s); got != want {
			t.Errorf("parseSize(%q) = %d, want %d", s, got, want)
		}
	}
	for l2, want := range map[int]int{256 << 10: 64 << 10, 512 << 10: 128 << 10, 1 << 20: 256 << 10, 8 << 20: 512 << 10} {
		if got := gemmBlockBytes(Caches{L2: l2}); got != want {
			t.Errorf("L2 %d KiB: block %d KiB, want %d", l2>>10, got>>10, want>>10)
		}
	}
	for l1, want := range map[int]int{16 << 10: 64, 32 << 10: 128, 48 << 10: 192, 1 << 20: 512} {
		if got := gemmAtBRows(Caches{L1d: l1}); got != want {
			t.Errorf("L1d %d KiB: GemmAtB chunk %d rows, want %d", l1>>10, got, want)
		}
	}
	if c := readCaches(t.TempDir()); c.L2 != 512<<10 {
		t.Errorf("no sysfs: %+v", c)
	}
}
