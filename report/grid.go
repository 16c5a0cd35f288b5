package report

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"sort"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/ninbatch/ninbatch/pipeline"
)

// Sample is one image and its class maps, with what the figure says of it.
type Sample = pipeline.MapSample

// Shape is what the samples hold: the network's input H×W×C (Pix) and the
// class maps MapH×MapW×Classes (Maps).
type Shape struct {
	H, W, C          int
	MapH, MapW       int
	MapStride        float64 // map pixel i is centred on input pixel MapOffset + MapStride·i (nin.Spec.MapGrid)
	MapOffset        float64
	Classes          int
	ClassNames       []string // optional, one per class
	MaxClassColumns  int      // above this many classes a row shows its top predictions (default 20)
	TopClassesShown  int      // how many then (default 10, the label added if missing)
	OverlayPerRow    int      // overlay cells per row (default 8)
	OverlayMapWeight float64  // overlay: weight of the map over the image (default 0.55)
}

func (s *Shape) defaults() {
	if s.MaxClassColumns == 0 {
		s.MaxClassColumns = 20
	}
	if s.TopClassesShown == 0 {
		s.TopClassesShown = 10
	}
	if s.OverlayPerRow == 0 {
		s.OverlayPerRow = 8
	}
	if s.OverlayMapWeight == 0 {
		s.OverlayMapWeight = 0.55
	}
}

func (s *Shape) name(k int) string {
	if k < len(s.ClassNames) && s.ClassNames[k] != "" {
		return s.ClassNames[k]
	}
	return fmt.Sprint(k)
}

// cell is the side of one picture: small inputs are enlarged by a whole
// factor (MNIST 28 → 84), large ones shown at 112.
func (s *Shape) cell() int {
	side := max(s.H, s.W)
	if side <= 96 {
		return side * max(1, (80+side-1)/side)
	}
	return 112
}

const (
	gap     = 4  // between cells
	lineH   = 14 // one line of text
	margin  = 8
	frameW  = 2 // the label's frame, drawn in the gap around its cell
	predBar = 4 // the prediction's bar under its map
)

var (
	ink    = color.RGBA{20, 20, 20, 255}
	paper  = color.RGBA{250, 250, 250, 255}
	red    = color.RGBA{220, 40, 40, 255}
	subtle = color.RGBA{110, 110, 110, 255}
)

// Grid draws the paper's figure: one row per sample, the input first, then
// one map per class (upsampled to the input's size, viridis, one scale per
// row so the classes of a row compare), the label's map framed in black and
// the predicted class underlined in red.
func Grid(samples []Sample, sh Shape) *image.RGBA {
	sh.defaults()
	S := sh.cell()
	cols := sh.Classes
	perRowNames := cols > sh.MaxClassColumns
	if perRowNames {
		cols = sh.TopClassesShown + 1
	}
	rowH := lineH + S + predBar + gap
	if perRowNames {
		rowH += lineH
	}
	width := 2*margin + (1+cols)*(S+gap)
	header := lineH + 4
	legend := 2 * lineH
	height := 2*margin + header + len(samples)*rowH + legend
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(paper), image.Point{}, draw.Src)
	y := margin
	label(img, margin, y, "input", ink)
	if !perRowNames {
		for k := 0; k < sh.Classes; k++ {
			label(img, margin+(1+k)*(S+gap), y, clip(sh.name(k), S), ink)
		}
	} else {
		label(img, margin+S+gap, y, fmt.Sprintf("class maps of the %d most likely classes (and the label)", sh.TopClassesShown), ink)
	}
	y += header
	for _, s := range samples {
		caption := fmt.Sprintf("#%d  label %s  pred %s (%.1f%%)", s.Index, sh.name(s.Label), sh.name(s.Pred), 100*s.Prob)
		col := ink
		if s.Pred != s.Label {
			col = red
		}
		label(img, margin, y, caption, col)
		y += lineH
		classes := rowClasses(s, sh, perRowNames)
		if perRowNames {
			for i, k := range classes {
				label(img, margin+(1+i)*(S+gap), y, clip(sh.name(k), S), ink)
			}
			y += lineH
		}
		x := margin
		drawInput(img, x, y, S, s.Pix, sh)
		lo, hi := mapRange(s.Maps)
		for i, k := range classes {
			cx := margin + (1+i)*(S+gap)
			drawMap(img, cx, y, S, s.Maps, k, sh, lo, hi)
			if k == s.Label {
				frame(img, cx-frameW, y-frameW, S+2*frameW, ink) // around the cell, in the gap
			}
			if k == s.Pred {
				fill(img, image.Rect(cx, y+S+1, cx+S, y+S+predBar), red)
			}
		}
		y += S + predBar + gap
	}
	label(img, margin, y+2, "black frame: label   red bar: prediction   maps: viridis (dark low, yellow high), one scale per row", subtle)
	label(img, margin, y+2+lineH, "a map is the class's score at each place; its mean is the class's logit (global average pooling)", subtle)
	return img
}

