package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"golang.org/x/sync/errgroup"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/native"
	"github.com/ninbatch/ninbatch/nin"
)

// RunConfig configures `ninbatch run`.
type RunConfig struct {
	Inputs       []nbio.InputFile // input files (already expanded)
	OutDir       string           // outputs mirror the inputs' paths below their roots
	ImageCol     string           // "" = auto-detect
	Shape        nbio.Shape       // raw tensor shape ("" = the model's input)
	PixelRange   float32          // the largest value of a float tensor pixel: 255 (default) or 1
	Batch        int              // rows per inference batch
	TopK         int              // entries of the topk column (0 = none)
	Prefix       string           // prepended to every score column's name
	OnError      string           // "record" (default), "skip" or "fail"
	Compression  string           // "zstd" (default), "snappy", "none"
	RowGroupRows int              // output row group bound (rows)
	Workers      int              // decode goroutines
	Version      string           // ninbatch version for the output metadata
	Shard        int              // this worker's shard, 0..Shards-1
	Shards       int              // number of shards (0 = unsharded)
	Force        bool             // redo inputs the manifest says are finished
	Prune        bool             // remove outputs whose input is gone from below the inputs' roots
	SplitRows    int64            // split Parquet inputs with more rows into row-group ranges (0 = never)
}

// FileSummary is one input's outcome.
type FileSummary struct {
	Input       string  `json:"input"`
	RowGroups   []int   `json:"row_groups,omitempty"`
	Output      string  `json:"output"`
	Fingerprint string  `json:"fingerprint"`
	RowsIn      int64   `json:"rows_in"`
	RowsOut     int64   `json:"rows_out"`
	RowsError   int64   `json:"rows_error"`
	RowsSkipped int64   `json:"rows_skipped"`
	Seconds     float64 `json:"seconds"`
}

// FileFailure is a unit that could not be scored (unreadable, corrupt
// page, changed while read, columns that clash): its output was not
// written, the other units were.
type FileFailure struct {
	Input     string `json:"input"`
	RowGroups []int  `json:"row_groups,omitempty"`
	Output    string `json:"output"`
	Error     string `json:"error"`
}

// MissingInput is a finished output whose input no longer exists.
type MissingInput struct {
	Input  string `json:"input"`
	Output string `json:"output"`
	Pruned bool   `json:"pruned"` // the output was removed (--prune)
}

// RunSummary is the run's outcome (the --summary JSON).
type RunSummary struct {
	ModelID       string         `json:"model_id"`
	ISA           string         `json:"isa"` // the kernels' instruction set
	Shard         string         `json:"shard,omitempty"`
	Files         int            `json:"files"`         // units of work assigned to this run
	FilesDone     int            `json:"files_done"`    // scored and committed now
	FilesSkip     int            `json:"files_skipped"` // already finished with the same input and model (manifest)
	FilesFailed   int            `json:"files_failed"`  // could not be scored; see failures
	ByOthers      int            `json:"files_done_by_other_runs"`
	OutputsRedone int            `json:"outputs_failed_check"` // recorded as finished, but the file on disk did not match: rescored
	StaleTemps    int            `json:"stale_temporaries_removed"`
	RowsIn        int64          `json:"rows_in"`
	RowsOut       int64          `json:"rows_out"`
	RowsScored    int64          `json:"rows_scored"`
	RowsError     int64          `json:"rows_error"`
	RowsSkipped   int64          `json:"rows_skipped"`
	Seconds       float64        `json:"seconds"`
	ImgPerSec     float64        `json:"img_per_s"`
	InferSecs     float64        `json:"infer_seconds"`
	DecodeSecs    float64        `json:"decode_seconds"`
	Outputs       []FileSummary  `json:"outputs"`
	Failures      []FileFailure  `json:"failures,omitempty"`
	InputsMissing []MissingInput `json:"inputs_missing,omitempty"`
}

// RowError is a bad row under --on-error fail.
type RowError struct {
	File, Column string
	Row          int64
	Err          error
}

func (e *RowError) Error() string {
	return fmt.Sprintf("%s row %d column %s: %v", e.File, e.Row, e.Column, e.Err)
}

