package nin

import (
	"errors"
	"fmt"
	"math"

	"github.com/ninbatch/ninbatch/blas"
)

// Quant is a model's int8 calibration, stored in its .nin file (format
// ninbatch.nin/2): per conv layer, the step of its u8 input and the
// symmetric per-output-channel steps of its s8 weights. The fp32 weights
// stay in the file, so one file runs at every precision; the s8 weights
// are derived from them and the steps, deterministically, when a Net is
// built (blas.QuantizeWeights).
type Quant struct {
	// Method estimates each layer's input range from the calibration
	// histogram: "mse" (the clip that minimises the expected squared
	// error of the quantised activations), "percentile" or "max".
	Method     string  `json:"method"`
	Percentile float64 `json:"percentile,omitempty"` // of Method "percentile"
	// CalibImages is how many images the histograms saw; CalibData names
	// them (the dataset and its fingerprint, for the record).
	CalibImages int          `json:"calib_images"`
	CalibData   string       `json:"calib_data,omitempty"`
	Layers      []QuantLayer `json:"layers"` // one per conv, in order
}

// QuantLayer is one conv layer's calibration.
type QuantLayer struct {
	Name string `json:"name"` // the conv's tensor prefix, "mlpconv2.0"
	// Precision is what the layer runs at under int8: "int8", or "fp32".
	Precision string `json:"precision"`
	// InputMin and InputMax are the extreme input values seen; InputScale
	// the u8 step; WeightScales one s8 step per output channel
	// (max|w|/127). An input after a ReLU (every conv but the first) is
	// ≥ 0: its step is the chosen clip / 255 and its zero point 0. A
	// signed input (the first conv's normalised pixels, affine images of
	// 8-bit values) spans [InputMin, InputMax] in 255 steps, the value 0 at
	// u8 InputZeroPoint.
	InputMin       float32   `json:"input_min,omitempty"`
	InputMax       float32   `json:"input_max"`
	InputScale     float32   `json:"input_scale,omitempty"`
	InputZeroPoint int       `json:"input_zero_point,omitempty"`
	WeightScales   []float32 `json:"weight_scales,omitempty"`
}

// Calibration methods of Quant.Method.
const (
	CalibMSE        = "mse"
	CalibPercentile = "percentile"
	CalibMax        = "max"
)

// validate checks q against the model's convs: one layer each, in order,
// with finite positive steps where the layer runs int8.
func (q *Quant) validate(p *Params) error {
	switch q.Method {
	case CalibMSE, CalibMax:
	case CalibPercentile:
		if !(q.Percentile > 50 && q.Percentile <= 100) {
			return fmt.Errorf("quant: percentile %g must be in (50, 100]", q.Percentile)
		}
	default:
		return fmt.Errorf("quant: method %q: want mse, percentile or max", q.Method)
	}
	if len(q.Layers) != len(p.Convs) {
		return fmt.Errorf("quant: %d layers for %d convs", len(q.Layers), len(p.Convs))
	}
	pos := func(v float32) bool { return v > 0 && !math.IsInf(float64(v), 0) }
	for i, l := range q.Layers {
		c := &p.Convs[i]
		if l.Name != c.Name {
			return fmt.Errorf("quant: layer %d is %q, the model's conv is %q", i, l.Name, c.Name)
		}
		switch l.Precision {
		case PrecisionFP32:
			if l.InputScale != 0 || l.WeightScales != nil {
				return fmt.Errorf("quant: %s runs fp32 but has int8 scales", l.Name)
			}
			continue
		case PrecisionInt8:
		default:
			return fmt.Errorf("quant: %s precision %q: want int8 or fp32", l.Name, l.Precision)
		}
		if !pos(l.InputScale) {
			return fmt.Errorf("quant: %s input_scale %g must be positive and finite", l.Name, l.InputScale)
		}
		if l.InputZeroPoint < 0 || l.InputZeroPoint > 255 {
			return fmt.Errorf("quant: %s input_zero_point %d must be in 0..255", l.Name, l.InputZeroPoint)
		}
		if len(l.WeightScales) != c.Cout {
			return fmt.Errorf("quant: %s has %d weight scales for %d output channels", l.Name, len(l.WeightScales), c.Cout)
		}
		for j, s := range l.WeightScales {
			if !pos(s) {
				return fmt.Errorf("quant: %s weight_scales[%d] = %g must be positive and finite", l.Name, j, s)
			}
		}
	}
	return nil
}

