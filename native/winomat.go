package native

import (
	"fmt"
	"math"
)

// winoPoints are the Toom-Cook interpolation points, in the order used; the
// point at infinity is always added last.
var winoPoints = []float64{0, 1, -1, 2, -2, 0.5, -0.5}

// WinoMatrices builds the Winograd minimal-filtering transforms F(m, r)
// by Toom-Cook (Lavin & Gray, 2016) from the points 0, ±1, ±2, ±½ and ∞,
// in float64: for the correlation y_i = Σ_k g_k·d_{i+k} (i < m) of an
// a-sample input d, a = m + r − 1,
//
//	y = Aᵀ [ (G g) ⊙ (Bᵀ d) ]
//
// and in 2-D Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A.
//
//	at: (m, a)  g: (a, r)  bt: (a, a), row-major
//
// Derivation: for the linear convolution s = g ∗ h (h of length m) with
// evaluations E_g (a×r), E_h (a×m) at the points and interpolation
// C = V⁻¹ (V the a×a evaluation matrix), s = C[(E_g g) ⊙ (E_h h)]; the
// correlation is its transpose, so Aᵀ = E_hᵀ, G = E_g, Bᵀ = Cᵀ.
func WinoMatrices(m, r int) (at, g, bt []float64, err error) {
	a := m + r - 1
	if m < 1 || r < 1 || a < 2 || a > len(winoPoints)+1 {
		return nil, nil, nil, fmt.Errorf("no Winograd F(%d,%d) with up to %d points", m, r, len(winoPoints)+1)
	}
	pts := winoPoints[:a-1]
	// eval(n) is the (a × n) evaluation matrix of degree n−1 polynomials.
	eval := func(n int) []float64 {
		e := make([]float64, a*n)
		for j, p := range pts {
			for k := 0; k < n; k++ {
				e[j*n+k] = math.Pow(p, float64(k))
			}
		}
		e[(a-1)*n+n-1] = 1 // ∞: the leading coefficient
		return e
	}
	c, err := invert(eval(a), a)
	if err != nil {
		return nil, nil, nil, err
	}
	eh := eval(m)
	at = make([]float64, m*a)
	for i := 0; i < m; i++ {
		for j := 0; j < a; j++ {
			at[i*a+j] = eh[j*m+i]
		}
	}
	bt = make([]float64, a*a)
	for i := 0; i < a; i++ {
		for j := 0; j < a; j++ {
			bt[i*a+j] = c[j*a+i]
		}
	}
	return at, eval(r), bt, nil
}

// invert is Gauss-Jordan elimination with partial pivoting on an n×n matrix.
func invert(x []float64, n int) ([]float64, error) {
	a := append([]float64(nil), x...)
	inv := make([]float64, n*n)
	for i := 0; i < n; i++ {
		inv[i*n+i] = 1
	}
	for col := 0; col < n; col++ {
		piv := col
		for r := col + 1; r < n; r++ {
			if math.Abs(a[r*n+col]) > math.Abs(a[piv*n+col]) {
				piv = r
			}
		}
		if a[piv*n+col] == 0 {
			return nil, fmt.Errorf("singular Winograd interpolation matrix")
		}
		for k := 0; k < n; k++ {
			a[col*n+k], a[piv*n+k] = a[piv*n+k], a[col*n+k]
			inv[col*n+k], inv[piv*n+k] = inv[piv*n+k], inv[col*n+k]
		}
		d := a[col*n+col]
		for k := 0; k < n; k++ {
			a[col*n+k] /= d
			inv[col*n+k] /= d
		}
		for r := 0; r < n; r++ {
			if r == col || a[r*n+col] == 0 {
				continue
			}
			f := a[r*n+col]
			for k := 0; k < n; k++ {
				a[r*n+k] -= f * a[col*n+k]
				inv[r*n+k] -= f * inv[col*n+k]
			}
		}
	}
	return inv, nil
}

// winoFilterRef is the plain-Go reference of WinoFilter (one (co, ci) at a
// time), which TestWinoFilterConformance compares with the C kernel.
func winoFilterRef(u, w []float32, cout, r, cin int, g []float64) {
	a := len(g) / r
	if len(g) != a*r || len(w) < cout*r*r*cin || len(u) < a*a*cout*cin {
		panic("native: bad Winograd filter shapes")
	}
	tmp := make([]float64, a*r) // (a, r): G·w for one (co, ci)
	for co := 0; co < cout; co++ {
		for ci := 0; ci < cin; ci++ {
			wt := func(k, l int) float64 { return float64(w[((co*r+k)*r+l)*cin+ci]) }
			for xi := 0; xi < a; xi++ {
				for l := 0; l < r; l++ {
					var s float64
					for k := 0; k < r; k++ {
						s += g[xi*r+k] * wt(k, l)
					}
					tmp[xi*r+l] = s
				}
			}
			for xi := 0; xi < a; xi++ {
				for nu := 0; nu < a; nu++ {
					var s float64
					for l := 0; l < r; l++ {
						s += tmp[xi*r+l] * g[nu*r+l]
					}
					u[((xi*a+nu)*cout+co)*cin+ci] = float32(s)
				}
			}
		}
	}
}

// Float32s converts a float64 matrix for the kernels.
func Float32s(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}
