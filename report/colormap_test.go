package report

import "testing"

// TestViridis: the ends and middle of matplotlib's table, within 2 levels
// (the middle sits between two table entries),
// and lightness rising monotonically (what makes it perceptually ordered).
func TestViridis(t *testing.T) {
	for _, c := range []struct {
		t       float64
		r, g, b int
	}{{0, 68, 1, 84}, {0.5, 33, 144, 140}, {1, 253, 231, 37}} {
		got := Viridis(c.t)
		for i, want := range []int{c.r, c.g, c.b} {
			have := int([]uint8{got.R, got.G, got.B}[i])
			if have < want-2 || have > want+2 {
				t.Errorf("viridis(%g) = %v, want (%d, %d, %d)", c.t, got, c.r, c.g, c.b)
			}
		}
	}
	prev := -1.0
	for i := 0; i <= 255; i++ {
		c := Viridis(float64(i) / 255)
		l := 0.2126*float64(c.R) + 0.7152*float64(c.G) + 0.0722*float64(c.B)
		if l < prev-0.5 {
			t.Fatalf("luminance falls at level %d: %g after %g", i, l, prev)
		}
		prev = l
	}
}