// InputError is a file that cannot be scored at all (not Parquet/Arrow,
// truncated, no usable image column).
type InputError struct {
	File string
	Err  error
}

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// IsInputError reports whether err is about an input file rather than the run.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

// Runner scores inputs with one model.
type Runner struct {
	Model    *nin.Model
	Net      *nin.Net
	Config   RunConfig
	Mem      memory.Allocator
	Progress func(rowsDone, rowsTotal int64) // may be nil; called from the writer goroutine
	FileDone func(FileSummary)               // may be nil
	Warn     func(msg string)                // may be nil: something the user should know that does not stop the run
}

// prepared is a checked input ready to score, or one that failed.
type prepared struct {
	unit
	fp           string
	size         int64
	mtime        string
	rows         int64
	image        nbio.ImageColumn
	schema       *arrow.Schema // input schema
	meta         map[string]string
	outSchema    *arrow.Schema
	pass         []int    // input columns passed through
	replaced     []string // score columns of a scored input that new scores replace
	scoreNames   []string
	classNames   []string
	fail         error       // preflight failure
	failed       atomic.Bool // failed while streaming: drop what follows
	rangeChecked bool        // the float pixel range was looked at (first batch)
}

// batch travels through the pipeline: one input record batch and its
// preprocessed tensor, or a file's end (rec == nil) or failure (fail).
type batch struct {
	file  *prepared
	rec   arrow.RecordBatch // nil for the end-of-file marker
	fail  error             // the file failed: discard its output
	first int64             // row number of rec's first row within the file
	buf   *tensorBuf
	errs  []error // per row: decode error or nil
	n     int
}

type tensorBuf struct {
	x       []float32 // (Batch, H, W, C)
	scratch [][]uint8 // per worker: (H, W, C)
	probs   []float32 // (Batch, classes)
}

// run is one Run's state, shared by its stages.
type run struct {
	*Runner
	cfg      RunConfig
	sum      *RunSummary
	label    string // shard label, "" unsharded
	locks    *unitLocks
	view     *manifestView
	manifest *manifestWriter
	prep     *nbio.Preprocess
	pool     chan *tensorBuf
	total    int64
	decodeNs atomic.Int64
	inferNs  atomic.Int64
}

// Run scores every input. A unit that fails is recorded and the others go
// on (--on-error fail stops instead); on cancellation the output being
// written is discarded and finished outputs stay (they are complete).
func (r *Runner) Run(ctx context.Context) (*RunSummary, error) {
	t0 := time.Now()
	s, err := r.start()
	if err != nil {
		return nil, err
	}
	// before anything is written, even a lock file
	all, err := planUnits(s.cfg.Inputs, s.cfg.OutDir, s.cfg.SplitRows)
	if err != nil {
		return nil, err
	}
	if err := checkOutputs(all, s.cfg.Inputs); err != nil {
		return nil, err
	}
	lock, err := AcquireLock(s.cfg.OutDir, s.cfg.Shard, s.cfg.Shards)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	if s.locks, err = openUnitLocks(s.cfg.OutDir); err != nil {
		return nil, err
	}
	defer s.locks.close()
	files, err := s.plan(all)
	if err == nil {
		s.manifest, err = openManifest(s.cfg.OutDir, s.cfg.Shard, s.cfg.Shards)
	}
	if err != nil {
		return s.sum, err
	}
	defer s.manifest.close()
	s.allocBuffers()

	g, ctx := errgroup.WithContext(ctx)
	toDecode, toInfer, toWrite := make(chan *batch, 1), make(chan *batch, 1), make(chan *batch, 1)
	g.Go(func() error { return s.read(ctx, files, toDecode) })
	g.Go(func() error { return s.decodeStage(ctx, toDecode, toInfer) })
	g.Go(func() error { return s.inferStage(ctx, toInfer, toWrite) })
	g.Go(func() error { return s.writeStage(ctx, toWrite) })
	err = g.Wait()
	// a stage that stopped early leaves batches in the channels behind it
	for _, ch := range []chan *batch{toDecode, toInfer, toWrite} {
		for b := range ch {
			if b.rec != nil {
				b.rec.Release()
			}
		}
	}
	s.finish(t0)
	return s.sum, err
}

