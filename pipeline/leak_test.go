package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// TestRunReleasesEverything: every Arrow buffer a run allocates is
// released — a finished run over every layout with bad rows, a run with a
// file that fails part-way, and a run cancelled in the middle of a file.
func TestRunReleasesEverything(t *testing.T) {
	m := runModel(t)
	data := tinyData(40, 3)
	var pixels [][]uint8
	for i := 0; i < data.N; i++ {
		pixels = append(pixels, data.Pixels[i*144:(i+1)*144])
	}
	dir := t.TempDir()
	var inputs []string
	for lay, name := range layouts {
		p := filepath.Join(dir, name+".parquet")
		bad := map[int]badKind{3: corrupt, 17: null} // encoded layouts
		switch lay {
		case rawU8List, rawF32List:
			bad = map[int]badKind{30: wrongLen}
		case rawU8Fixed:
			bad = nil
		}
		writeInput(t, p, lay, pixels, bad)
		inputs = append(inputs, p)
	}
	broken := filepath.Join(dir, "zz_broken.parquet")
	b, _ := os.ReadFile(inputs[0])
	os.WriteFile(broken, b[:len(b)/2], 0o644) // footer gone: recorded as failed
	inputs = append(inputs, broken)

	for _, c := range []struct {
		name          string
		cancel, panic bool
	}{{"finished", false, false}, {"cancelled", true, false}, {"panicked", false, true}} {
		t.Run(c.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			r := newRunner(t, m, inputs, t.TempDir(), "record", 3)
			r.Mem = mem
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			n := 0
			r.Progress = func(_ string, done, total int64) {
				if n++; n == 3 { // inside the first file
					if c.cancel {
						cancel()
					}
					if c.panic {
						panic("a bug in a stage")
					}
				}
			}
			sum, err := r.Run(ctx)
			var ie *InternalError
			switch {
			case c.cancel && err == nil:
				t.Fatal("cancelled run returned no error")
			case c.panic && (!errors.As(err, &ie) || !strings.Contains(err.Error(), "a bug in a stage") || len(ie.Stack) == 0):
				t.Fatalf("a panicking stage returned %v", err)
			case !c.cancel && !c.panic && (err != nil || sum.FilesFailed != 1 || sum.FilesDone != len(layouts)):
				t.Fatalf("run: %v %+v", err, sum)
			}
			mem.AssertSize(t, 0)
		})
	}
}
