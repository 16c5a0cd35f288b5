package native

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ninbatch/ninbatch/native/nativeref"
)

// TestConvDirectConformance compares the direct conv with the float64
// reference over the window grid (sizes 1, odd, padded, strided; C = 1, 3,
// 7, 16) and output channel counts around the 8-wide vectors and the
// 96-channel pass (1, 5, 8, 13, 96, 100, 192), on whole outputs and on an
// odd row range, with and without ReLU. Rows outside the range and the
// out slice's tail stay untouched.
func TestConvDirectConformance(t *testing.T) { eachISA(t, testConvDirectConformance) }

func testConvDirectConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	couts := []int{1, 5, 8, 13, 96, 100, 192}
	n := 0
	for gi, g := range windowGrid(false) {
		cout := couts[gi%len(couts)]
		kkc := g.Cols()
		if g.Rows()*kkc*cout > 1<<20 { // keep the float64 reference quick
			cout = couts[gi%4]
		}
		in, w, bias := randSlice(r, g.InLen()), randSlice(r, cout*kkc), randSlice(r, cout)
		in0, w0 := slices.Clone(in), slices.Clone(w)
		wt, ws := DirectWeights(w, cout, kkc)
		rows := g.Rows()
		for _, rg := range [][2]int{{0, rows}, {rows / 3, (rows + 1) / 2}} {
			r0, nr := rg[0], rg[1]-rg[0]
			relu := (gi+r0)%2 == 0
			got := randSlice(r, nr*cout+3)
			want := slices.Clone(got)
			// a scratch full of NaNs: every padded value the kernel reads
			// must be one it wrote (it pads only the rows a call reads)
			pad := make([]float32, DirectPadLen(g))
			for i := range pad {
				pad[i] = float32(math.NaN())
			}
			ConvDirect(got, in, wt, ws, bias, g, cout, relu, r0, nr, pad)
			nativeref.ConvDirect(want, in, w, bias, ref(g), cout, relu, r0, nr)
			// A float32 sum of n = k·k·C + 1 terms is within n·2⁻²⁴·Σ|terms| of
			// the exact sum (the classic bound); Σ|terms| is the reference
			// run on absolute values.
			bound := make([]float32, nr*cout)
			nativeref.ConvDirect(bound, abs(in), abs(w), abs(bias), ref(g), cout, false, r0, nr)
			for i := range bound {
				tol := float64(kkc+1) * 0x1p-24 * float64(bound[i])
				if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= tol) {
					t.Fatalf("%+v cout %d rows [%d,+%d) relu %v: [%d] = %g, want %g (bound %.2g)", g, cout, r0, nr, relu, i, got[i], want[i], tol)
				}
			}
			if !slices.Equal(got[nr*cout:], want[nr*cout:]) {
				t.Fatalf("%+v: wrote past its rows", g)
			}
			n++
		}
		if !slices.Equal(in, in0) || !slices.Equal(w, w0) {
			t.Fatalf("%+v: inputs modified", g)
		}
	}
	if n < 500 {
		t.Fatalf("only %d cases", n)
	}
}

// TestDirectWeightsLayout: OHWI (cout, k·k·c) becomes (k·k·c, ws), zero-padded.
func TestDirectWeightsLayout(t *testing.T) {
	w := []float32{1, 2, 3, 4, 5, 6} // cout 2, kkc 3
	wt, ws := DirectWeights(w, 2, 3)
	want := []float32{1, 4, 0, 0, 0, 0, 0, 0, 2, 5, 0, 0, 0, 0, 0, 0, 3, 6, 0, 0, 0, 0, 0, 0}
	if ws != 8 || !slices.Equal(wt, want) {
		t.Fatalf("ws %d wt %v", ws, wt)
	}
}

func TestConvDirectValidation(t *testing.T) {
	g := Geom{N: 1, H: 4, W: 4, C: 1, K: 3, S: 1, P: 1, OH: 4, OW: 4}
	wt, ws := DirectWeights(make([]float32, 2*9), 2, 9)
	in, b, out, pad := make([]float32, 16), make([]float32, 2), make([]float32, 32), make([]float32, DirectPadLen(g))
	for name, f := range map[string]func(){
		"short in":   func() { ConvDirect(out, in[:15], wt, ws, b, g, 2, true, 0, 16, pad) },
		"short out":  func() { ConvDirect(out[:31], in, wt, ws, b, g, 2, true, 0, 16, pad) },
		"short wt":   func() { ConvDirect(out, in, wt[:8], ws, b, g, 2, true, 0, 16, pad) },
		"short bias": func() { ConvDirect(out, in, wt, ws, b[:1], g, 2, true, 0, 16, pad) },
		"bad rows":   func() { ConvDirect(out, in, wt, ws, b, g, 2, true, 10, 10, pad) },
		"bad stride": func() { ConvDirect(out, in, wt, 4, b, g, 2, true, 0, 16, pad) },
		"short pad":  func() { ConvDirect(out, in, wt, ws, b, g, 2, true, 0, 16, pad[:10]) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func abs(s []float32) []float32 {
	out := make([]float32, len(s))
	for i, v := range s {
		out[i] = float32(math.Abs(float64(v)))
	}
	return out
}
