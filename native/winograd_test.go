package native

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ninbatch/ninbatch/native/nativeref"
)

var winoTiles = [][2]int{{2, 3}, {4, 3}, {2, 5}, {3, 3}, {4, 5}, {6, 3}}

// TestWinoMatrices1D: the generated F(m, r) transforms compute the 1-D
// correlation exactly (to float64 rounding).
func TestWinoMatrices1D(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, mr := range winoTiles {
		m, k := mr[0], mr[1]
		at, g, bt, err := WinoMatrices(m, k)
		if err != nil {
			t.Fatal(err)
		}
		a := m + k - 1
		for trial := 0; trial < 20; trial++ {
			f, d := make([]float64, k), make([]float64, a)
			for i := range f {
				f[i] = r.NormFloat64()
			}
			for i := range d {
				d[i] = r.NormFloat64()
			}
			prod := make([]float64, a)
			for j := 0; j < a; j++ {
				var gf, bd float64
				for l := 0; l < k; l++ {
					gf += g[j*k+l] * f[l]
				}
				for l := 0; l < a; l++ {
					bd += bt[j*a+l] * d[l]
				}
				prod[j] = gf * bd
			}
			for i := 0; i < m; i++ {
				var want, got float64
				for l := 0; l < k; l++ {
					want += f[l] * d[i+l]
				}
				for j := 0; j < a; j++ {
					got += at[i*a+j] * prod[j]
				}
				if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
					t.Fatalf("F(%d,%d): y[%d] = %g, want %g", m, k, i, got, want)
				}
			}
		}
	}
	if _, _, _, err := WinoMatrices(8, 5); err == nil {
		t.Fatal("F(8,5) needs 12 points; want an error")
	}
}

// winoGrid: stride-1 3×3 and 5×5 convs over sizes 1, odd and even, pads
// 0..2, channel counts 1, odd and across the kernels' 64-channel block.
func winoGrid() []Wino {
	var ws []Wino
	for _, n := range []int{1, 2} {
		for _, hw := range [][2]int{{1, 1}, {3, 2}, {5, 5}, {7, 6}, {8, 8}, {13, 13}} {
			for _, c := range []int{1, 3, 70} {
				for _, k := range []int{3, 5} {
					for p := 0; p < 3; p++ {
						oh, ow := OutSize(hw[0], k, 1, p, false), OutSize(hw[1], k, 1, p, false)
						if oh < 1 || ow < 1 {
							continue
						}
						for _, m := range []int{2, 4} {
							if c == 70 && hw[0] > 8 && m == 4 {
								continue // keep the float64 reference quick
							}
							ws = append(ws, NewWino(Geom{N: n, H: hw[0], W: hw[1], C: c, K: k, S: 1, P: p, OH: oh, OW: ow}, m))
						}
					}
				}
			}
		}
	}
	return ws
}

func refWino(w Wino) nativeref.Wino {
	return nativeref.Wino{G: ref(w.G), M: w.M, A: w.A, TH: w.TH, TW: w.TW}
}

func TestWinoInOutConformance(t *testing.T) { eachISA(t, testWinoInOutConformance) }

func testWinoInOutConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	for gi, w := range winoGrid() {
		name := fmt.Sprintf("F(%d,%d) %+v", w.M, w.G.K, w.G)
		at64, _, bt64, err := WinoMatrices(w.M, w.G.K)
		if err != nil {
			t.Fatal(err)
		}
		at, bt := Float32s(at64), Float32s(bt64)
		if gi%2 == 1 {
			// matrices that match no built-in table: the generic
			// (not unrolled) bodies, checked against the same reference
			at[0] *= 1 + 1.0/1024
			bt[0] *= 1 + 1.0/1024
			name += " generic"
		}
		in := randSlice(r, w.G.InLen())
		in0 := slices.Clone(in)
		T := w.Tiles()
		for _, rg := range [][2]int{{0, T}, {T / 3, (T + 1) / 2}} {
			t0, nt := rg[0], rg[1]-rg[0]
			aa := w.A * w.A
			got := randSlice(r, aa*WinoStride(nt, w.G.C)+3)
			want := slices.Clone(got)
			WinoIn(got, in, w, bt, t0, nt)
			nativeref.WinoIn(want, in, refWino(w), bt, t0, nt, WinoStride(nt, w.G.C))
			if i, ok := closeTo(got, want, 2e-5); !ok {
				t.Fatalf("WinoIn %s tiles [%d,+%d): v[%d] = %g, want %g", name, t0, nt, i, got[i], want[i])
			}
			if !slices.Equal(in, in0) {
				t.Fatalf("WinoIn %s modified its input", name)
			}
			cout := w.G.C%5 + 2
			mm := randSlice(r, aa*WinoStride(nt, cout))
			// Random products do not cancel as real ones do: each output
			// sums a·a terms of size up to rowsum(Aᵀ)²·|mm| (19.25² for
			// F(4,5)) in float32, so the rounding error scales with that
			// bound, not with the output (2.7e-5 seen on an output of 0.44).
			outTol := max(2e-5, 1e-7*winoRowSum(at, w.A)*winoRowSum(at, w.A)*maxAbs(mm))
			bias := randSlice(r, cout)
			for _, relu := range []bool{false, true} {
				// ldo > cout: a channel slice of a wider map (the batch-1
				// channel split); the other channels must stay as they are
				for _, ldo := range []int{cout, cout + 3} {
					n := w.G.N * w.G.OH * w.G.OW * ldo
					gotO := randSlice(r, n)
					wantO := slices.Clone(gotO)
					WinoOut(gotO, mm, w, cout, ldo, at, bias, relu, t0, nt)
					nativeref.WinoOut(wantO, mm, refWino(w), cout, ldo, at, bias, relu, t0, nt, WinoStride(nt, cout))
					if i, ok := closeTo(gotO, wantO, outTol); !ok {
						t.Fatalf("WinoOut %s relu=%v ldo=%d tiles [%d,+%d): out[%d] = %g, want %g", name, relu, ldo, t0, nt, i, gotO[i], wantO[i])
					}
				}
			}
		}
	}
}

// TestWinoConvMatchesDirect runs the whole Winograd convolution (filter
// transform, input transform, one product per transform position, output
// transform) and compares it with a float64 direct convolution. It logs
// the worst relative error per tile size: the measured error bound.
func TestWinoConvMatchesDirect(t *testing.T) { eachISA(t, testWinoConvMatchesDirect) }

func testWinoConvMatchesDirect(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	worst := map[string]float64{}
	for _, w := range winoGrid() {
		g := w.G
		cout := 5
		if g.C == 70 {
			cout = 66
		}
		in := randSlice(r, g.InLen())
		wt := randSlice(r, cout*g.K*g.K*g.C)
		bias := randSlice(r, cout)
		at64, g64, bt64, _ := WinoMatrices(w.M, g.K)
		at, bt := Float32s(at64), Float32s(bt64)
		aa, T := w.A*w.A, w.Tiles()
		u := make([]float32, aa*cout*g.C)
		WinoFilter(u, wt, cout, g.K, g.C, g64)
		vs, ms := WinoStride(T, g.C), WinoStride(T, cout)
		v := make([]float32, aa*vs)
		WinoIn(v, in, w, bt, 0, T)
		mm := make([]float32, aa*ms)
		for pos := 0; pos < aa; pos++ {
			for tt := 0; tt < T; tt++ {
				for co := 0; co < cout; co++ {
					var s float32
					for ci := 0; ci < g.C; ci++ {
						s += v[pos*vs+tt*g.C+ci] * u[(pos*cout+co)*g.C+ci]
					}
					mm[pos*ms+tt*cout+co] = s
				}
			}
		}
		out := make([]float32, g.N*g.OH*g.OW*cout)
		WinoOut(out, mm, w, cout, cout, at, bias, false, 0, T)
		// direct convolution in float64; error relative to the output's scale
		var maxAbs, maxErr float64
		for img := 0; img < g.N; img++ {
			for y := 0; y < g.OH; y++ {
				for x := 0; x < g.OW; x++ {
					for co := 0; co < cout; co++ {
						s := float64(bias[co])
						for ky := 0; ky < g.K; ky++ {
							for kx := 0; kx < g.K; kx++ {
								iy, ix := y-g.P+ky, x-g.P+kx
								if iy < 0 || iy >= g.H || ix < 0 || ix >= g.W {
									continue
								}
								for ci := 0; ci < g.C; ci++ {
									s += float64(in[((img*g.H+iy)*g.W+ix)*g.C+ci]) * float64(wt[((co*g.K+ky)*g.K+kx)*g.C+ci])
								}
							}
						}
						got := float64(out[((img*g.OH+y)*g.OW+x)*cout+co])
						maxAbs = math.Max(maxAbs, math.Abs(s))
						maxErr = math.Max(maxErr, math.Abs(got-s))
					}
				}
			}
		}
		rel := maxErr / math.Max(maxAbs, 1e-30)
		key := fmt.Sprintf("F(%dx%d,%dx%d)", w.M, w.M, g.K, g.K)
		worst[key] = math.Max(worst[key], rel)
		if rel > 5e-5 { // measured worst: 4e-7 F(2,3), 7e-6 F(4,3), 6e-6 F(2,5), 1e-5 F(4,5)
			t.Errorf("%s %+v: max error %.3g relative to the output scale", key, g, rel)
		}
	}
	for k, v := range worst {
		t.Logf("%s: worst error %.2e relative to max |output|", k, v)
	}
}

