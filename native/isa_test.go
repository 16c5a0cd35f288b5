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
