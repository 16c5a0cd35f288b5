package nbio

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestShorterMatchesTorchvision: the "shorter" rule is torchvision's
// Resize(R) + CenterCrop(K) at every size — at, just below and just above
// the model's input, odd crop offsets and both orientations — within ±1 of
// PIL (io/testdata/torchvision, written by scripts/torchvision-goldens.py).
// An image already at the input size is resized and cropped like the rest.
func TestShorterMatchesTorchvision(t *testing.T) {
	dir := filepath.Join("testdata", "torchvision")
	b, err := os.ReadFile(filepath.Join(dir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name     string `json:"name"`
		ResizeTo int    `json:"resize_to"`
		Crop     int    `json:"crop"`
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		in, _ := os.ReadFile(filepath.Join(dir, c.Name+".in.png"))
		wantPNG, _ := os.ReadFile(filepath.Join(dir, c.Name+".want.png"))
		want, h, w, err := DecodeImage(wantPNG, 3)
		if err != nil || h != c.Crop || w != c.Crop {
			t.Fatalf("%s: golden %dx%d %v", c.Name, w, h, err)
		}
		p := &Preprocess{H: c.Crop, W: c.Crop, C: 3, Resize: "shorter", ResizeTo: c.ResizeTo, Scale: 1}
		got := make([]uint8, p.Len())
		if err := p.Pixels(got, ImageValue{Encoded: in}, Shape{}); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		worst, off := 0, 0
		for i := range got {
			d := int(got[i]) - int(want[i])
			if d < 0 {
				d = -d
			}
			worst = max(worst, d)
			if d > 0 {
				off++
			}
		}
		t.Logf("%s: max |diff| %d, %d of %d values differ", c.Name, worst, off, len(got))
		if worst > 1 {
			t.Errorf("%s: differs from torchvision by up to %d", c.Name, worst)
		}
	}
}

// TestExtremeAspectRatioBounded: a 1×100000 image (370 bytes as PNG) under
// nin-imagenet's preprocessing would need a 256×25,600,000 resize; it is
// refused before anything of that size is allocated, and a 1×1000 one (256×256,000) is
// computed through the crop alone, allocating little.
func TestExtremeAspectRatioBounded(t *testing.T) {
	p := &Preprocess{H: 224, W: 224, C: 3, Resize: "shorter", ResizeTo: 256, Scale: 1}
	dst := make([]uint8, p.Len())
	for _, c := range []struct {
		w, h int
		ok   bool
	}{{100000, 1, false}, {1, 100000, false}, {5000, 1, false}, {1000, 1, true}, {1, 1000, true}} {
		png, err := EncodePNG(make([]uint8, c.w*c.h), c.h, c.w, 1)
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		err = p.Pixels(dst, ImageValue{Encoded: png}, Shape{})
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%dx%d: %v, %d KiB allocated, %v", c.w, c.h, err, alloc>>10, time.Since(t0))
		if (err == nil) != c.ok {
			t.Errorf("%dx%d: err %v, want ok=%v", c.w, c.h, err, c.ok)
		}
		if alloc > 64<<20 {
			t.Errorf("%dx%d: allocated %d MiB", c.w, c.h, alloc>>20)
		}
	}
}