// Overlay draws each sample's input with its predicted class's map blended
// over it, OverlayPerRow to a row, each map on its own scale.
func Overlay(samples []Sample, sh Shape) *image.RGBA {
	sh.defaults()
	S := sh.cell()
	per := min(sh.OverlayPerRow, max(1, len(samples)))
	rows := (len(samples) + per - 1) / per
	cellW := max(S, 13*7)
	width := 2*margin + per*(cellW+gap)
	rowH := lineH + S + gap
	height := 2*margin + rows*rowH + lineH
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(paper), image.Point{}, draw.Src)
	for i, s := range samples {
		x := margin + (i%per)*(cellW+gap)
		y := margin + (i/per)*rowH
		col := ink
		if s.Pred != s.Label {
			col = red
		}
		label(img, x, y, clip(fmt.Sprintf("%s->%s %.0f%%", sh.name(s.Label), sh.name(s.Pred), 100*s.Prob), cellW), col)
		y += lineH
		lo, hi := classRange(s.Maps, s.Pred, sh.Classes)
		for py := 0; py < S; py++ {
			for px := 0; px < S; px++ {
				g := inputAt(s.Pix, sh, px, py, S)
				m := Viridis((mapAt(s.Maps, s.Pred, sh, px, py, S) - lo) / (hi - lo))
				a := sh.OverlayMapWeight
				img.SetRGBA(x+px, y+py, color.RGBA{
					uint8(math.Round((1-a)*float64(g.R) + a*float64(m.R))),
					uint8(math.Round((1-a)*float64(g.G) + a*float64(m.G))),
					uint8(math.Round((1-a)*float64(g.B) + a*float64(m.B))), 255})
			}
		}
	}
	label(img, margin, height-margin-lineH+2, "label->prediction; the predicted class's map over the image (viridis, yellow high)", subtle)
	return img
}

// rowClasses are the classes a row shows, in column order.
func rowClasses(s Sample, sh Shape, top bool) []int {
	if !top {
		ks := make([]int, sh.Classes)
		for k := range ks {
			ks[k] = k
		}
		return ks
	}
	hw := sh.MapH * sh.MapW
	means := make([]float64, sh.Classes)
	for p := 0; p < hw; p++ {
		for k := range means {
			means[k] += float64(s.Maps[p*sh.Classes+k])
		}
	}
	ks := make([]int, sh.Classes)
	for k := range ks {
		ks[k] = k
	}
	sort.SliceStable(ks, func(a, b int) bool { return means[ks[a]] > means[ks[b]] })
	ks = ks[:sh.TopClassesShown]
	for _, k := range ks {
		if k == s.Label {
			return ks
		}
	}
	return append(ks, s.Label)
}

// mapRange is the smallest and largest value of all of a sample's maps,
// never an empty range.
func mapRange(m []float32) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, v := range m {
		lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
	}
	if !(hi > lo) {
		hi = lo + 1
	}
	return lo, hi
}

