package nbio

import (
	"fmt"
	"math"
	"sync"
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
	// FloatScale multiplies float tensor pixels before Scale: 1 (or 0) for
	// tensors on the 0..255 scale of encoded pixels, 255 for 0..1 tensors.
	FloatScale float32
}

// Len is H·W·C.
func (p *Preprocess) Len() int { return p.H * p.W * p.C }

// Fit brings HWC uint8 pixels of any size (with p.C channels) to the model
// size, writing H·W·C bytes into dst.
//
//	exact:   resize to H×W (bilinear, antialiased when shrinking)
//	shorter: torchvision's Resize(ResizeTo) + CenterCrop(H, W), at every
//	         size (an image already H×W is resized and cropped too): the
//	         shorter side to ResizeTo, the longer to ⌊long·ResizeTo/short⌋,
//	         then the center crop, its offset rounded half to even
//	none:    the image must already be H×W
//
// Only the cropped part of the resized image is computed, and a resize
// target over MaxImagePixels (an extreme aspect ratio: 1×100000 would
// become 256×25,600,000) is an error, so no image asks for more than the
// model's input and its own pixels.
func (p *Preprocess) Fit(dst, pix []uint8, h, w int) error {
	return p.fit(dst, pix, h, w, p.C)
}

// fit is Fit for pixels with c channels (p.C, or 1 for a gray image that
// is expanded later), writing H·W·c bytes.
func (p *Preprocess) fit(dst, pix []uint8, h, w, c int) error {
	switch p.Resize {
	case "exact":
		if h == p.H && w == p.W { // the bilinear filter at scale 1 is the identity
			copy(dst, pix[:p.H*p.W*c])
			return nil
		}
		resizeCrop(dst, pix, h, w, p.H, p.W, 0, 0, p.H, p.W, c)
		return nil
	case "shorter":
		rh, rw := ShorterSide(h, w, p.ResizeTo)
		rh, rw = max(rh, p.H), max(rw, p.W)
		if int64(rh)*int64(rw) > MaxImagePixels {
			return fmt.Errorf("image of %dx%d pixels would be resized to %dx%d before the center crop, over the %d pixel limit (aspect ratio too extreme)", w, h, rw, rh, MaxImagePixels)
		}
		resizeCrop(dst, pix, h, w, rh, rw, centerOffset(rh, p.H), centerOffset(rw, p.W), p.H, p.W, c)
		return nil
	default:
		if h == p.H && w == p.W {
			copy(dst, pix[:p.H*p.W*c])
			return nil
		}
		return fmt.Errorf("image is %dx%d, the model takes %dx%d and its preprocessing does not resize", w, h, p.W, p.H)
	}
}

// ShorterSide is the size torchvision's Resize(to) gives an h×w image: the
// shorter side becomes to, the longer ⌊long·to/short⌋.
func ShorterSide(h, w, to int) (rh, rw int) {
	if h <= w {
		return to, int(int64(w) * int64(to) / int64(h))
	}
	return int(int64(h) * int64(to) / int64(w)), to
}

// centerOffset is torchvision's CenterCrop offset, int(round((n-k)/2))
// with Python's round half to even.
func centerOffset(n, k int) int {
	d := n - k
	q := d / 2
	if d%2 == 1 && q%2 == 1 {
		q++
	}
	return q
}