// start checks the configuration and fills in defaults.
func (r *Runner) start() (*run, error) {
	cfg := r.Config
	if cfg.Batch < 1 || cfg.Batch > r.Net.Options().MaxBatch {
		return nil, fmt.Errorf("batch %d out of range 1..%d", cfg.Batch, r.Net.Options().MaxBatch)
	}
	if cfg.OnError == "" {
		cfg.OnError = "record"
	}
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	if r.Mem == nil {
		r.Mem = memory.DefaultAllocator
	}
	if cfg.Shards < 0 || cfg.Shards > 0 && (cfg.Shard < 0 || cfg.Shard >= cfg.Shards) {
		return nil, fmt.Errorf("shard %d/%d: want 0 <= shard < shards", cfg.Shard, cfg.Shards)
	}
	s := &run{Runner: r, cfg: cfg, prep: PreprocessFor(r.Model)}
	if cfg.PixelRange > 0 {
		s.prep.FloatScale = 255 / cfg.PixelRange
	}
	if cfg.Shards > 0 {
		s.label = fmt.Sprintf("%d/%d", cfg.Shard, cfg.Shards)
	}
	s.sum = &RunSummary{ModelID: r.Model.ID, Shard: s.label, ISA: native.Current().String()}
	return s, nil
}

func (s *run) warn(msg string) {
	if s.Warn != nil {
		s.Warn(msg)
	}
}

// ShardOf assigns unit i of a run's ordered unit list to a shard: round
// robin, so every shard gets an even share and N shards cover each unit
// exactly once (all shards see the same input list).
func ShardOf(i, shards int) int { return i % shards }

// plan lists this run's units, reports outputs whose input is gone,
// leaves out finished units and preflights the rest.
func (s *run) plan(all []unit) ([]*prepared, error) {
	var mine []unit
	for i, u := range all {
		if s.cfg.Shards == 0 || ShardOf(i, s.cfg.Shards) == s.cfg.Shard {
			mine = append(mine, u)
		}
	}
	s.sum.Files = len(mine)
	s.view = newManifestView(s.cfg.OutDir)
	if err := s.view.refresh(); err != nil {
		return nil, err
	}
	if err := s.missingInputs(); err != nil {
		return nil, err
	}
	var todo []unit
	for _, u := range mine {
		s.removeStale(u)
		e, ok := s.view.latest[u.rel]
		if !s.cfg.Force {
			done, reason := finished(u, e, ok, s.Model.ID)
			if done {
				s.sum.FilesSkip++
				continue
			}
			if reason != "" {
				s.sum.OutputsRedone++
				s.warn(reason + "; scoring it again")
			}
		}
		todo = append(todo, u)
	}
	files := s.preflight(todo)
	if s.cfg.OnError == "fail" {
		for _, f := range files {
			if f.fail != nil {
				return nil, f.fail // before anything is written
			}
		}
	}
	return files, nil
}

// missingInputs reports finished outputs whose input, below one of this
// run's input roots, no longer exists; with Prune it removes them.
func (s *run) missingInputs() error {
	roots := map[string]bool{}
	for _, in := range s.cfg.Inputs {
		roots[in.Root] = true
	}
	var rels []string
	for rel := range s.view.latest {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	for _, rel := range rels {
		e := s.view.latest[rel]
		if !e.Done() || !filepath.IsAbs(e.Input) || !underRoot(e.Input, roots) {
			continue
		}
		if _, err := os.Lstat(e.Input); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		out := filepath.Join(s.cfg.OutDir, filepath.FromSlash(rel))
		if _, err := os.Stat(out); err != nil {
			continue
		}
		m := MissingInput{Input: e.Input, Output: out}
		if s.cfg.Prune {
			if err := s.pruneOutput(rel, e); err != nil {
				return err
			}
			m.Pruned = true
		} else {
			s.warn(fmt.Sprintf("input %s is gone; its output %s stays (pass --prune to remove it)", e.Input, out))
		}
		s.sum.InputsMissing = append(s.sum.InputsMissing, m)
	}
	return nil
}

// pruneOutput removes an output whose input is gone, under its unit lock,
// and records the removal so no rerun counts it as finished.
func (s *run) pruneOutput(rel string, e ManifestEntry) error {
	if err := s.locks.wait(context.Background(), rel); err != nil {
		return err
	}
	defer s.locks.unlock(rel)
	out := filepath.Join(s.cfg.OutDir, filepath.FromSlash(rel))
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pruning %s: %w", out, err)
	}
	w, err := openManifest(s.cfg.OutDir, s.cfg.Shard, s.cfg.Shards)
	if err != nil {
		return err
	}
	defer w.close()
	e.Status, e.Error = "removed", "input gone: "+e.Input
	e.Finished = time.Now().UTC().Format(time.RFC3339Nano)
	e.Shard = s.label
	return w.append(e)
}