// TestWinoTablesMatchGo: the C kernels run a specialised, constant-folded
// body only when the matrix passed in equals their built-in table bit for
// bit; a table that drifted from WinoMatrices would silently fall back to
// the slow generic body (or, worse, be used for the wrong transform).
func TestWinoTablesMatchGo(t *testing.T) {
	for _, c := range [][2]int{{2, 3}, {2, 5}, {4, 3}, {4, 5}} {
		at, _, bt, err := WinoMatrices(c[0], c[1])
		if err != nil {
			t.Fatal(err)
		}
		for kind, want := range [][]float32{Float32s(at), Float32s(bt)} {
			got := winoTable(kind, c[0], c[1])
			bits := func(x []float32) []uint32 { // memcmp in the C dispatch: -0 ≠ 0
				b := make([]uint32, len(x))
				for i, v := range x {
					b[i] = math.Float32bits(v)
				}
				return b
			}
			if !slices.Equal(bits(got), bits(want)) {
				t.Errorf("F(%d,%d) table %d: C %v, Go %v", c[0], c[1], kind, got, want)
			}
		}
	}
	if winoTable(0, 6, 3) != nil {
		t.Error("F(6,3) has no built-in table")
	}
}

// TestWinoWeightGradMatchesDirect: the Winograd weight gradient (WinoIn of
// the input, WinoDy of the output gradient, one product per position,
// WinoFilterGrad) equals the direct float64 sum
// dw[co,ky,kx,ci] = Σ_{n,y,x} dy[n,y,x,co]·in[n, y−p+ky, x−p+kx, ci]
// within a bound relative to the gradient's scale, over the window grid
// (sizes 1, odd, padded; partial edge tiles; F(2×2) and F(4×4)). The
// products are done in float32 in a tile order split into two chunks, as
// the trainer accumulates them.
func TestWinoWeightGradMatchesDirect(t *testing.T) { eachISA(t, testWinoWeightGradMatchesDirect) }

