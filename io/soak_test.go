package nbio

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestFuzzSoak mutates the FuzzOpenInput seeds in-process for a minute
// (NINBATCH_FUZZ_SOAK=1). Unlike go test -fuzz it survives long enough to
// print the stack of a fatal error, and saves the last input it tried.
func TestFuzzSoak(t *testing.T) {
	if os.Getenv("NINBATCH_FUZZ_SOAK") == "" {
		t.Skip()
	}
	MaxImagePixels, MaxAllocation = 1<<20, 64<<20
	seeds := fuzzInputSeeds(t)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	deadline := time.Now().Add(60 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		d := append([]byte(nil), seeds[r.IntN(len(seeds))]...)
		for k := 0; k < 1+r.IntN(8); k++ {
			switch r.IntN(3) {
			case 0:
				d[r.IntN(len(d))] = byte(r.IntN(256))
			case 1:
				i := r.IntN(len(d))
				d[i] ^= 1 << r.IntN(8)
			case 2:
				i := r.IntN(len(d))
				copy(d[i:], []byte{0xff, 0xff, 0xff, 0x7f})
			}
		}
		os.WriteFile(os.TempDir()+"/ninbatch-soak-last", d, 0o644)
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fuzzInputBody(t, d)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			os.WriteFile(os.TempDir()+"/ninbatch-soak-hang", d, 0o644)
			t.Fatalf("hang after %d inputs", n)
		}
		n++
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if a := after.TotalAlloc - before.TotalAlloc; a > 256<<20 {
			// keep the input for a memory profile: allocation is bounded by
			// MaxAllocation per buffer, not per input
			p := fmt.Sprintf("%s/ninbatch-soak-alloc-%d", os.TempDir(), a>>20)
			os.WriteFile(p, d, 0o644)
			t.Logf("input %d allocated %d MB (saved to %s)", n, a>>20, p)
		}
		if n%1000 == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			t.Logf("%d inputs: %d goroutines, heap %d MB", n, runtime.NumGoroutine(), ms.HeapAlloc>>20)
		}
	}
	t.Logf("%d inputs ok", n)
}

// TestHostileInputsAllocateLittle: inputs TestFuzzSoak caught making
// arrow-go allocate 0.5–2 GiB (an IPC message length read from the file)
// are rejected with at most a few MB allocated.
func TestHostileInputsAllocateLittle(t *testing.T) {
	files, _ := filepath.Glob("testdata/hostile/*")
	if len(files) == 0 {
		t.Fatal("no hostile inputs in testdata/hostile")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fuzzInputBody(t, data)
		runtime.ReadMemStats(&after)
		if a := after.TotalAlloc - before.TotalAlloc; a > 16<<20 {
			t.Errorf("%s: allocated %d MB", f, a>>20)
		}
	}
}