// removeStale removes a dead run's temporaries of u's output, unless a
// live run holds u (they are then its own).
func (s *run) removeStale(u unit) {
	if ok, err := s.locks.try(u.rel); err == nil && ok {
		s.removeTemps(u.out)
		s.locks.unlock(u.rel)
	}
}

// removeTemps removes the temporaries of out; the caller holds its lock,
// so they can only be a dead run's.
func (s *run) removeTemps(out string) {
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(out), nbio.TempPrefix(out)+"*"))
	for _, t := range stale {
		if os.Remove(t) == nil {
			s.sum.StaleTemps++
		}
	}
}

// preflight opens every unit's input and checks it can be scored, before
// any output is written. A unit that cannot be scored keeps its reason in
// fail and is recorded when its turn comes.
func (s *run) preflight(units []unit) []*prepared {
	out := make([]*prepared, 0, len(units))
	for _, u := range units {
		p := &prepared{unit: u}
		p.fail = u.planErr
		if p.fail == nil {
			p.fail = s.check(p)
		}
		if p.fail == nil && p.rows > 0 {
			s.total += p.rows
		}
		out = append(out, p)
	}
	return out
}

func (s *run) check(p *prepared) error {
	src, err := nbio.OpenRowGroups(p.in.Path, nil, 1, p.rowGroups, s.Mem)
	if err != nil {
		return &InputError{p.in.Path, err}
	}
	p.schema, p.meta, p.rows = src.Schema(), src.Metadata(), src.NumRows()
	unkept := src.Unkept()
	src.Close()
	if p.image, err = nbio.FindImageColumn(p.schema, s.cfg.ImageCol); err != nil {
		return &InputError{p.in.Path, fmt.Errorf("%s: %w", p.in.Path, err)}
	}
	if p.fp, p.size, p.mtime, err = Fingerprint(p.in.Path); err != nil {
		return &InputError{p.in.Path, err}
	}
	p.classNames = s.classNamesFor(p.meta)
	for _, u := range unkept {
		s.warn(fmt.Sprintf("%s: passthrough column %s", p.in.Path, u))
	}
	if err := s.outputSchema(p); err != nil {
		return err
	}
	if len(p.replaced) > 0 {
		s.warn(fmt.Sprintf("%s holds scores from an earlier run; its columns %v are replaced by this run's (pass --prefix to keep both)", p.in.Path, p.replaced))
	}
	return nil
}

// allocBuffers makes the fixed pool of tensor buffers that bounds memory:
// depth 3 = one being decoded, one in inference, one waiting.
func (s *run) allocBuffers() {
	const depth = 3
	classes := s.Net.Classes()
	s.pool = make(chan *tensorBuf, depth)
	for i := 0; i < depth; i++ {
		tb := &tensorBuf{x: make([]float32, s.cfg.Batch*s.prep.Len()), probs: make([]float32, s.cfg.Batch*classes)}
		for w := 0; w < s.cfg.Workers; w++ {
			tb.scratch = append(tb.scratch, make([]uint8, s.prep.Len()))
		}
		s.pool <- tb
	}
}