// layer is the calibration of the conv named name, or nil.
func (q *Quant) layer(name string) *QuantLayer {
	if q == nil {
		return nil
	}
	for i := range q.Layers {
		if q.Layers[i].Name == name {
			return &q.Layers[i]
		}
	}
	return nil
}

// Int8Layers names the convs that run int8 under PrecisionInt8.
func (q *Quant) Int8Layers() []string {
	var names []string
	for _, l := range q.Layers {
		if l.Precision == PrecisionInt8 {
			names = append(names, l.Name)
		}
	}
	return names
}

// histBins is the resolution of a calibration histogram: the percentile
// and the mse clip are found to within 1/histBins of the input's range.
const histBins = 2048

// histogram counts non-negative values in histBins bins of width
// 2^exp over [0, histBins·2^exp). A value past the range doubles the width
// (pairs of bins merge) until it fits, so the counts do not depend on the
// order the values came in.
type histogram struct {
	n    [histBins]float64
	zero float64 // values ≤ 0 (and NaN): the kernel maps them to 0, exactly
	exp  int
	max  float32
	min  float32 // the most negative value seen, or 0
	neg  bool    // a negative value was seen
}

func newHistogram() *histogram { return &histogram{exp: -24} }

func (h *histogram) width() float64 { return math.Ldexp(1, h.exp) }

func (h *histogram) add(xs []float32) {
	for _, x := range xs {
		if !(x > 0) {
			if x < 0 {
				h.neg = true
				h.min = min(h.min, x)
			}
			h.zero++
			continue
		}
		if x > h.max {
			h.max = x
			for float64(x) >= histBins*h.width() {
				h.grow()
			}
		}
		h.n[int(float64(x)/h.width())]++
	}
}

func (h *histogram) grow() {
	for i := 0; i < histBins/2; i++ {
		h.n[i] = h.n[2*i] + h.n[2*i+1]
	}
	clear(h.n[histBins/2:])
	h.exp++
}

// clip is the upper end of the range the u8 steps cover, by method.
func (h *histogram) clip(method string, pct float64) float64 {
	if h.max == 0 {
		return 0
	}
	switch method {
	case CalibPercentile:
		total := h.zero
		for _, c := range h.n {
			total += c
		}
		want, run := total*pct/100, h.zero
		for i, c := range h.n {
			if run += c; run >= want {
				return math.Min(float64(i+1)*h.width(), float64(h.max))
			}
		}
		return float64(h.max)
	case CalibMSE:
		return h.mseClip()
	default:
		return float64(h.max)
	}
}

// mseClip is the clip c (a bin edge up to the max) minimising the
// expected squared error of quantising to 255 steps of c/255: each
// positive value below c is off by a uniform rounding error (step²/12),
// each above by its distance to c; zeros are exact. Bin contents are
// taken at their centres.
func (h *histogram) mseClip() float64 {
	w := h.width()
	last := int(float64(h.max) / w)
	best, bestErr := float64(h.max), math.Inf(1)
	// suffix sums of count, count·x and count·x² above each edge
	var cnt, sx, sxx float64
	above := make([][3]float64, last+2)
	for i := last; i >= 0; i-- {
		x := (float64(i) + 0.5) * w
		cnt += h.n[i]
		sx += h.n[i] * x
		sxx += h.n[i] * x * x
		above[i] = [3]float64{cnt, sx, sxx}
	}
	var below float64
	for e := 1; e <= last+1; e++ {
		below += h.n[e-1]
		c := math.Min(float64(e)*w, float64(h.max))
		step := c / 255
		a := above[min(e, last+1)]
		// Σ (x−c)² over the values above c
		clipped := a[2] - 2*c*a[1] + c*c*a[0]
		if err := below*step*step/12 + clipped; err < bestErr {
			best, bestErr = c, err
		}
	}
	return best
}

