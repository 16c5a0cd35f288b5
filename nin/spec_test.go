package nin

import (
	"fmt"
	"strings"
	"testing"
)

// Reference §5: params and MACs per preset, and the per-layer output shapes.
func TestPresetTotals(t *testing.T) {
	cases := []struct {
		name         string
		params, macs int64
		gflop        string
		classes      int
		shapes       []string
	}{
		{"nin-cifar10", 966986, 222486528, "0.445", 10,
			[]string{"32x32x192", "32x32x160", "32x32x96", "16x16x96", "16x16x96", "16x16x192", "16x16x192", "16x16x192", "8x8x192", "8x8x192", "8x8x192", "8x8x192", "8x8x10", "1x1x10", "1x1x10"}},
		{"nin-imagenet", 7595176, 1100188800, "2.200", 1000,
			[]string{"54x54x96", "54x54x96", "54x54x96", "27x27x96", "27x27x256", "27x27x256", "27x27x256", "13x13x256", "13x13x384", "13x13x384", "13x13x384", "6x6x384", "6x6x384", "6x6x1024", "6x6x1024", "6x6x1000", "1x1x1000", "1x1x1000"}},
		{"nin-mnist", 349674, 50699712, "0.101", 10,
			[]string{"28x28x96", "28x28x64", "28x28x48", "14x14x48", "14x14x48", "14x14x128", "14x14x96", "14x14x48", "7x7x48", "7x7x48", "7x7x128", "7x7x96", "7x7x10", "1x1x10", "1x1x10"}},
	}
	for _, c := range cases {
		s, err := Preset(c.name)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := s.Plan()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		p, m := Totals(layers)
		if p != c.params || m != c.macs {
			t.Errorf("%s: params %d macs %d, want %d %d", c.name, p, m, c.params, c.macs)
		}
		if got := fmt.Sprintf("%.3f", 2*float64(m)/1e9); got != c.gflop {
			t.Errorf("%s: %s GFLOP, want %s", c.name, got, c.gflop)
		}
		if s.Classes() != c.classes {
			t.Errorf("%s: classes %d", c.name, s.Classes())
		}
		var shapes []string
		for _, l := range layers {
			shapes = append(shapes, l.Out.String())
		}
		if strings.Join(shapes, " ") != strings.Join(c.shapes, " ") {
			t.Errorf("%s shapes:\n got %v\nwant %v", c.name, shapes, c.shapes)
		}
	}
}

func TestSpecValidation(t *testing.T) {
	base := func() *Spec { s, _ := Preset("nin-mnist"); return s }
	cases := map[string]func(s *Spec){
		"pooling":    func(s *Spec) { s.Pooling = "round" },
		"input":      func(s *Spec) { s.Input.H = 0 },
		"channels":   func(s *Spec) { s.Input.C = 2 },
		"no blocks":  func(s *Spec) { s.Blocks = nil },
		"kernel":     func(s *Spec) { s.Blocks[0].Kernel = 99 },
		"pad":        func(s *Spec) { s.Blocks[0].Pad = 5 },
		"zero ch":    func(s *Spec) { s.Blocks[1].Channels[1] = 0 },
		"huge ch":    func(s *Spec) { s.Blocks[1].Channels[1] = 1 << 30 },
		"pool type":  func(s *Spec) { s.Blocks[0].Pool.Type = "min" },
		"dropout":    func(s *Spec) { s.Blocks[0].Dropout = 1 },
		"too small":  func(s *Spec) { s.Input.H, s.Input.W = 3, 3 },
		"init count": func(s *Spec) { s.Blocks[0].InitStd = []float64{1} },
		"params":     func(s *Spec) { s.Blocks[1].Channels = []int{16384, 16384, 16384} },
		"activation": func(s *Spec) { s.Input.H, s.Input.W = 4096, 4096; s.Blocks[0].Channels[0] = 64 },
		"head":       func(s *Spec) { s.Head = "mlp" },
		"gap drop":   func(s *Spec) { s.HeadDropout = 0.5 },
		"fc drop":    func(s *Spec) { s.Head, s.HeadDropout = HeadFC, 1 },
		"fc square":  func(s *Spec) { s.Head, s.Input.W = HeadFC, 32 },
	}
	for name, mut := range cases {
		s := base()
		mut(s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "spec: ") {
			t.Errorf("%s: error %q lacks context", name, err)
		}
	}
	if _, err := ParseSpec([]byte(`{"name":"x","bogus":1}`)); err == nil {
		t.Error("unknown field accepted")
	}
}

// TestHeads: the fc head adds dropout and one fully connected layer after
// the same body, its parameters counted apart from the body's.
func TestHeads(t *testing.T) {
	for _, c := range []struct {
		preset   string
		fcParams int64 // map H·W·C·classes + classes
	}{
		{"nin-mnist", 7*7*10*10 + 10},
		{"nin-cifar10", 8*8*10*10 + 10},
		{"nin-imagenet", 6*6*1000*1000 + 1000},
	} {
		s, _ := Preset(c.preset)
		gap, _ := s.Plan()
		body, _ := Totals(gap)
		head, fc, err := s.HeadParams()
		if err != nil || head != 0 || fc != c.fcParams {
			t.Errorf("%s gap: head %d, fc would be %d (want %d), %v", c.preset, head, fc, c.fcParams, err)
		}
		s.Head, s.HeadDropout = HeadFC, 0.5
		layers, err := s.Plan()
		if err != nil {
			t.Fatal(err)
		}
		total, _ := Totals(layers)
		if head, fc, _ = s.HeadParams(); head != c.fcParams || fc != head || total != body+head {
			t.Errorf("%s fc: head %d total %d body %d", c.preset, head, total, body)
		}
		var names []string
		for _, l := range layers[len(layers)-4:] {
			names = append(names, l.Name+":"+l.Out.String())
		}
		want := fmt.Sprintf("drop_fc:%s fc:1x1x%d gap:1x1x%d softmax:1x1x%d", layers[len(layers)-5].Out, s.Classes(), s.Classes(), s.Classes())
		if got := strings.Join(names, " "); got != want {
			t.Errorf("%s fc layers %s, want %s", c.preset, got, want)
		}
	}
}

// TestMapGrid: where each preset's class-map pixels sit on the input.
func TestMapGrid(t *testing.T) {
	for _, c := range []struct {
		preset         string
		stride, offset float64
	}{
		{"nin-mnist", 4, 3},                       // 5×5/p2 convs keep the centre; two 3×3/s2 pools: 2(2i+1)+1
		{"nin-cifar10", 4, 3},                     // the same pools
		{"nin-imagenet", 32, 5 + 4*(1+2*(1+2*1))}, // 11×11/s4 conv (centre 5), then three 3×3/s2 pools
	} {
		s, _ := Preset(c.preset)
		st, off, err := s.MapGrid()
		if err != nil || st != c.stride || off != c.offset {
			t.Errorf("%s: map pixel i at input %g·i + %g, want %g·i + %g (%v)", c.preset, st, off, c.stride, c.offset, err)
		}
	}
}