// send passes b on, or drops it when the run is cancelled.
func send(ctx context.Context, ch chan<- *batch, b *batch) error {
	select {
	case ch <- b:
		return nil
	case <-ctx.Done():
		if b.rec != nil {
			b.rec.Release()
		}
		return ctx.Err()
	}
}

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
	if _, err := os.Stat(f.out); err == nil && !s.cfg.Force {
		if err := s.view.refresh(); err != nil {
			s.locks.unlock(f.rel)
			return err
		}
		if e, ok := s.view.latest[f.rel]; ok {
			if done, _ := finished(f.unit, e, ok, s.Model.ID); done {
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
	if err := os.MkdirAll(filepath.Dir(f.out), 0o755); err != nil {
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

// decodeStage preprocesses rows in parallel into a pooled buffer, order
// kept. A file that fails here is marked once; what follows of it is dropped.
func (s *run) decodeStage(ctx context.Context, in <-chan *batch, out chan<- *batch) error {
	defer close(out)
	for b := range in {
		f := b.file
		if b.fail != nil {
			if f.failed.Swap(true) {
				continue // already marked by the decoder
			}
		} else if f.failed.Load() {
			if b.rec != nil {
				b.rec.Release()
			}
			continue
		} else if b.rec != nil {
			select {
			case b.buf = <-s.pool:
			case <-ctx.Done():
				b.rec.Release()
				return ctx.Err()
			}
			ts := time.Now()
			err := s.decode(b, s.prep, s.cfg)
			s.decodeNs.Add(int64(time.Since(ts)))
			if err != nil {
				b.rec.Release()
				s.pool <- b.buf
				if !IsInputError(err) {
					return err // --on-error fail
				}
				f.failed.Store(true)
				b = &batch{file: f, fail: err}
			}
		}
		if err := send(ctx, out, b); err != nil {
			return err
		}
	}
	return nil
}

// inferStage: the only user of the network.
func (s *run) inferStage(ctx context.Context, in <-chan *batch, out chan<- *batch) error {
	defer close(out)
	for b := range in {
		if b.rec != nil {
			ts := time.Now()
			if err := s.Net.Forward(b.buf.x, b.n, b.buf.probs, nil); err != nil {
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
					s.pool <- b.buf
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
		s.pool <- b.buf
		if err != nil {
			return err
		}
		done += int64(b.n)
		if s.Progress != nil {
			s.Progress(done, s.total)
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
		return err
	}
	size, sha := w.Checksum()
	err := s.manifest.append(ManifestEntry{Input: f.in.Abs, RowGroups: fs.RowGroups, Size: f.size, MTime: f.mtime,
		Fingerprint: fs.Fingerprint, Output: f.rel, OutputSize: size, OutputSHA256: sha, RowsIn: fs.RowsIn, RowsOut: fs.RowsOut,
		RowsError: fs.RowsError, RowsSkipped: fs.RowsSkipped, ModelID: s.Model.ID, Version: s.cfg.Version,
		Finished: time.Now().UTC().Format(time.RFC3339Nano), Shard: s.label, Seconds: fs.Seconds})
	s.locks.unlock(f.rel)
	if err != nil {
		return err
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
	if s.cfg.OnError == "fail" {
		return cause
	}
	msg := cause.Error()
	s.sum.FilesFailed++
	s.sum.Failures = append(s.sum.Failures, FileFailure{Input: f.in.Path, RowGroups: f.rowGroups, Output: f.out, Error: msg})
	s.warn(fmt.Sprintf("%s was not scored: %s", f.in.Path, msg))
	return s.manifest.append(ManifestEntry{Input: f.in.Abs, RowGroups: f.rowGroups, Size: f.size, MTime: f.mtime,
		Fingerprint: f.fp, Output: f.rel, Status: "failed", Error: msg, ModelID: s.Model.ID, Version: s.cfg.Version,
		Finished: time.Now().UTC().Format(time.RFC3339Nano), Shard: s.label})
}

// finish totals the summary.
func (s *run) finish(t0 time.Time) {
	sum := s.sum
	for _, o := range sum.Outputs {
		sum.RowsIn += o.RowsIn
		sum.RowsOut += o.RowsOut
		sum.RowsError += o.RowsError
		sum.RowsSkipped += o.RowsSkipped
	}
	sum.RowsScored = sum.RowsIn - sum.RowsError - sum.RowsSkipped
	sum.Seconds = time.Since(t0).Seconds()
	sum.InferSecs = float64(s.inferNs.Load()) / 1e9
	sum.DecodeSecs = float64(s.decodeNs.Load()) / 1e9
	if sum.Seconds > 0 {
		sum.ImgPerSec = float64(sum.RowsIn) / sum.Seconds
	}
}