func classRange(m []float32, k, classes int) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for i := k; i < len(m); i += classes {
		lo, hi = math.Min(lo, float64(m[i])), math.Max(hi, float64(m[i]))
	}
	if !(hi > lo) {
		hi = lo + 1
	}
	return lo, hi
}

// mapAt samples class k's map bilinearly at output pixel (px, py) of an
// S×S cell, each map pixel at the centre of its receptive field (or, with
// no MapStride, spread evenly over the input).
func mapAt(m []float32, k int, sh Shape, px, py, S int) float64 {
	var u, v float64
	if sh.MapStride > 0 {
		u = ((float64(px)+0.5)*float64(sh.W)/float64(S) - 0.5 - sh.MapOffset) / sh.MapStride
		v = ((float64(py)+0.5)*float64(sh.H)/float64(S) - 0.5 - sh.MapOffset) / sh.MapStride
	} else {
		u = (float64(px)+0.5)*float64(sh.MapW)/float64(S) - 0.5
		v = (float64(py)+0.5)*float64(sh.MapH)/float64(S) - 0.5
	}
	return bilinear(u, v, sh.MapW, sh.MapH, func(x, y int) float64 { return float64(m[(y*sh.MapW+x)*sh.Classes+k]) })
}

// inputAt samples the input image (gray or RGB) at cell pixel (px, py).
func inputAt(pix []uint8, sh Shape, px, py, S int) color.RGBA {
	u := (float64(px)+0.5)*float64(sh.W)/float64(S) - 0.5
	v := (float64(py)+0.5)*float64(sh.H)/float64(S) - 0.5
	var c [3]uint8
	for ch := 0; ch < 3; ch++ {
		src := min(ch, sh.C-1)
		c[ch] = uint8(math.Round(bilinear(u, v, sh.W, sh.H, func(x, y int) float64 { return float64(pix[(y*sh.W+x)*sh.C+src]) })))
	}
	return color.RGBA{c[0], c[1], c[2], 255}
}

func bilinear(u, v float64, w, h int, at func(x, y int) float64) float64 {
	u, v = min(max(u, 0), float64(w-1)), min(max(v, 0), float64(h-1))
	x0, y0 := int(u), int(v)
	x1, y1 := min(x0+1, w-1), min(y0+1, h-1)
	fx, fy := u-float64(x0), v-float64(y0)
	top := at(x0, y0)*(1-fx) + at(x1, y0)*fx
	bot := at(x0, y1)*(1-fx) + at(x1, y1)*fx
	return top*(1-fy) + bot*fy
}

func drawInput(img *image.RGBA, x, y, S int, pix []uint8, sh Shape) {
	for py := 0; py < S; py++ {
		for px := 0; px < S; px++ {
			img.SetRGBA(x+px, y+py, inputAt(pix, sh, px, py, S))
		}
	}
}

func drawMap(img *image.RGBA, x, y, S int, m []float32, k int, sh Shape, lo, hi float64) {
	for py := 0; py < S; py++ {
		for px := 0; px < S; px++ {
			img.SetRGBA(x+px, y+py, Viridis((mapAt(m, k, sh, px, py, S)-lo)/(hi-lo)))
		}
	}
}

func frame(img *image.RGBA, x, y, S int, c color.RGBA) {
	fill(img, image.Rect(x, y, x+S, y+frameW), c)
	fill(img, image.Rect(x, y+S-frameW, x+S, y+S), c)
	fill(img, image.Rect(x, y, x+frameW, y+S), c)
	fill(img, image.Rect(x+S-frameW, y, x+S, y+S), c)
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// label writes one line of text with its top at y.
func label(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13,
		Dot: fixed.P(x, y+basicfont.Face7x13.Ascent)}
	d.DrawString(s)
}

// clip shortens s to fit px pixels of the 7-pixel font.
func clip(s string, px int) string {
	n := max(1, px/7)
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "."
}