// normalizeGray is Normalize for a 3-channel model fed gray pixels: each
// gray value stands for an RGB pixel with three equal bytes.
//
//	src: (H, W) uint8  dst: (H, W, 3) float32
func (p *Preprocess) normalizeGray(dst []float32, src []uint8) {
	mul, add := p.affine()
	dst = dst[:3*p.H*p.W]
	for i, v := range src[:p.H*p.W] {
		f := float32(v)
		d := dst[3*i : 3*i+3 : 3*i+3]
		d[0], d[1], d[2] = f*mul[0]+add[0], f*mul[1]+add[1], f*mul[2]+add[2]
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
	if p.C == 3 {
		n := p.Len()
		for i := 0; i < n; i += 3 {
			s, d := src[i:i+3:i+3], dst[i:i+3:i+3]
			d[0], d[1], d[2] = float32(s[0])*mul[0]+add[0], float32(s[1])*mul[1]+add[1], float32(s[2])*mul[2]+add[2]
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
	pc, err := p.image(dst, b)
	if err == nil && pc < p.C {
		expandGray(dst[:p.Len()])
	}
	return err
}

// image is Image, except that a gray image for a 3-channel model is left
// gray: H·W bytes in dst, and pc = 1 (else pc = p.C).
func (p *Preprocess) image(dst []uint8, b []byte) (pc int, err error) {
	pix, h, w, pc, err := decodeImage(b, p.C)
	if err != nil {
		return 0, err
	}
	return pc, p.fit(dst, pix, h, w, pc)
}

// expandGray turns the gray bytes in the first third of rgb into RGB
// pixels in place, back to front so no byte is overwritten before it is
// read.
func expandGray(rgb []uint8) {
	for i := len(rgb)/3 - 1; i >= 0; i-- {
		v := rgb[i]
		rgb[3*i], rgb[3*i+1], rgb[3*i+2] = v, v, v
	}
}

// resize is resizeCrop of the whole h×w → oh×ow image.
func resize(dst, src []uint8, h, w, oh, ow, c int) {
	resizeCrop(dst, src, h, w, oh, ow, 0, 0, oh, ow, c)
}

// resizeCrop writes the ch×cw window at (y0, x0) of the h×w image resized
// to rh×rw: separable bilinear resampling with PIL's antialiasing (when
// shrinking, the triangle filter widens by the scale factor so every
// source pixel contributes). Only the window's taps and the source rows
// they read are computed, so the cost and scratch are bounded by the
// window and the source, never by rh×rw.
//
// The vertical pass accumulates whole rows (every output pixel of a row has
// the same taps), in the same order per pixel as a pixel-by-pixel loop, so
// the result is bit-identical to it (TestResizeMatchesPixelLoop); the taps
// are cached per size and window, and the scratch rows pooled.
func resizeCrop(dst, src []uint8, h, w, rh, rw, y0, x0, ch, cw, c int) {
	xs, ys := filterTapsCached(w, rw, x0, cw), filterTapsCached(h, rh, y0, ch)
	lo, hi := ys[0].start, 0 // the source rows the window reads
	for _, t := range ys {
		lo, hi = min(lo, t.start), max(hi, t.start+len(t.w))
	}
	buf := resizePool.Get().(*[]float32)
	defer resizePool.Put(buf)
	rows := hi - lo
	n := rows*cw*c + cw*c
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	tmp, row := (*buf)[:rows*cw*c], (*buf)[rows*cw*c:n] // (rows, cw, c) horizontal pass; one output row
	for y := lo; y < hi; y++ {
		for x, t := range xs {
			for k := 0; k < c; k++ {
				var s float32
				for j, wt := range t.w {
					s += wt * float32(src[(y*w+t.start+j)*c+k])
				}
				tmp[((y-lo)*cw+x)*c+k] = s
			}
		}
	}
	rwc := cw * c
	for y, t := range ys {
		clear(row)
		for j, wt := range t.w {
			r := t.start + j - lo
			in := tmp[r*rwc : (r+1)*rwc]
			for i, v := range in {
				row[i] += wt * v
			}
		}
		out := dst[y*rwc : (y+1)*rwc]
		for i, s := range row {
			// s ≥ 0 (non-negative taps and pixels), and float64(s)+0.5 is
			// exact, so truncating it is math.Round
			out[i] = uint8(min(255, int(float64(s)+0.5)))
		}
	}
}

var (
	resizePool = sync.Pool{New: func() any { return new([]float32) }}
	tapsMu     sync.Mutex
	tapsCache  = map[[4]int][]taps{} // {in, out, first, n} → taps; bounded by maxTapsCached
)

// maxTapsCached bounds the taps cache: a run's images are mostly a few
// sizes, but an archive of every size must not grow it without end.
const maxTapsCached = 256

// filterTapsCached is filterTaps for outputs first..first+n-1, computed
// once per size and window.
func filterTapsCached(in, out, first, n int) []taps {
	key := [4]int{in, out, first, n}
	tapsMu.Lock()
	t, ok := tapsCache[key]
	tapsMu.Unlock()
	if ok {
		return t
	}
	t = filterTaps(in, out, first, n)
	tapsMu.Lock()
	if len(tapsCache) >= maxTapsCached {
		clear(tapsCache)
	}
	tapsCache[key] = t
	tapsMu.Unlock()
	return t
}

type taps struct {
	start int
	w     []float32
}

// filterTaps are the taps of outputs first..first+n-1 of an in → out
// resize (each output's taps depend only on its own position).
func filterTaps(in, out, first, n int) []taps {
	scale := float64(in) / float64(out)
	ss := math.Max(scale, 1)
	support := ss // bilinear: support 1 in output units
	res := make([]taps, n)
	for i := range res {
		o := first + i
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
		res[i] = taps{lo, ws}
	}
	return res
}
