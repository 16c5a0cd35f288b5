// Package nativeref is the plain-Go reference for every kernel in package
// native, written straight from the definitions (element by element, float64
// accumulation) for clarity rather than speed. The conformance tests in
// package native compare the C kernels against it.
package nativeref

import "math"

// Geom mirrors native.Geom (kept separate so this package imports nothing).
type Geom struct {
	N, H, W, C int
	K, S, P    int
	OH, OW     int
}

func (g Geom) at(in []float32, img, y, x, c int) (float32, bool) {
	if y < 0 || y >= g.H || x < 0 || x >= g.W {
		return 0, false
	}
	return in[((img*g.H+y)*g.W+x)*g.C+c], true
}

// Im2col: col[rr, (ky·K+kx)·C+c] = in[img, oy·S−P+ky, ox·S−P+kx, c] or 0.
func Im2col(col, in []float32, g Geom, r0, nr int) {
	cols := g.K * g.K * g.C
	for rr := 0; rr < nr; rr++ {
		r := r0 + rr
		img, oy, ox := r/(g.OH*g.OW), (r/g.OW)%g.OH, r%g.OW
		for ky := 0; ky < g.K; ky++ {
			for kx := 0; kx < g.K; kx++ {
				for c := 0; c < g.C; c++ {
					v, _ := g.at(in, img, oy*g.S-g.P+ky, ox*g.S-g.P+kx, c)
					col[rr*cols+(ky*g.K+kx)*g.C+c] = v
				}
			}
		}
	}
}

// Col2im adds every im2col entry back onto the input position it came from.
func Col2im(din, col []float32, g Geom, r0, nr int) {
	cols := g.K * g.K * g.C
	for rr := 0; rr < nr; rr++ {
		r := r0 + rr
		img, oy, ox := r/(g.OH*g.OW), (r/g.OW)%g.OH, r%g.OW
		for ky := 0; ky < g.K; ky++ {
			for kx := 0; kx < g.K; kx++ {
				y, x := oy*g.S-g.P+ky, ox*g.S-g.P+kx
				if y < 0 || y >= g.H || x < 0 || x >= g.W {
					continue
				}
				for c := 0; c < g.C; c++ {
					din[((img*g.H+y)*g.W+x)*g.C+c] += col[rr*cols+(ky*g.K+kx)*g.C+c]
				}
			}
		}
	}
}

// BiasAct: x[r·ld+j] += bias[j] for j < c, then ReLU when relu is set.
func BiasAct(x []float32, rows, c, ld int, bias []float32, relu bool) {
	for r := 0; r < rows; r++ {
		for j := 0; j < c; j++ {
			v := x[r*ld+j] + bias[j]
			if relu && v < 0 {
				v = 0
			}
			x[r*ld+j] = v
		}
	}
}

// window returns Caffe's pooling window [y0, y1) × [x0, x1) clipped to the
// image, and the average-pool divisor (window clipped to [−P, H+P)).
func (g Geom) window(py, px int) (y0, y1, x0, x1, div int) {
	y0, x0 = py*g.S-g.P, px*g.S-g.P
	y1, x1 = min(y0+g.K, g.H+g.P), min(x0+g.K, g.W+g.P)
	div = (y1 - y0) * (x1 - x0)
	return max(y0, 0), min(y1, g.H), max(x0, 0), min(x1, g.W), div
}

// MaxPool is Caffe max pooling; argmax (may be nil) gets the flat input
// index of the first maximum in row-major window order.
func MaxPool(out []float32, argmax []int32, in []float32, g Geom) {
	for img := 0; img < g.N; img++ {
		for py := 0; py < g.OH; py++ {
			for px := 0; px < g.OW; px++ {
				y0, y1, x0, x1, _ := g.window(py, px)
				for c := 0; c < g.C; c++ {
					best, bi := float32(-math.MaxFloat32), -1
					for y := y0; y < y1; y++ {
						for x := x0; x < x1; x++ {
							i := ((img*g.H+y)*g.W+x)*g.C + c
							if in[i] > best {
								best, bi = in[i], i
							}
						}
					}
					o := ((img*g.OH+py)*g.OW+px)*g.C + c
					out[o] = best
					if argmax != nil && bi >= 0 {
						argmax[o] = int32(bi)
					}
				}
			}
		}
	}
}

