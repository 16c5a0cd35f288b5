package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	nbio "github.com/ninbatch/ninbatch/io"
)

// write appends b's rows with their scores (or errors) to the output.
func (r *run) write(w *nbio.ParquetWriter, b *batch, fs *FileSummary, prep *nbio.Preprocess, cfg RunConfig) error {
	classes := r.Net.Classes()
	n := b.n
	fs.RowsIn += int64(n)
	keep := make([]int, 0, n) // rows that go to the output
	for i := 0; i < n; i++ {
		if b.errs[i] != nil {
			if cfg.OnError == "skip" {
				fs.RowsSkipped++
				continue
			}
			fs.RowsError++
		}
		keep = append(keep, i)
	}
	if len(keep) == 0 {
		return nil
	}
	sc := newScoreCols(r.Mem, b.file.classNames, cfg.TopK, cfg.Maps != "")
	defer sc.release()
	var label func(i int) (int32, error)
	if b.file.labels >= 0 {
		var err error
		if label, err = nbio.LabelsOf(b.rec.Column(b.file.labels), classes, b.file.classNames); err != nil {
			return &InputError{b.file.in.Path, fmt.Errorf("%s: --maps label: column %s: %w", b.file.in.Path, b.rec.ColumnName(b.file.labels), err)}
		}
	}
	ml := r.Net.MapDims().Len()
	for _, i := range keep {
		if e := b.errs[i]; e != nil {
			sc.appendError(r.Model.ID, e)
			continue
		}
		var maps []float32
		mapClass := -1 // the top-1 class
		if b.buf.maps != nil {
			maps = b.buf.maps[i*ml : (i+1)*ml]
		}
		if label != nil {
			k, err := label(i)
			if err != nil { // the scores stand; the row has no label map
				fs.MapsMissing++
				maps = nil
			}
			mapClass = int(k)
		}
		sc.appendScores(r.Model.ID, b.buf.probs[i*classes:(i+1)*classes], maps, mapClass)
	}
	// passthrough columns, filtered to the kept rows
	var cols []arrow.Array
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	for _, ci := range b.file.pass {
		c, err := takeRows(r.Mem, b.rec.Column(ci), keep, n)
		if err != nil {
			return fmt.Errorf("%s column %s: %w", b.file.in.Path, b.rec.ColumnName(ci), err)
		}
		cols = append(cols, c)
	}
	cols = sc.arrays(cols)
	rec := array.NewRecordBatch(b.file.outSchema, cols, int64(len(keep)))
	defer rec.Release()
	if err := w.Write(rec); err != nil {
		return err
	}
	fs.RowsOut += int64(len(keep))
	return nil
}

// scoreCols builds the score columns of one output batch, in the order of
// Runner.scoreFields.
type scoreCols struct {
	names                []string           // class names, or nil: no top1_label, null topk labels
	k                    int                // topk entries (0: no topk column)
	probs, topk, maps    *array.ListBuilder // maps: nil without a map column
	mapV                 *array.Float32Builder
	mapRow               []float32
	probV                *array.Float32Builder
	topkS                *array.StructBuilder
	top1                 *array.Int32Builder
	top1p                *array.Float32Builder
	label, modelID, errs *array.StringBuilder
	order                []int
}

func newScoreCols(mem memory.Allocator, names []string, k int, maps bool) *scoreCols {
	s := &scoreCols{names: names, k: k, order: make([]int, 0, max(k, 1)),
		probs: array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32), topk: array.NewListBuilder(mem, topkType.Elem()),
		top1: array.NewInt32Builder(mem), top1p: array.NewFloat32Builder(mem),
		label: array.NewStringBuilder(mem), modelID: array.NewStringBuilder(mem), errs: array.NewStringBuilder(mem)}
	s.probV = s.probs.ValueBuilder().(*array.Float32Builder)
	s.topkS = s.topk.ValueBuilder().(*array.StructBuilder)
	if maps {
		s.maps = array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
		s.mapV = s.maps.ValueBuilder().(*array.Float32Builder)
	}
	return s
}

func (s *scoreCols) release() {
	for _, b := range []array.Builder{s.probs, s.topk, s.top1, s.top1p, s.label, s.modelID, s.errs} {
		b.Release()
	}
	if s.maps != nil {
		s.maps.Release()
	}
}

