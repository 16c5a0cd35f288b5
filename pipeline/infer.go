package pipeline

import (
	"context"
	"time"

	"github.com/ninbatch/ninbatch/nin"
)

// inferStage: the only user of the network. It keeps up to two batches in
// flight: the next is submitted before the last is waited for, so the
// net's streams go on to it without waiting at the end of each batch for
// the stream the decoders and the writer slowed down. Batches leave in the
// order they came.
func (s *run) inferStage(ctx context.Context, in <-chan *batch, out chan<- *batch) error {
	defer close(out)
	var (
		held *batch // submitted, not yet waited for
		hp   nin.Pending
		hs   time.Time // when held was submitted
		last time.Time // when the batch before held finished
	)
	// pass waits for the held batch, counts the time the net spent on it,
	// and sends it on.
	pass := func() error {
		if held == nil {
			return nil
		}
		b := held
		end := s.Net.Wait(hp)
		held = nil
		s.inputs <- b.buf.x // the writer needs the outputs only
		b.buf.x = nil
		if start := later(hs, last); end.After(start) {
			s.inferNs.Add(int64(end.Sub(start)))
		}
		last = end
		return send(ctx, out, b)
	}
	defer func() {
		if held != nil { // stopped early: the net may still write its buffer
			s.Net.Wait(hp)
			s.drop(held)
		}
	}()
	for b := range in {
		// A unit's end or failure goes on at once, after its batches: the
		// writer commits the unit then, and the reader may be waiting for
		// that commit (a unit another shard's run holds) before it reads on.
		if b.rec == nil {
			if err := pass(); err != nil {
				return err
			}
			if err := send(ctx, out, b); err != nil {
				return err
			}
			continue
		}
		ts := time.Now()
		p, err := s.Net.Submit(b.buf.x, b.n, b.buf.probs, nil, b.buf.maps)
		if err != nil {
			s.drop(b)
			return err
		}
		err = pass()
		held, hp, hs = b, p, ts
		if err != nil {
			return err
		}
	}
	return pass()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
