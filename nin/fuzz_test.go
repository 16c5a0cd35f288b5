package nin

import (
	"bytes"
	"testing"
)

func tinyModelBytes(tb testing.TB) []byte {
	s := &Spec{Name: "fuzz", Input: Dims{6, 6, 1}, Pooling: "ceil",
		Blocks: []Block{{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{2, 2}, Pool: &Pool{"max", 3, 2, 0}}, {Kernel: 1, Stride: 1, Channels: []int{3}}}}
	m, err := NewModel(s)
	if err != nil {
		tb.Fatal(err)
	}
	m.Params.InitGaussian(1)
	m.Classes = []string{"a", "b", "c"}
	var buf bytes.Buffer
	if _, err := m.Encode(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzDecodeModel: any byte string is either a valid model or an error;
// never a panic, and a model that loads runs.
func FuzzDecodeModel(f *testing.F) {
	good := tinyModelBytes(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:8])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if layers, _ := m.Spec.Plan(); func() bool { _, macs := Totals(layers); return macs > 1e7 }() {
			return // valid but too slow to run in a fuzz loop
		}
		net, err := NewNet(m, Options{MaxBatch: 1, Threads: 1})
		if err != nil {
			return
		}
		defer net.Close()
		x := make([]float32, net.InputLen())
		p := make([]float32, net.Classes())
		if err := net.Forward(x, 1, p, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzLoadStateDict: any byte string read as a state dict for a fixed spec
// is a model of that spec or an error; never a panic.
func FuzzLoadStateDict(f *testing.F) {
	good := tinyModelBytes(f) // a .nin is a valid state dict of its own spec
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte{})
	m, err := Decode(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeStateDict(bytes.NewReader(data), int64(len(data)), &m.Spec)
		if err != nil {
			return
		}
		if len(got.Params.Data) != len(m.Params.Data) {
			t.Fatalf("%d parameters for a spec of %d", len(got.Params.Data), len(m.Params.Data))
		}
	})
}

// TestStateDictNames: ninbatch's own names match by name, others in
// natural module order; shape mismatches name the tensor and both shapes.
func TestStateDictNames(t *testing.T) {
	good := tinyModelBytes(t)
	m, _ := Decode(bytes.NewReader(good), int64(len(good)))
	got, err := decodeStateDict(bytes.NewReader(good), int64(len(good)), &m.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if !equalFloats(got.Params.Data, m.Params.Data) {
		t.Error("own names: tensors differ")
	}
	for _, c := range []struct{ a, b string }{{"2.0", "10.0"}, {"0.0", "0.2"}, {"net.9.4", "net.10.0"}, {"mlpconv9.0", "mlpconv10.0"}, {"a", "a.0"}} {
		if !naturalLess(c.a, c.b) || naturalLess(c.b, c.a) {
			t.Errorf("naturalLess(%q, %q) wrong", c.a, c.b)
		}
	}
	other := &Spec{Name: "x", Input: Dims{6, 6, 1}, Pooling: "ceil",
		Blocks: []Block{{Kernel: 3, Stride: 1, Pad: 1, Channels: []int{2, 4}}, {Kernel: 1, Stride: 1, Channels: []int{3}}}}
	_, err = decodeStateDict(bytes.NewReader(good), int64(len(good)), other)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("mlpconv1.1.weight has shape [2 2 1 1], the spec's mlpconv1.1.weight needs [4 2 1 1]")) {
		t.Errorf("shape mismatch: %v", err)
	}
}

func equalFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