// Calibrator gathers the histogram of every conv layer's input over
// calibration images, from which Quant derives the activation steps. It
// runs the fp32 network on one core, layer by layer.
type Calibrator struct {
	m      *Model
	net    *Net
	hist   map[string]*histogram
	images int
}

// NewCalibrator builds a calibrator for m taking batches of up to
// maxBatch preprocessed images.
func NewCalibrator(m *Model, maxBatch int) (*Calibrator, error) {
	net, err := NewNet(m, Options{MaxBatch: maxBatch, Threads: 1, Tuning: Tuning{Unfused: true}})
	if err != nil {
		return nil, err
	}
	c := &Calibrator{m: m, net: net, hist: map[string]*histogram{}}
	for _, cv := range m.Params.Convs {
		c.hist[cv.Name] = newHistogram()
	}
	net.observe = func(name string, src []float32) { c.hist[name].add(src) }
	return c, nil
}

// Add runs a batch of preprocessed images (batch, H, W, C) and counts
// every conv's input.
func (c *Calibrator) Add(x []float32, batch int) error {
	probs := make([]float32, batch*c.net.Classes())
	if err := c.net.Forward(x, batch, probs, nil); err != nil {
		return err
	}
	c.images += batch
	return nil
}

// Images is the number of images added so far.
func (c *Calibrator) Images() int { return c.images }

// Close releases the calibrator's network.
func (c *Calibrator) Close() { c.net.Close() }

// Quant derives the calibration: every conv int8 with per-channel weight
// steps; an input seen only ≥ 0 (every conv after a ReLU) gets the step
// clip/255 by method, a signed one (the first conv's pixels) its whole
// range [min, max] in 255 steps with a zero point.
func (c *Calibrator) Quant(method string, pct float64) (*Quant, error) {
	if c.images == 0 {
		return nil, errors.New("calibration saw no images")
	}
	q := &Quant{Method: method, CalibImages: c.images}
	if method == CalibPercentile {
		q.Percentile = pct
	}
	for _, cv := range c.m.Params.Convs {
		h := c.hist[cv.Name]
		l := QuantLayer{Name: cv.Name, Precision: PrecisionInt8, InputMin: h.min, InputMax: h.max, InputScale: 1}
		switch clip := h.clip(method, pct); {
		case h.neg:
			s := (float64(h.max) - float64(h.min)) / 255
			l.InputScale = float32(s)
			l.InputZeroPoint = min(255, int(math.Round(-float64(h.min)/s)))
		case clip > 0:
			l.InputScale = float32(clip / 255)
		}
		l.WeightScales = make([]float32, cv.Cout)
		kk := cv.K * cv.K * cv.Cin
		for j := range l.WeightScales {
			l.WeightScales[j] = blas.WeightScale(cv.W[j*kk : (j+1)*kk])
		}
		q.Layers = append(q.Layers, l)
	}
	if err := q.validate(c.m.Params); err != nil {
		return nil, fmt.Errorf("internal: %w", err)
	}
	return q, nil
}

// CalibrateOn is m with a calibration from n preprocessed images x (the
// model itself when m already has one): what bench measures int8 with on a
// preset's random weights and input.
func CalibrateOn(m *Model, x []float32, n int) (*Model, error) {
	if m.Quant != nil {
		return m, nil
	}
	c, err := NewCalibrator(m, n)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Add(x, n); err != nil {
		return nil, err
	}
	q, err := c.Quant(CalibMSE, 0)
	if err != nil {
		return nil, err
	}
	out := *m
	out.Quant = q
	return &out, nil
}