// AvePool is Caffe average pooling.
func AvePool(out, in []float32, g Geom) {
	for img := 0; img < g.N; img++ {
		for py := 0; py < g.OH; py++ {
			for px := 0; px < g.OW; px++ {
				y0, y1, x0, x1, div := g.window(py, px)
				for c := 0; c < g.C; c++ {
					var s float64
					for y := y0; y < y1; y++ {
						for x := x0; x < x1; x++ {
							s += float64(in[((img*g.H+y)*g.W+x)*g.C+c])
						}
					}
					out[((img*g.OH+py)*g.OW+px)*g.C+c] = float32(s / float64(div))
				}
			}
		}
	}
}

// GAP averages each channel over the hw positions of each image.
func GAP(out, in []float32, n, hw, c int) {
	for img := 0; img < n; img++ {
		for j := 0; j < c; j++ {
			var s float64
			for i := 0; i < hw; i++ {
				s += float64(in[(img*hw+i)*c+j])
			}
			out[img*c+j] = float32(s / float64(hw))
		}
	}
}

// Softmax computes exp(x−max)/Σexp(x−max) per row in float64.
func Softmax(out, in []float32, n, c int) {
	for r := 0; r < n; r++ {
		row := in[r*c : (r+1)*c]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, float64(v))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - m)
		}
		for j, v := range row {
			out[r*c+j] = float32(math.Exp(float64(v)-m) / s)
		}
	}
}

// BiasActBackward: dy = 0 where y <= 0 (relu), db += column sums of dy.
func BiasActBackward(dy, y []float32, rows, c int, db []float32, relu bool) {
	for r := 0; r < rows; r++ {
		for j := 0; j < c; j++ {
			if relu && y[r*c+j] <= 0 {
				dy[r*c+j] = 0
			}
			db[j] += dy[r*c+j]
		}
	}
}

// MaxPoolBackward: din[argmax[i]] += dout[i].
func MaxPoolBackward(din, dout []float32, argmax []int32, g Geom) {
	for i := 0; i < g.N*g.OH*g.OW*g.C; i++ {
		din[argmax[i]] += dout[i]
	}
}

// AvePoolBackward spreads each output gradient over its window.
func AvePoolBackward(din, dout []float32, g Geom) {
	for img := 0; img < g.N; img++ {
		for py := 0; py < g.OH; py++ {
			for px := 0; px < g.OW; px++ {
				y0, y1, x0, x1, div := g.window(py, px)
				for c := 0; c < g.C; c++ {
					v := dout[((img*g.OH+py)*g.OW+px)*g.C+c] / float32(div)
					for y := y0; y < y1; y++ {
						for x := x0; x < x1; x++ {
							din[((img*g.H+y)*g.W+x)*g.C+c] += v
						}
					}
				}
			}
		}
	}
}

// GAPBackward: din[img, i, c] = dout[img, c] / hw.
func GAPBackward(din, dout []float32, n, hw, c int) {
	for img := 0; img < n; img++ {
		for i := 0; i < hw; i++ {
			for j := 0; j < c; j++ {
				din[(img*hw+i)*c+j] = dout[img*c+j] / float32(hw)
			}
		}
	}
}

// SoftmaxXent: probs, dlogits = (probs − onehot)·scale, returns Σ −log p[label].
func SoftmaxXent(probs, dlogits, logits []float32, labels []int32, n, c int, scale float32) float64 {
	Softmax(probs, logits, n, c)
	var loss float64
	for r := 0; r < n; r++ {
		loss -= math.Log(math.Max(float64(probs[r*c+int(labels[r])]), 1e-30))
		for j := 0; j < c; j++ {
			d := float64(probs[r*c+j])
			if j == int(labels[r]) {
				d--
			}
			dlogits[r*c+j] = float32(d * float64(scale))
		}
	}
	return loss
}

// Wino mirrors native.Wino.
type Wino struct {
	G      Geom
	M, A   int
	TH, TW int
}

