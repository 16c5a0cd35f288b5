package pipeline

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	nbio "github.com/ninbatch/ninbatch/io"
)

// decodeStage preprocesses batches on cfg.Workers long-lived workers, each
// a whole batch at a time, and passes them on in the order read. A file
// that fails here is marked once; what follows of it is dropped.
//
// Buffers are taken from the pool in read order, before a batch reaches a
// worker: the oldest batch in flight then always has one, so a worker that
// runs ahead can never starve the batch the reorderer waits for.
func (s *run) decodeStage(ctx context.Context, in <-chan *batch, out chan<- *batch) error {
	defer close(out)
	g, ctx := errgroup.WithContext(ctx)
	work, done := make(chan *batch, s.cfg.Workers), make(chan *batch, s.cfg.Workers)
	goSafe(g, func() error { return s.dispatch(ctx, in, work) })
	wg, wctx := errgroup.WithContext(ctx)
	for w := 0; w < s.cfg.Workers; w++ {
		goSafe(wg, func() error { return s.decodeWorker(wctx, work, done) })
	}
	goSafe(g, func() error { defer close(done); return wg.Wait() })
	goSafe(g, func() error { return s.reorder(ctx, done, out) })
	err := g.Wait()
	for _, ch := range []chan *batch{work, done} { // left behind by a stage that stopped early
		for b := range ch {
			s.drop(b)
		}
	}
	return err
}

// dispatch numbers the batches and gives each that carries rows an output
// buffer and an input tensor.
func (s *run) dispatch(ctx context.Context, in <-chan *batch, work chan<- *batch) error {
	defer close(work)
	var seq uint64
	for b := range in {
		if b.rec != nil && !b.file.failed.Load() {
			select {
			case b.buf = <-s.pool:
			case <-ctx.Done():
				s.drop(b)
				return ctx.Err()
			}
			select {
			case b.buf.x = <-s.inputs:
			case <-ctx.Done():
				s.drop(b)
				return ctx.Err()
			}
		}
		b.seq = seq
		seq++
		if err := send(ctx, work, b); err != nil {
			s.drop(b)
			return err
		}
	}
	return nil
}

// decodeWorker decodes whole batches with its own scratch image.
func (s *run) decodeWorker(ctx context.Context, work <-chan *batch, done chan<- *batch) error {
	scratch := make([]uint8, s.prep.Len())
	for b := range work {
		if b.buf != nil {
			ts := time.Now()
			b.decodeErr = s.decode(b, scratch)
			s.decodeNs.Add(int64(time.Since(ts)))
		}
		if err := send(ctx, done, b); err != nil {
			s.drop(b)
			return err
		}
	}
	return nil
}

// reorder passes batches on in sequence order and applies the file-failure
// rules, which depend on that order.
func (s *run) reorder(ctx context.Context, done <-chan *batch, out chan<- *batch) error {
	held := map[uint64]*batch{}
	defer func() {
		for _, b := range held {
			s.drop(b)
		}
	}()
	var next uint64
	for b := range done {
		held[b.seq] = b
		for b, ok := held[next]; ok; b, ok = held[next] {
			delete(held, next)
			next++
			pass, err := s.settle(b)
			if err != nil {
				return err
			}
			if pass == nil {
				continue
			}
			if err := send(ctx, out, pass); err != nil {
				s.drop(pass)
				return err
			}
		}
	}
	return nil
}

// settle decides what of b goes on, in read order: nil when b belongs to
// a file that already failed, a failure marker when decoding failed the
// file, an error when the run must stop (--on-error fail).
func (s *run) settle(b *batch) (*batch, error) {
	f := b.file
	switch {
	case b.fail != nil:
		if f.failed.Swap(true) {
			return nil, nil // already marked by the decoder
		}
		return b, nil
	case f.failed.Load():
		s.drop(b)
		return nil, nil
	case b.decodeErr != nil:
		err := b.decodeErr
		s.drop(b)
		if !IsInputError(err) {
			return nil, err
		}
		f.failed.Store(true)
		return &batch{file: f, fail: err}, nil
	}
	return b, nil
}

// drop releases what b holds.
func (s *run) drop(b *batch) {
	if b == nil {
		return
	}
	if b.rec != nil {
		b.rec.Release()
		b.rec = nil
	}
	if b.buf != nil {
		s.release(b.buf)
		b.buf = nil
	}
}

// decode preprocesses b's rows into b.buf.x.
func (s *run) decode(b *batch, scratch []uint8) error {
	col := b.rec.Column(b.file.image.Index)
	ir, err := nbio.NewImageReader(col, b.file.image.Kind)
	if err != nil {
		return &InputError{b.file.in.Path, fmt.Errorf("%s rows %d..%d column %s: %w", b.file.in.Path, b.first, b.first+int64(b.n)-1, b.file.image.Name, err)}
	}
	b.errs = make([]error, b.n)
	sz := s.prep.Len()
	for i := 0; i < b.n; i++ {
		x := b.buf.x[i*sz : (i+1)*sz]
		if err := s.prep.Input(x, scratch, ir.At(i), s.cfg.Shape); err != nil {
			b.errs[i] = err
			clear(x)
		}
	}
	if b.file.image.Kind == nbio.ImageRawF32 {
		s.checkRange(b, ir)
	}
	if s.cfg.OnError == "fail" {
		for i, e := range b.errs {
			if e != nil {
				return &RowError{File: b.file.in.Path, Row: b.first + int64(i), Column: b.file.image.Name, Err: e}
			}
		}
	}
	return nil
}

// checkRange warns when a file's first batch of a float tensor column
// holds only values within 0..1 while the preprocessing expects 0..255
// pixels (PyTorch's ToTensor convention under a /255 model): such rows
// would all score as nearly black images. One batch tells; the rest of the
// file is not scanned again.
func (s *run) checkRange(b *batch, ir *nbio.ImageReader) {
	if !b.file.rangeChecked.CompareAndSwap(false, true) {
		return
	}
	prep := s.prep
	if prep.FloatScale != 0 && prep.FloatScale != 1 || prep.Scale > 0.5 {
		return
	}
	var peak float32
	for i := 0; i < b.n; i++ {
		for _, v := range ir.At(i).F32 {
			peak = max(peak, v)
		}
	}
	if peak > 0 && peak <= 1 {
		s.warn(fmt.Sprintf("%s column %s: float pixels are all within 0..1, but the model scales pixels by %g (it expects 0..255); pass --pixel-range 1 if the tensors hold 0..1 values",
			b.file.in.Path, b.file.image.Name, prep.Scale))
	}
}