func testWinoWeightGradMatchesDirect(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	worst := map[string]float64{}
	for _, w := range winoGrid() {
		g := w.G
		cout := 5
		if g.C == 70 {
			cout = 66
		}
		in := randSlice(r, g.InLen())
		dy := randSlice(r, g.N*g.OH*g.OW*cout)
		at64, g64, bt64, _ := WinoMatrices(w.M, g.K)
		at, bt := Float32s(at64), Float32s(bt64)
		aa, T := w.A*w.A, w.Tiles()
		du := make([]float32, aa*cout*g.C)
		for _, ch := range [][2]int{{0, T / 2}, {T / 2, T - T/2}} {
			t0, nt := ch[0], ch[1]
			vs, ys := WinoStride(nt, g.C), WinoStride(nt, cout)
			v := make([]float32, aa*vs)
			yh := make([]float32, aa*ys)
			WinoIn(v, in, w, bt, t0, nt)
			WinoDy(yh, dy, w, cout, at, t0, nt)
			for pos := 0; pos < aa; pos++ {
				for co := 0; co < cout; co++ {
					for ci := 0; ci < g.C; ci++ {
						var s float32
						for tt := 0; tt < nt; tt++ {
							s += yh[pos*ys+tt*cout+co] * v[pos*vs+tt*g.C+ci]
						}
						du[(pos*cout+co)*g.C+ci] += s
					}
				}
			}
		}
		dw := randSlice(r, cout*g.K*g.K*g.C) // WinoFilterGrad adds
		dw0 := slices.Clone(dw)
		WinoFilterGrad(dw, du, cout, g.K, g.C, g64)
		var maxAbs, maxErr float64
		for co := 0; co < cout; co++ {
			for ky := 0; ky < g.K; ky++ {
				for kx := 0; kx < g.K; kx++ {
					for ci := 0; ci < g.C; ci++ {
						var s float64
						for img := 0; img < g.N; img++ {
							for y := 0; y < g.OH; y++ {
								for x := 0; x < g.OW; x++ {
									iy, ix := y-g.P+ky, x-g.P+kx
									if iy < 0 || iy >= g.H || ix < 0 || ix >= g.W {
										continue
									}
									s += float64(dy[((img*g.OH+y)*g.OW+x)*cout+co]) * float64(in[((img*g.H+iy)*g.W+ix)*g.C+ci])
								}
							}
						}
						i := ((co*g.K+ky)*g.K+kx)*g.C + ci
						got := float64(dw[i]) - float64(dw0[i])
						maxAbs = math.Max(maxAbs, math.Abs(s))
						maxErr = math.Max(maxErr, math.Abs(got-s))
					}
				}
			}
		}
		rel := maxErr / math.Max(maxAbs, 1e-30)
		key := fmt.Sprintf("F(%dx%d,%dx%d)", w.M, w.M, g.K, g.K)
		worst[key] = math.Max(worst[key], rel)
		if rel > 1e-4 {
			t.Errorf("%s %+v: weight gradient error %.3g relative to its scale", key, g, rel)
		}
	}
	for k, v := range worst {
		t.Logf("%s: worst weight-gradient error %.2e relative to max |dw|", k, v)
	}
}

// TestWinoFilterConformance: the C filter transform equals the plain-Go
// reference (both sum in double; the float32 results may differ by an ulp),
// and the C filter gradient is its adjoint: <WinoFilter(w), du> =
// <w, WinoFilterGrad(du)> in double, for every tile in use and channel
// counts that are and are not multiples of the 4-channel vector.
func TestWinoFilterConformance(t *testing.T) { eachISA(t, testWinoFilterConformance) }

func testWinoFilterConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	for _, c := range [][2]int{{2, 3}, {2, 5}, {4, 3}, {4, 5}} {
		m, k := c[0], c[1]
		_, g, _, _ := WinoMatrices(m, k)
		a := m + k - 1
		for _, ch := range [][2]int{{1, 1}, {3, 5}, {8, 4}, {7, 13}} {
			cout, cin := ch[0], ch[1]
			w := randSlice(r, cout*k*k*cin)
			got, want := make([]float32, a*a*cout*cin), make([]float32, a*a*cout*cin)
			WinoFilter(got, w, cout, k, cin, g)
			winoFilterRef(want, w, cout, k, cin, g)
			if i, ok := closeTo(got, want, 1e-6); !ok {
				t.Fatalf("F(%d,%d) %dx%d: u[%d] = %g, want %g", m, k, cout, cin, i, got[i], want[i])
			}
			du := randSlice(r, a*a*cout*cin)
			dw := make([]float32, cout*k*k*cin)
			WinoFilterGrad(dw, du, cout, k, cin, g)
			var lhs, rhs, scale float64
			for i := range got {
				lhs += float64(got[i]) * float64(du[i])
				scale += math.Abs(float64(got[i]) * float64(du[i]))
			}
			for i := range w {
				rhs += float64(w[i]) * float64(dw[i])
			}
			if math.Abs(lhs-rhs) > 1e-5*scale {
				t.Fatalf("F(%d,%d) %dx%d: <Gw, du> = %g but <w, Gᵀdu> = %g", m, k, cout, cin, lhs, rhs)
			}
		}
	}
}

// winoRowSum is the largest absolute row sum of the row-major (·, a) matrix at.
func winoRowSum(at []float32, a int) float64 {
	best := 0.0
	for r0 := 0; r0+a <= len(at); r0 += a {
		s := 0.0
		for _, v := range at[r0 : r0+a] {
			s += math.Abs(float64(v))
		}
		best = max(best, s)
	}
	return best
}

func maxAbs(x []float32) float64 {
	m := 0.0
	for _, v := range x {
		m = max(m, math.Abs(float64(v)))
	}
	return m
}
