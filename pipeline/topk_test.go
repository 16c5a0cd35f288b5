package pipeline

import (
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// TestTopKMatchesStableSort: the same indices as a stable descending sort,
// ties and NaN-free repeats included, for k from 1 past the length.
func TestTopKMatchesStableSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	idx := make([]int, 0, 16)
	for trial := 0; trial < 2000; trial++ {
		n := 1 + r.IntN(40)
		p := make([]float32, n)
		for i := range p {
			p[i] = float32(r.IntN(6)) / 5 // many ties
		}
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		sort.SliceStable(want, func(a, b int) bool { return p[want[a]] > p[want[b]] })
		k := 1 + r.IntN(n+2)
		got := topK(idx, p, k)
		if !slices.Equal(got, want[:min(k, n)]) {
			t.Fatalf("p %v k %d: topK %v, stable sort %v", p, k, got, want[:min(k, n)])
		}
	}
}
