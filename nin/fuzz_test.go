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
