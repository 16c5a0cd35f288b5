package nin

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ninbatch/ninbatch/native"
)

// calibrated is m with an int8 calibration from n random images.
func calibrated(t *testing.T, m *Model, n int, method string) *Model {
	t.Helper()
	c, err := NewCalibrator(m, n)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Add(randomInput(n, m.Spec.Input.Len(), 77), n); err != nil {
		t.Fatal(err)
	}
	q, err := c.Quant(method, 99.99)
	if err != nil {
		t.Fatal(err)
	}
	out := *m
	out.Quant = q
	return &out
}

// TestForwardInt8Error: int8 convs (AMX) on every preset with random
// weights, calibrated on random images and run on others, against the
// float64 reference: the largest logit error relative to the logits'
// spread and the largest probability error, measured and bounded. Every
// conv runs int8, the first (a signed input) with a zero point. int8 sums are exact, so the outputs are bit-identical whatever the
// threads, micro-batches and splits.
func TestForwardInt8Error(t *testing.T) {
	if native.Int8Kernel() == "" {
		m := calibrated(t, randomModel(t, "nin-mnist", 1), 2, CalibMSE)
		if _, err := NewNet(m, Options{Precision: PrecisionInt8}); err == nil {
			t.Fatal("int8 accepted on a CPU without an int8 kernel")
		}
		t.Skip("no AVX-512 VNNI or AMX-INT8 on this CPU (int8 is refused, checked)")
	}
	presets := []string{"nin-mnist", "nin-cifar10", "nin-cifar10+fc", "nin-imagenet"}
	if testing.Short() {
		presets = presets[:3]
	}
	amx := []bool{true}
	if native.AMXInt8() {
		amx = append(amx, false) // NINBATCH_AMX=off: the VNNI kernel
	}
	for _, name := range presets {
		for _, on := range amx {
			t.Run(fmt.Sprintf("%s/amx-%v", name, on), func(t *testing.T) {
				defer native.SetAMX(native.SetAMX(on))
				checkInt8Preset(t, name)
			})
		}
	}
}

// checkInt8Preset is TestForwardInt8Error on one preset.
func checkInt8Preset(t *testing.T, name string) {
	m := calibrated(t, randomModel(t, name, 11), 6, CalibMSE)
	if got := m.Quant.Int8Layers(); len(got) != len(m.Params.Convs) {
		t.Fatalf("int8 layers %v: want every conv", got)
	}
	if l := m.Quant.Layers[0]; l.InputZeroPoint == 0 || l.InputMin >= 0 {
		t.Fatalf("first conv (signed input): zero point %d, min %g", l.InputZeroPoint, l.InputMin)
	}
	const batch = 3
	x := randomInput(batch, m.Spec.Input.Len(), 5)
	wantL, wantP, spread := refBatch(t, m, x, batch)
	var first []float32
	for _, opt := range []Options{
		{MaxBatch: batch, Threads: 2, Precision: PrecisionInt8},
		{MaxBatch: batch, Threads: 1, Precision: PrecisionInt8, Tuning: Tuning{Unfused: true}},
		{MaxBatch: batch, Threads: 3, Precision: PrecisionInt8, Tuning: Tuning{Direct: DirectOff, MicroBatch: 1}},
		{MaxBatch: batch, Threads: 4, Precision: PrecisionInt8, Tuning: Tuning{Mode: ModeStreams, MicroBatch: 2}},
	} {
		net, err := NewNet(m, opt)
		if err != nil {
			t.Fatal(err)
		}
		if net.ISA() != native.Current().String()+"+"+native.Int8Kernel()+"-int8" || net.Precision() != PrecisionInt8 {
			t.Errorf("isa %q precision %q", net.ISA(), net.Precision())
		}
		probs := make([]float32, batch*net.Classes())
		logits := make([]float32, batch*net.Classes())
		if err := net.Forward(x, batch, probs, logits); err != nil {
			t.Fatal(err)
		}
		net.Close()
		if first == nil {
			first = logits
		} else if !slices.Equal(first, logits) {
			t.Errorf("%+v: int8 logits differ from the first options' (%v against %v)", opt.Tuning, logits[:4], first[:4])
		}
		dl, dp := refError(logits, probs, wantL, wantP)
		t.Logf("%+v: logit error %.2e of spread %.3g (%.3f%%), prob error %.2e", opt.Tuning, dl, spread, 100*dl/spread, dp)
		if dl > 0.05*spread || dp > 0.03 {
			t.Errorf("%+v: int8 logit error %.3g (spread %.3g), prob error %.3g: beyond the bound (5%%, 0.03)", opt.Tuning, dl, spread, dp)
		}
	}
}