// appendError adds a row that could not be scored: null scores, the reason.
func (s *scoreCols) appendError(modelID string, e error) {
	s.modelID.Append(modelID)
	s.probs.AppendNull()
	s.top1.AppendNull()
	s.top1p.AppendNull()
	s.label.AppendNull()
	s.topk.AppendNull()
	if s.maps != nil {
		s.maps.AppendNull()
	}
	s.errs.Append(e.Error())
}

// appendScores adds a scored row with probabilities p and, with a map
// column, class k's map out of maps (k < 0: the top-1 class's; maps nil:
// a null map).
//
//	maps: (mapH·mapW, classes)
func (s *scoreCols) appendScores(modelID string, p, maps []float32, k int) {
	s.modelID.Append(modelID)
	s.errs.AppendNull()
	s.probs.Append(true)
	s.probV.AppendValues(p, nil)
	s.order = topK(s.order, p, max(s.k, 1))
	best := s.order[0]
	if s.maps != nil {
		if k < 0 {
			k = best
		}
		if maps == nil {
			s.maps.AppendNull()
		} else {
			c := len(p)
			s.mapRow = s.mapRow[:0]
			for i := k; i < len(maps); i += c {
				s.mapRow = append(s.mapRow, maps[i])
			}
			s.maps.Append(true)
			s.mapV.AppendValues(s.mapRow, nil)
		}
	}
	s.top1.Append(int32(best))
	s.top1p.Append(p[best])
	if s.names != nil {
		s.label.Append(s.names[best])
	}
	if s.k == 0 {
		return
	}
	s.topk.Append(true)
	for _, c := range s.order {
		s.topkS.Append(true)
		s.topkS.FieldBuilder(0).(*array.Int32Builder).Append(int32(c))
		s.topkS.FieldBuilder(1).(*array.Float32Builder).Append(p[c])
		if s.names != nil {
			s.topkS.FieldBuilder(2).(*array.StringBuilder).Append(s.names[c])
		} else {
			s.topkS.FieldBuilder(2).(*array.StringBuilder).AppendNull()
		}
	}
}

// arrays appends the finished score columns to cols.
func (s *scoreCols) arrays(cols []arrow.Array) []arrow.Array {
	cols = append(cols, s.probs.NewArray(), s.top1.NewArray(), s.top1p.NewArray())
	if s.names != nil {
		cols = append(cols, s.label.NewArray())
	}
	if s.k > 0 {
		cols = append(cols, s.topk.NewArray())
	}
	if s.maps != nil {
		cols = append(cols, s.maps.NewArray())
	}
	return append(cols, s.modelID.NewArray(), s.errs.NewArray())
}

// takeRows returns col restricted to the rows in keep (ascending). When
// every row is kept it shares the input's buffers (zero copy).
func takeRows(mem memory.Allocator, col arrow.Array, keep []int, n int) (arrow.Array, error) {
	if len(keep) == n {
		col.Retain()
		return col, nil
	}
	// concatenate the contiguous runs of kept rows
	var parts []arrow.Array
	for s := 0; s < len(keep); {
		e := s
		for e+1 < len(keep) && keep[e+1] == keep[e]+1 {
			e++
		}
		parts = append(parts, array.NewSlice(col, int64(keep[s]), int64(keep[e]+1)))
		s = e + 1
	}
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	if len(parts) == 1 {
		parts[0].Retain()
		return parts[0], nil
	}
	return array.Concatenate(parts, mem)
}

