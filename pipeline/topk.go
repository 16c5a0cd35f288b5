package pipeline

// topK writes into idx (len ≥ k) the indices of the k largest values of p,
// largest first, ties to the lower index (the order a stable sort gives):
// one pass per entry, k·len(p) compares, no allocation (k is 1 or --topk,
// a handful, against up to 1000 classes).
func topK(idx []int, p []float32, k int) []int {
	k = min(k, len(p))
	idx = idx[:0]
	for j, v := range p {
		// position of j among the kept entries: after every kept one ≥ v
		pos := len(idx)
		for pos > 0 && p[idx[pos-1]] < v {
			pos--
		}
		if pos >= k {
			continue
		}
		if len(idx) < k {
			idx = append(idx, 0)
		}
		copy(idx[pos+1:], idx[pos:len(idx)-1])
		idx[pos] = j
	}
	return idx
}
