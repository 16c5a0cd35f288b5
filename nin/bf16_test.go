package nin

import (
	"bytes"
	"math"
	"testing"

	"github.com/ninbatch/ninbatch/native"
)

// TestForwardBF16Error: bf16 conv GEMMs (AMX) on every preset with random
// weights and inputs against the float64 reference, with Winograd off and
// on, batch split and not: the largest logit error relative to the
// logits' spread and the largest probability error, measured and bounded
// (fp32 stays within 1e-4 in TestForwardMatchesReference).
func TestForwardBF16Error(t *testing.T) {
	if native.BF16Kernel() == "" {
		if _, err := NewNet(randomModel(t, "nin-mnist", 1), Options{Precision: PrecisionBF16}); err == nil {
			t.Fatal("bf16 accepted on a CPU without a bf16 kernel")
		}
		t.Skip("no AVX512_BF16 or AMX-BF16 on this CPU (bf16 is refused, checked)")
	}
	presets := []string{"nin-mnist", "nin-cifar10", "nin-cifar10+fc", "nin-imagenet"}
	if testing.Short() {
		presets = presets[:3]
	}
	for _, name := range presets {
		t.Run(name, func(t *testing.T) {
			m := randomModel(t, name, 11)
			const batch = 2
			x := randomInput(batch, m.Spec.Input.Len(), 5)
			wantL, wantP, spread := refBatch(t, m, x, batch)
			for _, opt := range []Options{
				{MaxBatch: batch, Threads: 2, Precision: PrecisionBF16},
				{MaxBatch: batch, Threads: 1, Precision: PrecisionBF16, Tuning: Tuning{Winograd: WinogradOff}},
				{MaxBatch: batch, Threads: 3, Precision: PrecisionBF16, Tuning: Tuning{Winograd: WinogradOn, Direct: DirectOff}},
			} {
				net, err := NewNet(m, opt)
				if err != nil {
					t.Fatal(err)
				}
				probs := make([]float32, batch*net.Classes())
				logits := make([]float32, batch*net.Classes())
				if err := net.Forward(x, batch, probs, logits); err != nil {
					t.Fatal(err)
				}
				net.Close()
				dl, dp := refError(logits, probs, wantL, wantP)
				t.Logf("%+v: logit error %.2e of spread %.3g (%.3f%%), prob error %.2e", opt.Tuning, dl, spread, 100*dl/spread, dp)
				if dl > 0.03*spread || dp > 0.02 {
					t.Errorf("%+v: bf16 logit error %.3g (spread %.3g), prob error %.3g: beyond the bound (3%%, 0.02)", opt.Tuning, dl, spread, dp)
				}
			}
		})
	}
}

// refBatch is the float64 reference's logits and probabilities for a
// batch, and the largest |logit|: what reduced-precision errors are
// measured against.
func refBatch(t *testing.T, m *Model, x []float32, batch int) (wantL, wantP [][]float64, spread float64) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := m.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	tensors := refParseSafetensors(t, buf.Bytes())
	in := m.Spec.Input.Len()
	for i := 0; i < batch; i++ {
		l, p := refForward(&m.Spec, tensors, x[i*in:(i+1)*in])
		wantL, wantP = append(wantL, l), append(wantP, p)
		for _, v := range l {
			spread = math.Max(spread, math.Abs(v))
		}
	}
	return wantL, wantP, spread
}

// refError is the largest absolute logit and probability error of a batch
// (rows of len(wantL[i]) classes) against the float64 reference.
func refError(logits, probs []float32, wantL, wantP [][]float64) (dl, dp float64) {
	for i := range wantL {
		nc := len(wantL[i])
		for j := range wantL[i] {
			dl = math.Max(dl, math.Abs(float64(logits[i*nc+j])-wantL[i][j]))
			dp = math.Max(dp, math.Abs(float64(probs[i*nc+j])-wantP[i][j]))
		}
	}
	return dl, dp
}