// TestInt8Refusals: int8 needs a calibration, and a CPU level with an int8
// kernel (forced avx2 refuses it clearly).
func TestInt8Refusals(t *testing.T) {
	m := randomModel(t, "nin-mnist", 1)
	if _, err := NewNet(m, Options{Precision: PrecisionInt8}); err == nil || !strings.Contains(err.Error(), "ninbatch quantize") {
		t.Fatalf("uncalibrated model at int8: %v", err)
	}
	q := calibrated(t, m, 2, CalibMax)
	old, err := native.SetISA(native.AVX2)
	if err != nil {
		t.Skip("no avx2 here")
	}
	defer native.SetISA(old)
	if _, err := NewNet(q, Options{Precision: PrecisionInt8}); err == nil || !strings.Contains(err.Error(), "VNNI") {
		t.Fatalf("int8 at forced avx2: %v", err)
	}
	if net, err := NewNet(q, Options{}); err != nil { // the calibrated model still runs fp32
		t.Fatal(err)
	} else {
		net.Close()
	}
}

// TestQuantFile: a calibrated model is written as format 2 and reads back
// with the same calibration and content id; a model without one stays
// format 1; damaged calibrations are refused with the field named.
func TestQuantFile(t *testing.T) {
	m := calibrated(t, randomModel(t, "nin-cifar10", 3), 2, CalibPercentile)
	var buf bytes.Buffer
	if _, err := m.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"format":"ninbatch.nin/2"`)) {
		t.Fatal("calibrated model not written as format 2")
	}
	got, err := Decode(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if got.Quant == nil || got.ContentID() != m.ContentID() || !slices.Equal(got.Quant.Layers[3].WeightScales, m.Quant.Layers[3].WeightScales) ||
		got.Quant.Layers[3].InputScale != m.Quant.Layers[3].InputScale {
		t.Fatal("calibration did not survive the file")
	}
	plain := *m
	plain.Quant = nil
	if plain.ContentID() == m.ContentID() {
		t.Error("the calibration does not change the content id")
	}
	var pb bytes.Buffer
	if _, err := plain.Encode(&pb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(pb.Bytes(), []byte(`"format":"ninbatch.nin/1"`)) {
		t.Fatal("model without calibration not written as format 1")
	}
	for _, tc := range []struct{ from, to, want string }{
		{`"format":"ninbatch.nin/2"`, `"format":"ninbatch.nin/1"`, "format"},
		{`"format":"ninbatch.nin/2"`, `"format":"ninbatch.nin/9"`, "newer than this ninbatch"},
		{`\"method\":\"percentile\"`, `\"method\":\"percentilx\"`, "method"},
		{`\"precision\":\"int8\"`, `\"precision\":\"int4\"`, "precision"},
		{`\"name\":\"mlpconv1.1\"`, `\"name\":\"mlpconv1.7\"`, "mlpconv1.7"},
	} {
		b := bytes.Replace(buf.Bytes(), []byte(tc.from), []byte(tc.to), 1)
		if bytes.Equal(b, buf.Bytes()) {
			t.Fatalf("%s not in the file", tc.from)
		}
		// same-length replacements: the header length stays valid
		if _, err := Decode(bytes.NewReader(b), int64(len(b))); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: %v, want an error naming %q", tc.from, tc.to, err, tc.want)
		}
	}
}

// TestHistogram: the calibration histogram's counts do not depend on the
// order of the values; the percentile, max and mse clips fall where a
// known distribution puts them.
func TestHistogram(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	xs := make([]float32, 200000)
	for i := range xs {
		if i%2 == 0 {
			continue // half zeros, as after a ReLU
		}
		xs[i] = float32(r.ExpFloat64()) // exponential: long tail
	}
	xs[7] = 40 // one outlier
	a, b := newHistogram(), newHistogram()
	a.add(xs)
	rev := slices.Clone(xs)
	slices.Reverse(rev)
	for i := 0; i < len(rev); i += 1000 {
		b.add(rev[i:min(i+1000, len(rev))])
	}
	if a.n != b.n || a.max != b.max || a.exp != b.exp || a.zero != b.zero {
		t.Fatal("histogram depends on the order of its values")
	}
	if got := a.clip(CalibMax, 0); got != 40 {
		t.Errorf("max clip %g, want 40", got)
	}
	// the 99.99th percentile of all values is the 99.98th of an Exp(1): ln(5000) = 8.5
	if got := a.clip(CalibPercentile, 99.99); math.Abs(got-math.Log(5000)) > 0.8 {
		t.Errorf("percentile clip %g, want about %.2f", got, math.Log(5000))
	}
	// the mse clip of 10⁵ Exp(1) values at 255 steps: c/(6·255²) = 2e^−c
	// at c ≈ 11.1, near the sample's max (≈ 12); with one far outlier the
	// outlier's squared error outweighs the steps' and the clip goes to it
	if got := a.clip(CalibMSE, 0); got < 30 {
		t.Errorf("mse clip %g with an outlier at 40, want above 30", got)
	}
	xs[7] = 0
	c := newHistogram()
	c.add(xs)
	if got := c.clip(CalibMSE, 0); got < 9 || got > 13 {
		t.Errorf("mse clip %g, want between 9 and 13", got)
	}
	neg := newHistogram()
	neg.add([]float32{1, -0.5})
	if !neg.neg {
		t.Error("a negative value went unnoticed")
	}
}