// writeStage writes one output per unit, committed at its end together
// with its manifest entry, under the unit's lock.
func (s *run) writeStage(ctx context.Context, in <-chan *batch) error {
	var w *nbio.ParquetWriter
	var fs FileSummary
	var ft time.Time
	var done int64
	defer func() {
		if w != nil {
			w.Abort()
		}
	}()
	for b := range in {
		f := b.file
		if b.fail != nil {
			if w != nil {
				w.Abort()
				w = nil
			}
			if err := s.unitFailed(f, b.fail); err != nil {
				return err
			}
			continue
		}
		if w == nil {
			ft = time.Now()
			var err error
			w, err = nbio.CreateParquet(f.out, f.outSchema, nbio.WriterOptions{
				Compression: s.cfg.Compression, RowGroupRows: s.cfg.RowGroupRows, Metadata: s.outputMetadata(f)}, s.Mem)
			if err != nil {
				if b.rec != nil {
					b.rec.Release()
					s.release(b.buf)
				}
				return err
			}
			fs = FileSummary{Input: f.in.Path, RowGroups: f.rowGroups, Output: f.out, Fingerprint: f.fp}
		}
		if b.rec == nil { // end of unit
			fs.Seconds = time.Since(ft).Seconds()
			err := s.commit(w, f, &fs)
			w = nil
			if err != nil {
				if IsInputError(err) {
					if err := s.unitFailed(f, err); err != nil {
						return err
					}
					continue
				}
				return err
			}
			continue
		}
		err := s.write(w, b, &fs, s.prep, s.cfg)
		b.rec.Release()
		s.release(b.buf)
		if err != nil {
			return err
		}
		done += int64(b.n)
		if s.Progress != nil {
			s.Progress(f.in.Path, done, s.total)
		}
	}
	return nil
}

// commit finishes a unit: its input must not have changed while read; the
// output is renamed into place, then the manifest records it (size and
// checksum too), then the unit lock is released.
func (s *run) commit(w *nbio.ParquetWriter, f *prepared, fs *FileSummary) error {
	if fp, _, _, err := Fingerprint(f.in.Path); err != nil || fp != f.fp {
		w.Abort()
		return &InputError{f.in.Path, fmt.Errorf("%s changed while it was being read; its output was discarded (rerun to score the new content)", f.in.Path)}
	}
	if err := w.Commit(); err != nil {
		if errors.Is(err, nbio.ErrObjectExists) { // a store: another run committed this unit first
			s.locks.unlock(f.rel)
			s.warn(fmt.Sprintf("%s was committed by another run meanwhile; this run's copy was discarded", f.out))
			s.sum.FilesSkip++
			s.sum.ByOthers++
			return nil
		}
		return err
	}
	size, sha := w.Checksum()
	err := s.manifest.append(ManifestEntry{Input: f.in.Abs, RowGroups: fs.RowGroups, Size: f.size, MTime: f.mtime,
		Fingerprint: fs.Fingerprint, Output: f.rel, OutputSize: size, OutputSHA256: sha, OutputETag: w.ETag(), RowsIn: fs.RowsIn, RowsOut: fs.RowsOut,
		RowsError: fs.RowsError, RowsSkipped: fs.RowsSkipped, ModelID: s.Model.ID, Columns: s.cfg.columns(), Version: s.cfg.Version,
		Finished: time.Now().UTC().Format(time.RFC3339Nano), Shard: s.label, Seconds: fs.Seconds})
	s.locks.unlock(f.rel)
	if err != nil {
		return err
	}
	if fs.MapsMissing > 0 {
		s.warn(fmt.Sprintf("%s: %d rows have no valid label; their map is null (their scores are written)", f.in.Path, fs.MapsMissing))
	}
	s.sum.Outputs = append(s.sum.Outputs, *fs)
	s.sum.FilesDone++
	if s.FileDone != nil {
		s.FileDone(*fs)
	}
	return nil
}

// unitFailed records a unit that could not be scored (summary and
// manifest) and releases its lock; under --on-error fail it stops the run.
func (s *run) unitFailed(f *prepared, cause error) error {
	defer s.locks.unlock(f.rel)
	var se *nbio.StoreError
	if s.cfg.OnError == "fail" || errors.As(cause, &se) {
		return cause // a store outage is the run's failure, not the input's
	}
	msg := cause.Error()
	s.sum.FilesFailed++
	s.sum.Failures = append(s.sum.Failures, FileFailure{Input: f.in.Path, RowGroups: f.rowGroups, Output: f.out, Error: msg})
	s.warn(fmt.Sprintf("%s was not scored: %s", f.in.Path, msg))
	return s.manifest.append(ManifestEntry{Input: f.in.Abs, RowGroups: f.rowGroups, Size: f.size, MTime: f.mtime,
		Fingerprint: f.fp, Output: f.rel, Status: "failed", Error: msg, ModelID: s.Model.ID, Version: s.cfg.Version,
		Finished: time.Now().UTC().Format(time.RFC3339Nano), Shard: s.label})
}
