package nbio

import (
	"fmt"
	"math"
)

// Preprocess turns images into a model's input: geometry (resize / crop)
// and colour on uint8 pixels, then Normalize to float32. One
// implementation serves run, eval and train.
type Preprocess struct {
	H, W, C  int    // model input; C is 1 (gray) or 3 (RGB)
	Resize   string // "exact", "shorter" (to ResizeTo, then center crop) or "none"
	ResizeTo int
	Scale    float32
	Mean     []float32 // per channel, nil = 0
	Std      []float32 // per channel, nil = 1
}

// Len is H·W·C.
func (p *Preprocess) Len() int { return p.H * p.W * p.C }

// Fit brings HWC uint8 pixels of any size (with p.C channels) to the model
// size, writing H·W·C bytes into dst.
//
//	exact:   resize to H×W (bilinear, antialiased when shrinking)
//	shorter: resize the shorter side to ResizeTo keeping the aspect ratio,
//	         then take the center H×W crop
//	none:    the image must already be H×W
func (p *Preprocess) Fit(dst, pix []uint8, h, w int) error {
	if h == p.H && w == p.W {
		copy(dst, pix[:p.Len()])
		return nil
	}
	switch p.Resize {
	case "exact":
		resize(dst, pix, h, w, p.H, p.W, p.C)
		return nil
	case "shorter":
		rh, rw := p.ResizeTo, p.ResizeTo
		if h < w {
			rw = int(math.Round(float64(w) * float64(p.ResizeTo) / float64(h)))
		} else {
			rh = int(math.Round(float64(h) * float64(p.ResizeTo) / float64(w)))
		}
		rh, rw = max(rh, p.H), max(rw, p.W)
		tmp := make([]uint8, rh*rw*p.C)
		resize(tmp, pix, h, w, rh, rw, p.C)
		y0, x0 := (rh-p.H)/2, (rw-p.W)/2
		for y := 0; y < p.H; y++ {
			copy(dst[y*p.W*p.C:(y+1)*p.W*p.C], tmp[((y0+y)*rw+x0)*p.C:])
		}
		return nil
	default:
		return fmt.Errorf("image is %dx%d, the model takes %dx%d and its preprocessing does not resize", w, h, p.W, p.H)
	}
}

// Normalize maps model-size uint8 pixels to the float input:
// (v·Scale − Mean[c]) / Std[c].
//
//	src: (H, W, C) uint8  dst: (H, W, C) float32
func (p *Preprocess) Normalize(dst []float32, src []uint8) {
	mul, add := p.affine()
	if p.C == 1 {
		for i, v := range src[:p.Len()] {
			dst[i] = float32(v)*mul[0] + add[0]
		}
		return
	}
	for i := 0; i < p.Len(); i += p.C {
		for c := 0; c < p.C; c++ {
			dst[i+c] = float32(src[i+c])*mul[c] + add[c]
		}
	}
}

// affine folds scale, mean and std into v·mul[c] + add[c] per channel.
func (p *Preprocess) affine() (mul, add [4]float32) {
	for c := 0; c < p.C; c++ {
		mean, std := float32(0), float32(1)
		if p.Mean != nil {
			mean = p.Mean[c]
		}
		if p.Std != nil {
			std = p.Std[c]
		}
		mul[c], add[c] = p.Scale/std, -mean/std
	}
	return mul, add
}

// Image decodes encoded image bytes and brings them to model size.
func (p *Preprocess) Image(dst []uint8, b []byte) error {
	pix, h, w, err := DecodeImage(b, p.C)
	if err != nil {
		return err
	}
	return p.Fit(dst, pix, h, w)
}

// resize is separable bilinear resampling with PIL's antialiasing: when
// shrinking, the triangle filter widens by the scale factor so every source
// pixel contributes.
func resize(dst, src []uint8, h, w, oh, ow, c int) {
	tmp := make([]float32, h*ow*c) // horizontal pass: (h, ow, c)
	xs := filterTaps(w, ow)
	for y := 0; y < h; y++ {
		for x, t := range xs {
			for ch := 0; ch < c; ch++ {
				var s float32
				for k, wt := range t.w {
					s += wt * float32(src[(y*w+t.start+k)*c+ch])
				}
				tmp[(y*ow+x)*c+ch] = s
			}
		}
	}
	ys := filterTaps(h, oh)
	for y, t := range ys {
		for x := 0; x < ow; x++ {
			for ch := 0; ch < c; ch++ {
				var s float32
				for k, wt := range t.w {
					s += wt * tmp[((t.start+k)*ow+x)*c+ch]
				}
				dst[(y*ow+x)*c+ch] = uint8(min(255, max(0, math.Round(float64(s)))))
			}
		}
	}
}

type taps struct {
	start int
	w     []float32
}

func filterTaps(in, out int) []taps {
	scale := float64(in) / float64(out)
	ss := math.Max(scale, 1)
	support := ss // bilinear: support 1 in output units
	res := make([]taps, out)
	for o := range res {
		center := (float64(o) + 0.5) * scale
		lo := max(int(math.Floor(center-support+0.5)), 0)
		hi := min(int(math.Floor(center+support+0.5)), in)
		var ws []float32
		var sum float64
		for x := lo; x < hi; x++ {
			v := 1 - math.Abs((float64(x)-center+0.5)/ss)
			if v < 0 {
				v = 0
			}
			ws = append(ws, float32(v))
			sum += v
		}
		if sum == 0 { // cannot happen for in, out ≥ 1; keep a safe fallback
			lo, ws, sum = min(int(center), in-1), []float32{1}, 1
		}
		for i := range ws {
			ws[i] = float32(float64(ws[i]) / sum)
		}
		res[o] = taps{lo, ws}
	}
	return res
}
