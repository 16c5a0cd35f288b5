// Package report draws what a NIN sees and how it scores: the class-map
// grid of the paper's figure, and the self-contained HTML report of an
// evaluation or a training run.
package report

import (
	"image/color"
	"math"
)

// viridisStops are matplotlib's viridis, the perceptually uniform colour
// map, at 9 evenly spaced levels; levels between are interpolated.
var viridisStops = [9][3]float64{
	{0x44, 0x01, 0x54}, {0x47, 0x2d, 0x7b}, {0x3b, 0x52, 0x8b}, {0x2c, 0x72, 0x8e}, {0x21, 0x90, 0x8c},
	{0x27, 0xad, 0x81}, {0x5d, 0xc8, 0x63}, {0xaa, 0xdc, 0x32}, {0xfd, 0xe7, 0x25},
}

// viridis is the colour map sampled at 256 levels.
var viridis = func() (lut [256]color.RGBA) {
	for i := range lut {
		x := float64(i) / 255 * 8
		k := min(int(x), 7)
		f := x - float64(k)
		var rgb [3]uint8
		for ch := range rgb {
			rgb[ch] = uint8(math.Round(viridisStops[k][ch]*(1-f) + viridisStops[k+1][ch]*f))
		}
		lut[i] = color.RGBA{rgb[0], rgb[1], rgb[2], 255}
	}
	return lut
}()

// Viridis maps t in [0, 1] (clamped; NaN as 0) to the colour map.
func Viridis(t float64) color.RGBA {
	if !(t > 0) {
		return viridis[0]
	}
	return viridis[int(math.Round(min(t, 1)*255))]
}
