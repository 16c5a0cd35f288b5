package pipeline

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	nbio "github.com/ninbatch/ninbatch/io"
)

// read streams each unit's record batches under its unit lock. A unit
// another live run holds is put off to the end and waited for; one that
// run finished meanwhile is skipped.
func (s *run) read(ctx context.Context, files []*prepared, out chan<- *batch) error {
	defer close(out)
	var later []*prepared
	for _, f := range files {
		ok, err := s.locks.try(f.rel)
		if err != nil {
			return err
		}
		if !ok {
			later = append(later, f)
			continue
		}
		if err := s.readUnit(ctx, f, out); err != nil {
			return err
		}
	}
	for _, f := range later {
		if err := s.locks.wait(ctx, f.rel); err != nil {
			return err
		}
		if err := s.readUnit(ctx, f, out); err != nil {
			return err
		}
	}
	return nil
}

// readUnit streams one unit whose lock this run holds; the writer
// releases the lock once the unit is committed or recorded as failed.
func (s *run) readUnit(ctx context.Context, f *prepared, out chan<- *batch) error {
	_, statErr := nbio.StatInput(f.out)
	if statErr == nil && !s.cfg.Force {
		if err := s.view.refresh(); err != nil {
			s.locks.unlock(f.rel)
			return err
		}
		if e, ok := s.view.latest[f.rel]; ok {
			if done, _ := finished(f.unit, e, ok, s.Model.ID, s.cfg.columns()); done {
				s.locks.unlock(f.rel)
				s.sum.FilesSkip++
				s.sum.ByOthers++
				return nil
			}
		}
	}
	s.removeTemps(f.out)
	if f.fail != nil {
		return send(ctx, out, &batch{file: f, fail: f.fail})
	}
	if nbio.IsURL(f.out) {
		// a conditional create needs the stale object (another model's, a
		// changed input's, or one whose record a crash lost) gone first
		if statErr == nil {
			if err := removeOutput(f.out); err != nil {
				s.locks.unlock(f.rel)
				return err
			}
		}
	} else if err := os.MkdirAll(filepath.Dir(f.out), 0o755); err != nil {
		return send(ctx, out, &batch{file: f, fail: err})
	}
	src, err := nbio.OpenRowGroups(f.in.Path, nil, s.cfg.Batch, f.rowGroups, s.Mem)
	if err != nil {
		return send(ctx, out, &batch{file: f, fail: &InputError{f.in.Path, err}})
	}
	defer src.Close()
	var row int64
	for !f.failed.Load() {
		rec, err := src.Next()
		if err == io.EOF {
			return send(ctx, out, &batch{file: f})
		}
		if err != nil {
			return send(ctx, out, &batch{file: f, fail: &InputError{f.in.Path, err}})
		}
		if !rec.Schema().Equal(f.schema) {
			rec.Release()
			return send(ctx, out, &batch{file: f, fail: &InputError{f.in.Path, fmt.Errorf("%s: schema changed while reading", f.in.Path)}})
		}
		n := rec.NumRows()
		if err := send(ctx, out, &batch{file: f, rec: rec, first: row, n: int(n)}); err != nil {
			return err
		}
		row += n
	}
	return nil // the decoder failed the file and sent its marker
}
