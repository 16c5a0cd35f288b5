package pipeline

import (
	"fmt"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	nbio "github.com/ninbatch/ninbatch/io"
)

// decode preprocesses b's rows into b.buf.x with cfg.Workers goroutines.
func (r *run) decode(b *batch, prep *nbio.Preprocess, cfg RunConfig) error {
	col := b.rec.Column(b.file.image.Index)
	ir, err := nbio.NewImageReader(col, b.file.image.Kind)
	if err != nil {
		return &InputError{b.file.in.Path, fmt.Errorf("%s rows %d..%d column %s: %w", b.file.in.Path, b.first, b.first+int64(b.n)-1, b.file.image.Name, err)}
	}
	b.errs = make([]error, b.n)
	sz := prep.Len()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			scratch := b.buf.scratch[w]
			for i := w; i < b.n; i += cfg.Workers {
				x := b.buf.x[i*sz : (i+1)*sz]
				if err := prep.Input(x, scratch, ir.At(i), cfg.Shape); err != nil {
					b.errs[i] = err
					clear(x)
				}
			}
		}(w)
	}
	wg.Wait()
	if b.file.image.Kind == nbio.ImageRawF32 {
		r.checkRange(b, ir, prep)
	}
	if cfg.OnError == "fail" {
		for i, e := range b.errs {
			if e != nil {
				return &RowError{File: b.file.in.Path, Row: b.first + int64(i), Column: b.file.image.Name, Err: e}
			}
		}
	}
	return nil
}

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
	sc := newScoreCols(r.Mem, b.file.classNames, cfg.TopK)
	defer sc.release()
	for _, i := range keep {
		if e := b.errs[i]; e != nil {
			sc.appendError(r.Model.ID, e)
			continue
		}
		sc.appendScores(r.Model.ID, b.buf.probs[i*classes:(i+1)*classes])
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
	names                []string // class names, or nil: no top1_label, null topk labels
	k                    int      // topk entries (0: no topk column)
	probs, topk          *array.ListBuilder
	probV                *array.Float32Builder
	topkS                *array.StructBuilder
	top1                 *array.Int32Builder
	top1p                *array.Float32Builder
	label, modelID, errs *array.StringBuilder
	order                []int
}

func newScoreCols(mem memory.Allocator, names []string, k int) *scoreCols {
	s := &scoreCols{names: names, k: k, order: make([]int, 0, max(k, 1)),
		probs: array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32), topk: array.NewListBuilder(mem, topkType.Elem()),
		top1: array.NewInt32Builder(mem), top1p: array.NewFloat32Builder(mem),
		label: array.NewStringBuilder(mem), modelID: array.NewStringBuilder(mem), errs: array.NewStringBuilder(mem)}
	s.probV = s.probs.ValueBuilder().(*array.Float32Builder)
	s.topkS = s.topk.ValueBuilder().(*array.StructBuilder)
	return s
}

func (s *scoreCols) release() {
	for _, b := range []array.Builder{s.probs, s.topk, s.top1, s.top1p, s.label, s.modelID, s.errs} {
		b.Release()
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
	s.errs.Append(e.Error())
}

// appendScores adds a scored row with probabilities p.
func (s *scoreCols) appendScores(modelID string, p []float32) {
	s.modelID.Append(modelID)
	s.errs.AppendNull()
	s.probs.Append(true)
	s.probV.AppendValues(p, nil)
	s.order = topK(s.order, p, max(s.k, 1))
	best := s.order[0]
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

// checkRange warns when a file's first batch of a float tensor column
// holds only values within 0..1 while the preprocessing expects 0..255
// pixels (PyTorch's ToTensor convention under a /255 model): such rows
// would all score as nearly black images. One batch tells; the rest of the
// file is not scanned again.
func (r *run) checkRange(b *batch, ir *nbio.ImageReader, prep *nbio.Preprocess) {
	if b.file.rangeChecked {
		return
	}
	b.file.rangeChecked = true
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
		r.warn(fmt.Sprintf("%s column %s: float pixels are all within 0..1, but the model scales pixels by %g (it expects 0..255); pass --pixel-range 1 if the tensors hold 0..1 values",
			b.file.in.Path, b.file.image.Name, prep.Scale))
	}
}
