package pipeline

import (
	"context"
	"time"
)

// inferStage: the only user of the network.
func (s *run) inferStage(ctx context.Context, in <-chan *batch, out chan<- *batch) error {
	defer close(out)
	for b := range in {
		if b.rec != nil {
			ts := time.Now()
			if err := s.Net.ForwardMaps(b.buf.x, b.n, b.buf.probs, nil, b.buf.maps); err != nil {
				b.rec.Release()
				return err
			}
			s.inferNs.Add(int64(time.Since(ts)))
		}
		if err := send(ctx, out, b); err != nil {
			return err
		}
	}
	return nil
}
