package nin

import (
	"math"
	"testing"
)

// Two batches in flight on the streams give what one batch at a time
// gives, bit for bit; a third Submit is refused; a batch-1 call (split
// over the same workers) submitted while they run waits for them and is
// right too; Close with a batch in flight waits for it.
func TestSubmitTwoInFlight(t *testing.T) {
	m := randomModel(t, "nin-mnist", 3)
	net, err := NewNet(m, Options{MaxBatch: 24, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	sizes := []int{24, 17, 1, 24, 3, 2, 9, 1, 1, 24}
	xs := make([][]float32, len(sizes))
	want := make([][]float32, len(sizes))
	for i, n := range sizes {
		xs[i] = randomInput(n, net.InputLen(), uint64(10+i))
		want[i] = make([]float32, n*net.Classes())
		if err := net.Forward(xs[i], n, want[i], nil); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 3; round++ {
		got := make([][]float32, len(sizes))
		var held []Pending
		var heldIdx []int
		for i, n := range sizes {
			got[i] = make([]float32, n*net.Classes())
			for j := range got[i] {
				got[i][j] = float32(math.NaN())
			}
			p, err := net.Submit(xs[i], n, got[i], nil, nil)
			if err != nil {
				t.Fatalf("round %d batch %d: %v", round, i, err)
			}
			held, heldIdx = append(held, p), append(heldIdx, i)
			if len(held) == 2 {
				if n >= 2 && sizes[heldIdx[0]] >= 2 { // both on the streams (2 threads)
					if _, err := net.Submit(xs[i], n, got[i], nil, nil); err == nil {
						t.Fatalf("round %d batch %d: a third batch in flight was accepted", round, i)
					}
				}
				k := round % 2 // wait for the older or the newer first
				net.Wait(held[k])
				held, heldIdx = append(held[:k:k], held[k+1:]...), append(heldIdx[:k:k], heldIdx[k+1:]...)
			}
		}
		for _, p := range held {
			net.Wait(p)
		}
		for i := range sizes {
			for j := range want[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
					t.Fatalf("round %d batch %d (n=%d): probs[%d] = %v, want %v", round, i, sizes[i], j, got[i][j], want[i][j])
				}
			}
		}
	}
	x := randomInput(24, net.InputLen(), 99)
	probs := make([]float32, 24*net.Classes())
	if _, err := net.Submit(x, 24, probs, nil, nil); err != nil {
		t.Fatal(err)
	}
	net.Close() // with the batch in flight
	for i := 0; i < 24; i++ {
		var sum float64
		for _, v := range probs[i*net.Classes() : (i+1)*net.Classes()] {
			sum += float64(v)
		}
		if math.Abs(sum-1) > 1e-4 {
			t.Fatalf("image %d: probs sum to %v after Close: the batch in flight was not finished", i, sum)
		}
	}
}