// WinoIn: v[(ξ·A+ν)·vs + (t−t0)·C + c] = Σ_{k,l} Bᵀ[ξ,k]·d[k,l]·Bᵀ[ν,l], d the A×A patch
// of tile t at rows ty·M−P+k, cols tx·M−P+l (zero outside).
func WinoIn(v, in []float32, w Wino, bt []float32, t0, nt, vs int) {
	g, a := w.G, w.A
	for tt := 0; tt < nt; tt++ {
		t := t0 + tt
		img, ty, tx := t/(w.TH*w.TW), (t/w.TW)%w.TH, t%w.TW
		for c := 0; c < g.C; c++ {
			for xi := 0; xi < a; xi++ {
				for nu := 0; nu < a; nu++ {
					var s float64
					for k := 0; k < a; k++ {
						for l := 0; l < a; l++ {
							d, _ := g.at(in, img, ty*w.M-g.P+k, tx*w.M-g.P+l, c)
							s += float64(bt[xi*a+k]) * float64(d) * float64(bt[nu*a+l])
						}
					}
					v[(xi*a+nu)*vs+tt*g.C+c] = float32(s)
				}
			}
		}
	}
}

// WinoOut: out[img, ty·M+i, tx·M+j, co] = act(Σ_{k,l} Aᵀ[i,k]·X[k,l]·Aᵀ[j,l] + bias[co]),
// X[k,l] = mm[(k·A+l)·ms + (t−t0)·cout + co], for the in-image outputs of tiles [t0, t0+nt).
func WinoOut(out, mm []float32, w Wino, cout, ldo int, at, bias []float32, relu bool, t0, nt, ms int) {
	g, a := w.G, w.A
	for tt := 0; tt < nt; tt++ {
		t := t0 + tt
		img, ty, tx := t/(w.TH*w.TW), (t/w.TW)%w.TH, t%w.TW
		for i := 0; i < w.M; i++ {
			for j := 0; j < w.M; j++ {
				y, x := ty*w.M+i, tx*w.M+j
				if y >= g.OH || x >= g.OW {
					continue
				}
				for co := 0; co < cout; co++ {
					s := float64(bias[co])
					for k := 0; k < a; k++ {
						for l := 0; l < a; l++ {
							s += float64(at[i*a+k]) * float64(mm[(k*a+l)*ms+tt*cout+co]) * float64(at[j*a+l])
						}
					}
					if relu && !(s > 0) {
						s = 0
					}
					out[((img*g.OH+y)*g.OW+x)*ldo+co] = float32(s)
				}
			}
		}
	}
}

// ConvDirect is the textbook convolution: rows [r0, r0+nr) of conv(in) with
// weights w (cout, k·k·c) in OHWI order, plus bias, ReLU when relu, each
// output accumulated in float64.
func ConvDirect(out, in, w, bias []float32, g Geom, cout int, relu bool, r0, nr int) {
	for r := r0; r < r0+nr; r++ {
		img, q := r/(g.OH*g.OW), r%(g.OH*g.OW)
		oy, ox := q/g.OW, q%g.OW
		for o := 0; o < cout; o++ {
			s := float64(bias[o])
			for ky := 0; ky < g.K; ky++ {
				for kx := 0; kx < g.K; kx++ {
					for ci := 0; ci < g.C; ci++ {
						x, ok := g.at(in, img, oy*g.S-g.P+ky, ox*g.S-g.P+kx, ci)
						if ok {
							s += float64(x) * float64(w[o*g.K*g.K*g.C+(ky*g.K+kx)*g.C+ci])
						}
					}
				}
			}
			if relu && s < 0 {
				s = 0
			}
			out[(r-r0)*cout+o] = float32(s)
		}
	}
}

// Gemm is columns [j0, j1) of act(A·B + bias) with B (k, n) given plainly:
// c[i·ldc + j−j0] = act(Σ_p a[i·lda+p]·b[p·n+j] + bias[j−j0]) (bias nil: 0),
// float64 accumulation.
func Gemm(c []float32, ldc int, a []float32, lda int, b []float32, k, n, j0, j1, m int, bias []float32, relu bool) {
	for i := 0; i < m; i++ {
		for j := j0; j < j1; j++ {
			s := 0.0
			for p := 0; p < k; p++ {
				s += float64(a[i*lda+p]) * float64(b[p*n+j])
			}
			if bias != nil {
				s += float64(bias[j-j0])
			}
			if relu && s < 0 {
				s = 0
			}
			c[i*ldc+j-j0] = float32(s)
		}
	}
}
