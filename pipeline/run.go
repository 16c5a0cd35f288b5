package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"golang.org/x/sync/errgroup"

	nbio "github.com/ninbatch/ninbatch/io"
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
	// Maps adds the map column: each row's class map ("top1": the predicted
	// class's, "label": the class in the label column's), row-major H×W.
	Maps        string
	MapLabelCol string // label column for Maps "label" ("" = label or labels)
}

// Map column kinds.
const (
	MapsTop1  = "top1"
	MapsLabel = "label"
)

// FileSummary is one input's outcome.
type FileSummary struct {
	Input       string `json:"input"`
	RowGroups   []int  `json:"row_groups,omitempty"`
	Output      string `json:"output"`
	Fingerprint string `json:"fingerprint"`
	RowsIn      int64  `json:"rows_in"`
	RowsOut     int64  `json:"rows_out"`
	RowsError   int64  `json:"rows_error"`
	RowsSkipped int64  `json:"rows_skipped"`
	// MapsMissing rows (--maps label) had no valid label: scored, map null.
	MapsMissing int64   `json:"maps_missing,omitempty"`
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
	Status        string         `json:"status"`          // succeeded, partial, failed or interrupted
	Error         string         `json:"error,omitempty"` // why the run failed or was partial
	ModelID       string         `json:"model_id"`
	ISA           string         `json:"isa"`       // the kernels' instruction set
	Precision     string         `json:"precision"` // of the conv products: fp32 or bf16
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
	InferSecs     float64        `json:"infer_seconds"` // the net busy with a batch (two may overlap: counted once)
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

// InternalError is a panic in a pipeline stage, returned instead of
// taking the process down, so the run still ends with its status.
type InternalError struct {
	Value any
	Stack []byte
}

func (e *InternalError) Error() string { return fmt.Sprintf("internal error: %v", e.Value) }

// goSafe runs f in g, turning a panic into an *InternalError.
func goSafe(g *errgroup.Group, f func() error) {
	g.Go(func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = &InternalError{Value: r, Stack: debug.Stack()}
			}
		}()
		return f()
	})
}

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
	Progress func(input string, rowsDone, rowsTotal int64) // may be nil; called from the writer goroutine; input is the file being written
	FileDone func(FileSummary)                             // may be nil
	Warn     func(msg string)                              // may be nil: something the user should know that does not stop the run
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
	labels       int         // input column of the labels a "label" map column follows, or -1
	fail         error       // preflight failure
	failed       atomic.Bool // failed while streaming: drop what follows
	rangeChecked atomic.Bool // the float pixel range was looked at (one batch)
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
	seq   uint64 // read order, restored after the parallel decoders
	// decodeErr failed the whole batch: bad column, or a bad row under --on-error fail
	decodeErr error
}

type tensorBuf struct {
	x     []float32 // (Batch, H, W, C): from run.inputs, back there after inference
	probs []float32 // (Batch, classes)
	maps  []float32 // (Batch, mapH, mapW, classes) with RunConfig.Maps, else nil
}

// run is one Run's state, shared by its stages.
type run struct {
	*Runner
	cfg      RunConfig
	sum      *RunSummary
	label    string // shard label, "" unsharded
	locks    unitLocker
	view     *manifestView
	manifest *manifestWriter
	prep     *nbio.Preprocess
	pool     chan *tensorBuf // outputs, each with an input tensor from inputs while it has one
	inputs   chan []float32  // input tensors
	total    int64
	uploads  map[string]bool // store: keys with unfinished multipart uploads (nil: not listed yet)
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
	// A new output directory has nothing to lock or clean yet: preflight
	// first, so a run that fails there leaves nothing behind.
	var files []*prepared
	if nbio.IsURL(s.cfg.OutDir) { // no directory, no flock: see storeLocks
		s.locks = storeLocks{}
		if files, err = s.plan(all); err != nil {
			return s.sum, err
		}
		s.manifest, _ = openManifest(s.cfg.OutDir, s.cfg.Shard, s.cfg.Shards)
		return s.stream(ctx, t0, files)
	}
	_, statErr := os.Stat(s.cfg.OutDir)
	fresh := os.IsNotExist(statErr)
	if fresh {
		if files, err = s.plan(all); err != nil {
			return s.sum, err
		}
	}
	if err := os.MkdirAll(s.cfg.OutDir, 0o755); err != nil {
		return nil, &ConfigError{fmt.Errorf("cannot create the output directory: %w", err)}
	}
	lock, err := AcquireLock(s.cfg.OutDir, s.cfg.Shard, s.cfg.Shards)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	locks, err := openUnitLocks(s.cfg.OutDir)
	if err != nil {
		return nil, err
	}
	s.locks = locks
	defer s.locks.close()
	if !fresh {
		files, err = s.plan(all)
	}
	if err == nil {
		s.manifest, err = openManifest(s.cfg.OutDir, s.cfg.Shard, s.cfg.Shards)
	}
	if err != nil {
		return s.sum, err
	}
	defer s.manifest.close()
	return s.stream(ctx, t0, files)
}

// stream runs the stages over the prepared units.
func (s *run) stream(ctx context.Context, t0 time.Time, files []*prepared) (*RunSummary, error) {
	s.allocBuffers()

	g, ctx := errgroup.WithContext(ctx)
	toDecode, toInfer, toWrite := make(chan *batch, 1), make(chan *batch, 1), make(chan *batch, 1)
	goSafe(g, func() error { return s.read(ctx, files, toDecode) })
	goSafe(g, func() error { return s.decodeStage(ctx, toDecode, toInfer) })
	goSafe(g, func() error { return s.inferStage(ctx, toInfer, toWrite) })
	goSafe(g, func() error { return s.writeStage(ctx, toWrite) })
	err := g.Wait()
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
	if cfg.OnError == "" {
		cfg.OnError = "record"
	}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	if r.Mem == nil {
		r.Mem = memory.DefaultAllocator
	}
	if err := cfg.check(r.Net.Options().MaxBatch, r.Net.Classes()); err != nil {
		return nil, &ConfigError{err}
	}
	s := &run{Runner: r, cfg: cfg, prep: PreprocessFor(r.Model)}
	if cfg.PixelRange > 0 {
		s.prep.FloatScale = 255 / cfg.PixelRange
	}
	if cfg.Shards > 0 {
		s.label = fmt.Sprintf("%d/%d", cfg.Shard, cfg.Shards)
	}
	s.sum = &RunSummary{ModelID: r.Model.ID, Shard: s.label, ISA: r.Net.ISA(), Precision: r.Net.Precision()}
	return s, nil
}

// check validates the numeric settings, each with its range.
func (cfg *RunConfig) check(maxBatch, classes int) error {
	switch {
	case cfg.Batch < 1 || cfg.Batch > maxBatch:
		return fmt.Errorf("batch %d: want 1..%d", cfg.Batch, maxBatch)
	case cfg.Workers < 1 || cfg.Workers > maxWorkers: // each holds a batch buffer
		return fmt.Errorf("decode workers %d: want 1..%d", cfg.Workers, maxWorkers)
	case cfg.TopK < 0 || cfg.TopK > classes:
		return fmt.Errorf("topk %d: want 0..%d (the model's classes)", cfg.TopK, classes)
	case cfg.RowGroupRows < 0 || cfg.RowGroupRows > maxRowGroupRows:
		return fmt.Errorf("row group rows %d: want 1..%d", cfg.RowGroupRows, maxRowGroupRows)
	case cfg.Shards < 0 || cfg.Shards > 0 && (cfg.Shard < 0 || cfg.Shard >= cfg.Shards):
		return fmt.Errorf("shard %d/%d: want 0 <= shard < shards", cfg.Shard, cfg.Shards)
	case cfg.Maps != "" && cfg.Maps != MapsTop1 && cfg.Maps != MapsLabel:
		return fmt.Errorf("maps %q: want top1 or label", cfg.Maps)
	}
	return nil
}

// columns names what shapes an output's score columns (--topk, --prefix,
// --maps), so that a rerun asking for other columns redoes the unit.
func (cfg *RunConfig) columns() string {
	return fmt.Sprintf("prefix=%q topk=%d maps=%s", cfg.Prefix, cfg.TopK, cfg.Maps)
}

// maxRowGroupRows bounds the writer's buffer (one row group).
const maxRowGroupRows = 1 << 24

func (s *run) warn(msg string) {
	if s.Warn != nil {
		s.Warn(msg)
	}
}

// allocBuffers makes the fixed pools of buffers that bound memory. Input
// tensors: one per decoder and two in inference (the next batch is
// submitted before the last is waited for). Outputs (probabilities, maps),
// which the writer needs after inference: one more, for the batch it
// writes.
func (s *run) allocBuffers() {
	classes := s.Net.Classes()
	s.inputs = make(chan []float32, s.cfg.Workers+2)
	for i := 0; i < cap(s.inputs); i++ {
		s.inputs <- make([]float32, s.cfg.Batch*s.prep.Len())
	}
	s.pool = make(chan *tensorBuf, s.cfg.Workers+3)
	for i := 0; i < cap(s.pool); i++ {
		tb := &tensorBuf{probs: make([]float32, s.cfg.Batch*classes)}
		if s.cfg.Maps != "" {
			tb.maps = make([]float32, s.cfg.Batch*s.Net.MapDims().Len())
		}
		s.pool <- tb
	}
}

// release puts a batch's buffers back in their pools.
func (s *run) release(tb *tensorBuf) {
	if tb.x != nil {
		s.inputs <- tb.x
		tb.x = nil
	}
	s.pool <- tb
}

// send passes b on, or drops it when the run is cancelled.
func send(ctx context.Context, ch chan<- *batch, b *batch) error {
	select {
	case ch <- b:
		return nil
	case <-ctx.Done():
		if b.rec != nil {
			b.rec.Release()
			b.rec = nil
		}
		return ctx.Err()
	}
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

// maxWorkers bounds the decoders, and with them the batch buffers in flight.
const maxWorkers = 256
