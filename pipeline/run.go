package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"golang.org/x/sync/errgroup"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

// RunConfig configures `ninbatch run`.
type RunConfig struct {
	Inputs       []string   // input files (already expanded)
	OutDir       string     // one output Parquet file per input
	ImageCol     string     // "" = auto-detect
	Shape        nbio.Shape // raw tensor shape ("" = the model's input)
	Batch        int        // rows per inference batch
	TopK         int        // entries of the topk column (0 = none)
	OnError      string     // "record" (default), "skip" or "fail"
	Compression  string     // "zstd" (default), "snappy", "none"
	RowGroupRows int        // output row group bound (rows)
	Workers      int        // decode goroutines
	Version      string     // ninbatch version for the output metadata
	Shard        int        // this worker's shard, 0..Shards-1
	Shards       int        // number of shards (0 = unsharded)
	Force        bool       // redo inputs the manifest says are finished
	SplitRows    int64      // split Parquet inputs with more rows into row-group ranges (0 = never)
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

// RunSummary is the run's outcome (the --summary JSON).
type RunSummary struct {
	ModelID     string        `json:"model_id"`
	Shard       string        `json:"shard,omitempty"`
	Files       int           `json:"files"`         // units of work assigned to this run
	FilesDone   int           `json:"files_done"`    // scored and committed now
	FilesSkip   int           `json:"files_skipped"` // already finished with the same input and model (manifest)
	StaleTemps  int           `json:"stale_temporaries_removed"`
	RowsIn      int64         `json:"rows_in"`
	RowsOut     int64         `json:"rows_out"`
	RowsScored  int64         `json:"rows_scored"`
	RowsError   int64         `json:"rows_error"`
	RowsSkipped int64         `json:"rows_skipped"`
	Seconds     float64       `json:"seconds"`
	ImgPerSec   float64       `json:"img_per_s"`
	InferSecs   float64       `json:"infer_seconds"`
	DecodeSecs  float64       `json:"decode_seconds"`
	Outputs     []FileSummary `json:"outputs"`
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

// Runner scores inputs with one model.
type Runner struct {
	Model    *nin.Model
	Net      *nin.Net
	Config   RunConfig
	Mem      memory.Allocator
	Progress func(rowsDone, rowsTotal int64) // may be nil; called from the writer goroutine
	FileDone func(FileSummary)               // may be nil
}

// OutputPath is the output file for an input: same base name, .parquet.
func OutputPath(outDir, input string) string { return unitOutput(outDir, input, 0, 0) }

// unitOutput names the output of part k (1-based) of parts of an input;
// parts == 0 is the whole file.
func unitOutput(outDir, input string, k, parts int) string {
	base := filepath.Base(input)
	base = strings.TrimSuffix(base, filepath.Ext(base))
	if parts > 0 {
		base += fmt.Sprintf(".part-%04d-of-%04d", k, parts)
	}
	return filepath.Join(outDir, base+".parquet")
}

// unit is one piece of work: an input file or a row-group range of it.
type unit struct {
	path      string
	rowGroups []int // nil: the whole file
	out       string
}

// planUnits lists the units of every input in order: whole files, or for
// Parquet inputs above splitRows rows consecutive row groups of at least
// splitRows rows each.
func planUnits(inputs []string, outDir string, splitRows int64) ([]unit, error) {
	var units []unit
	for _, in := range inputs {
		var rg []int64
		if splitRows > 0 {
			var err error
			if rg, err = nbio.RowGroupRows(in); err != nil {
				return nil, &InputError{in, err}
			}
		}
		var total int64
		for _, n := range rg {
			total += n
		}
		if len(rg) < 2 || total <= splitRows {
			units = append(units, unit{path: in, out: OutputPath(outDir, in)})
			continue
		}
		var groups [][]int
		var cur []int
		var rows int64
		for g, n := range rg {
			cur = append(cur, g)
			rows += n
			if rows >= splitRows {
				groups, cur, rows = append(groups, cur), nil, 0
			}
		}
		if len(cur) > 0 {
			groups = append(groups, cur)
		}
		for k, g := range groups {
			units = append(units, unit{path: in, rowGroups: g, out: unitOutput(outDir, in, k+1, len(groups))})
		}
	}
	return units, nil
}

// ShardOf assigns unit i of a run's ordered unit list to a shard: round
// robin, so every shard gets an even share and N shards cover each unit
// exactly once (all shards see the same input list).
func ShardOf(i, shards int) int { return i % shards }

// Fingerprint identifies an input's content cheaply: sha256 over its size,
// modification time and its first and last 64 KiB (where Parquet keeps the
// footer and Arrow the schema and footer).
func Fingerprint(path string) (fp string, size int64, mtime string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, "", err
	}
	size, mtime = st.Size(), st.ModTime().UTC().Format(time.RFC3339Nano)
	h := sha256.New()
	fmt.Fprintf(h, "%d %d\n", st.Size(), st.ModTime().UnixNano())
	const chunk = 64 << 10
	if _, err := io.CopyN(h, f, chunk); err != nil && err != io.EOF {
		return "", 0, "", err
	}
	if st.Size() > 2*chunk {
		if _, err := f.Seek(-chunk, io.SeekEnd); err != nil {
			return "", 0, "", err
		}
		if _, err := io.Copy(h, f); err != nil {
			return "", 0, "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), size, mtime, nil
}

// prepared is a checked input ready to score.
type prepared struct {
	path, out, fp string
	rowGroups     []int
	size          int64
	mtime         string
	rows          int64
	image         nbio.ImageColumn
	schema        *arrow.Schema // input schema
	outSchema     *arrow.Schema
	classNames    []string
}

// Preflight opens every unit's input and checks it can be scored, before
// any output is written: a bad file fails the run with nothing half-done.
func (r *Runner) Preflight(units []unit) ([]*prepared, int64, error) {
	var out []*prepared
	var total int64
	seen := map[string]string{}
	for _, u := range units {
		in := u.path
		if prev, ok := seen[u.out]; ok && prev != in {
			return nil, 0, &InputError{in, fmt.Errorf("inputs %s and %s would both write %s: rename one", prev, in, u.out)}
		}
		seen[u.out] = in
		src, err := nbio.OpenRowGroups(in, nil, 1, u.rowGroups, r.Mem)
		if err != nil {
			return nil, 0, &InputError{in, err}
		}
		sc, meta, rows := src.Schema(), src.Metadata(), src.NumRows()
		src.Close()
		ic, err := nbio.FindImageColumn(sc, r.Config.ImageCol)
		if err != nil {
			return nil, 0, &InputError{in, fmt.Errorf("%s: %w", in, err)}
		}
		fp, size, mtime, err := Fingerprint(in)
		if err != nil {
			return nil, 0, &InputError{in, err}
		}
		p := &prepared{path: in, out: u.out, fp: fp, size: size, mtime: mtime, rowGroups: u.rowGroups, rows: rows, image: ic, schema: sc}
		p.classNames = r.Model.Classes
		if p.classNames == nil {
			p.classNames = nbio.ClassNames(meta, "label")
			if len(p.classNames) != r.Net.Classes() {
				p.classNames = nil
			}
		}
		p.outSchema = r.outputSchema(p)
		if rows > 0 {
			total += rows
		}
		out = append(out, p)
	}
	return out, total, nil
}

var topkType = arrow.ListOf(arrow.StructOf(
	arrow.Field{Name: "class", Type: arrow.PrimitiveTypes.Int32},
	arrow.Field{Name: "prob", Type: arrow.PrimitiveTypes.Float32},
	arrow.Field{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
))

// outputSchema: every non-image input column, then the score columns.
func (r *Runner) outputSchema(p *prepared) *arrow.Schema {
	var fields []arrow.Field
	for i, f := range p.schema.Fields() {
		if i != p.image.Index {
			fields = append(fields, f)
		}
	}
	fields = append(fields,
		arrow.Field{Name: "probs", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
		arrow.Field{Name: "top1", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
		arrow.Field{Name: "top1_prob", Type: arrow.PrimitiveTypes.Float32, Nullable: true})
	if p.classNames != nil {
		fields = append(fields, arrow.Field{Name: "top1_label", Type: arrow.BinaryTypes.String, Nullable: true})
	}
	if r.Config.TopK > 0 {
		fields = append(fields, arrow.Field{Name: "topk", Type: topkType, Nullable: true})
	}
	fields = append(fields,
		arrow.Field{Name: "model_id", Type: arrow.BinaryTypes.String},
		arrow.Field{Name: "error", Type: arrow.BinaryTypes.String, Nullable: true})
	return arrow.NewSchema(fields, nil)
}

// batch travels through the pipeline: one input record batch and its
// preprocessed tensor.
type batch struct {
	file  *prepared
	rec   arrow.RecordBatch // nil for the end-of-file marker
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

// Run scores every input. On error or cancellation the output being
// written is discarded; finished outputs stay (they are complete).
func (r *Runner) Run(ctx context.Context) (*RunSummary, error) {
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
	t0 := time.Now()
	if cfg.Shards < 0 || cfg.Shards > 0 && (cfg.Shard < 0 || cfg.Shard >= cfg.Shards) {
		return nil, fmt.Errorf("shard %d/%d: want 0 <= shard < shards", cfg.Shard, cfg.Shards)
	}
	shardLabel := ""
	if cfg.Shards > 0 {
		shardLabel = fmt.Sprintf("%d/%d", cfg.Shard, cfg.Shards)
	}
	lock, err := AcquireLock(cfg.OutDir, cfg.Shard, cfg.Shards)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	all, err := planUnits(cfg.Inputs, cfg.OutDir, cfg.SplitRows)
	if err != nil {
		return nil, err
	}
	var mine []unit
	for i, u := range all {
		if cfg.Shards == 0 || ShardOf(i, cfg.Shards) == cfg.Shard {
			mine = append(mine, u)
		}
	}
	sum := &RunSummary{ModelID: r.Model.ID, Files: len(mine), Shard: shardLabel}
	// Temporaries of our outputs can only be left by a crashed run: we hold the lock.
	for _, u := range mine {
		stale, _ := filepath.Glob(filepath.Join(filepath.Dir(u.out), nbio.TempPrefix(u.out)+"*"))
		for _, t := range stale {
			if os.Remove(t) == nil {
				sum.StaleTemps++
			}
		}
	}
	done, err := ReadManifests(cfg.OutDir)
	if err != nil {
		return nil, err
	}
	var todo []unit
	for _, u := range mine {
		if e, ok := done[filepath.Base(u.out)]; ok && !cfg.Force && e.ModelID == r.Model.ID && e.Input == u.path {
			if fp, _, _, err := Fingerprint(u.path); err == nil && fp == e.Fingerprint {
				if _, err := os.Stat(u.out); err == nil {
					sum.FilesSkip++
					continue
				}
			}
		}
		todo = append(todo, u)
	}
	files, total, err := r.Preflight(todo)
	if err != nil {
		return sum, err
	}
	manifest, err := openManifest(cfg.OutDir, cfg.Shard, cfg.Shards)
	if err != nil {
		return sum, err
	}
	defer manifest.close()
	prep := PreprocessFor(r.Model)
	classes := r.Net.Classes()

	// A fixed pool of tensor buffers bounds memory: depth 3 = one being
	// decoded, one in inference, one waiting.
	const depth = 3
	pool := make(chan *tensorBuf, depth)
	for i := 0; i < depth; i++ {
		tb := &tensorBuf{x: make([]float32, cfg.Batch*prep.Len()), probs: make([]float32, cfg.Batch*classes)}
		for w := 0; w < cfg.Workers; w++ {
			tb.scratch = append(tb.scratch, make([]uint8, prep.Len()))
		}
		pool <- tb
	}
	g, ctx := errgroup.WithContext(ctx)
	toDecode := make(chan *batch, 1)
	toInfer := make(chan *batch, 1)
	toWrite := make(chan *batch, 1)
	send := func(ch chan<- *batch, b *batch) error {
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
	var decodeNs, inferNs atomic.Int64

	// read: stream record batches, one file after another
	g.Go(func() error {
		defer close(toDecode)
		for _, f := range files {
			src, err := nbio.OpenRowGroups(f.path, nil, cfg.Batch, f.rowGroups, r.Mem)
			if err != nil {
				return &InputError{f.path, err}
			}
			var row int64
			for {
				rec, err := src.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					src.Close()
					return &InputError{f.path, err}
				}
				if !rec.Schema().Equal(f.schema) {
					rec.Release()
					src.Close()
					return &InputError{f.path, fmt.Errorf("%s: schema changed while reading", f.path)}
				}
				n := rec.NumRows()
				if err := send(toDecode, &batch{file: f, rec: rec, first: row, n: int(n)}); err != nil {
					src.Close()
					return err
				}
				row += n
			}
			src.Close()
			if err := send(toDecode, &batch{file: f}); err != nil { // end of file
				return err
			}
		}
		return nil
	})

	// decode: preprocess rows in parallel into a pooled buffer, order kept
	g.Go(func() error {
		defer close(toInfer)
		for b := range toDecode {
			if b.rec != nil {
				var tb *tensorBuf
				select {
				case tb = <-pool:
				case <-ctx.Done():
					b.rec.Release()
					return ctx.Err()
				}
				b.buf = tb
				ts := time.Now()
				if err := r.decode(b, prep, cfg); err != nil {
					b.rec.Release()
					return err
				}
				decodeNs.Add(int64(time.Since(ts)))
			}
			if err := send(toInfer, b); err != nil {
				return err
			}
		}
		return nil
	})

	// infer: the only user of the network
	g.Go(func() error {
		defer close(toWrite)
		for b := range toInfer {
			if b.rec != nil {
				ts := time.Now()
				if err := r.Net.Forward(b.buf.x, b.n, b.buf.probs, nil); err != nil {
					b.rec.Release()
					return err
				}
				inferNs.Add(int64(time.Since(ts)))
			}
			if err := send(toWrite, b); err != nil {
				return err
			}
		}
		return nil
	})

	// write: one output per input, committed at end of file
	g.Go(func() error {
		var w *nbio.ParquetWriter
		var fs FileSummary
		var ft time.Time
		var done int64
		defer func() {
			if w != nil {
				w.Abort()
			}
		}()
		for b := range toWrite {
			if w == nil {
				ft = time.Now()
				var err error
				w, err = nbio.CreateParquet(b.file.out, b.file.outSchema, nbio.WriterOptions{
					Compression: cfg.Compression, RowGroupRows: cfg.RowGroupRows,
					Metadata: map[string]string{
						"ninbatch.model_id": r.Model.ID, "ninbatch.version": cfg.Version,
						"ninbatch.input": b.file.path, "ninbatch.input_fingerprint": b.file.fp,
					}}, r.Mem)
				if err != nil {
					if b.rec != nil {
						b.rec.Release()
						pool <- b.buf
					}
					return err
				}
				fs = FileSummary{Input: b.file.path, RowGroups: b.file.rowGroups, Output: b.file.out, Fingerprint: b.file.fp}
			}
			if b.rec == nil { // end of file
				// an input rewritten while we read it must not be recorded as done
				if fp, _, _, err := Fingerprint(b.file.path); err != nil || fp != b.file.fp {
					return &InputError{b.file.path, fmt.Errorf("%s changed while it was being read; its output was discarded (rerun to score the new content)", b.file.path)}
				}
				if err := w.Commit(); err != nil {
					w = nil
					return err
				}
				w = nil
				fs.Seconds = time.Since(ft).Seconds()
				if err := manifest.append(ManifestEntry{Input: fs.Input, RowGroups: fs.RowGroups, Size: b.file.size, MTime: b.file.mtime,
					Fingerprint: fs.Fingerprint, Output: filepath.Base(fs.Output), RowsIn: fs.RowsIn, RowsOut: fs.RowsOut,
					RowsError: fs.RowsError, RowsSkipped: fs.RowsSkipped, ModelID: r.Model.ID, Version: cfg.Version,
					Finished: time.Now().UTC().Format(time.RFC3339Nano), Shard: shardLabel, Seconds: fs.Seconds}); err != nil {
					return err
				}
				sum.Outputs = append(sum.Outputs, fs)
				sum.FilesDone++
				if r.FileDone != nil {
					r.FileDone(fs)
				}
				continue
			}
			err := r.write(w, b, &fs, prep, cfg)
			b.rec.Release()
			pool <- b.buf
			if err != nil {
				return err
			}
			done += int64(b.n)
			if r.Progress != nil {
				r.Progress(done, total)
			}
		}
		return nil
	})

	err = g.Wait()
	for _, o := range sum.Outputs {
		sum.RowsIn += o.RowsIn
		sum.RowsOut += o.RowsOut
		sum.RowsError += o.RowsError
		sum.RowsSkipped += o.RowsSkipped
	}
	sum.RowsScored = sum.RowsIn - sum.RowsError - sum.RowsSkipped
	sum.Seconds = time.Since(t0).Seconds()
	sum.InferSecs = float64(inferNs.Load()) / 1e9
	sum.DecodeSecs = float64(decodeNs.Load()) / 1e9
	if sum.Seconds > 0 {
		sum.ImgPerSec = float64(sum.RowsIn) / sum.Seconds
	}
	return sum, err
}

// decode preprocesses b's rows into b.buf.x with cfg.Workers goroutines.
func (r *Runner) decode(b *batch, prep *nbio.Preprocess, cfg RunConfig) error {
	col := b.rec.Column(b.file.image.Index)
	ir, err := nbio.NewImageReader(col, b.file.image.Kind)
	if err != nil {
		return &InputError{b.file.path, fmt.Errorf("%s rows %d..%d column %s: %w", b.file.path, b.first, b.first+int64(b.n)-1, b.file.image.Name, err)}
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
	if cfg.OnError == "fail" {
		for i, e := range b.errs {
			if e != nil {
				return &RowError{File: b.file.path, Row: b.first + int64(i), Column: b.file.image.Name, Err: e}
			}
		}
	}
	return nil
}

// write appends b's rows with their scores (or errors) to the output.
func (r *Runner) write(w *nbio.ParquetWriter, b *batch, fs *FileSummary, prep *nbio.Preprocess, cfg RunConfig) error {
	classes := r.Net.Classes()
	mem := r.Mem
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
	probsB := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
	defer probsB.Release()
	pv := probsB.ValueBuilder().(*array.Float32Builder)
	top1B := array.NewInt32Builder(mem)
	defer top1B.Release()
	top1pB := array.NewFloat32Builder(mem)
	defer top1pB.Release()
	labelB := array.NewStringBuilder(mem)
	defer labelB.Release()
	topkB := array.NewListBuilder(mem, topkType.Elem())
	defer topkB.Release()
	topkS := topkB.ValueBuilder().(*array.StructBuilder)
	idB := array.NewStringBuilder(mem)
	defer idB.Release()
	errB := array.NewStringBuilder(mem)
	defer errB.Release()
	names := b.file.classNames
	order := make([]int, classes)
	for _, i := range keep {
		idB.Append(r.Model.ID)
		if e := b.errs[i]; e != nil {
			probsB.AppendNull()
			top1B.AppendNull()
			top1pB.AppendNull()
			labelB.AppendNull()
			topkB.AppendNull()
			errB.Append(e.Error())
			continue
		}
		errB.AppendNull()
		p := b.buf.probs[i*classes : (i+1)*classes]
		probsB.Append(true)
		pv.AppendValues(p, nil)
		for k := range order {
			order[k] = k
		}
		k := min(cfg.TopK, classes)
		best := 0
		for j, v := range p {
			if v > p[best] {
				best = j
			}
		}
		top1B.Append(int32(best))
		top1pB.Append(p[best])
		if names != nil {
			labelB.Append(names[best])
		}
		if cfg.TopK > 0 {
			sort.SliceStable(order, func(a, c int) bool { return p[order[a]] > p[order[c]] })
			topkB.Append(true)
			for _, c := range order[:k] {
				topkS.Append(true)
				topkS.FieldBuilder(0).(*array.Int32Builder).Append(int32(c))
				topkS.FieldBuilder(1).(*array.Float32Builder).Append(p[c])
				if names != nil {
					topkS.FieldBuilder(2).(*array.StringBuilder).Append(names[c])
				} else {
					topkS.FieldBuilder(2).(*array.StringBuilder).AppendNull()
				}
			}
		}
	}
	// passthrough columns, filtered to the kept rows
	var cols []arrow.Array
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	for ci := 0; ci < int(b.rec.NumCols()); ci++ {
		if ci == b.file.image.Index {
			continue
		}
		c, err := takeRows(mem, b.rec.Column(ci), keep, n)
		if err != nil {
			return fmt.Errorf("%s column %s: %w", b.file.path, b.rec.ColumnName(ci), err)
		}
		cols = append(cols, c)
	}
	cols = append(cols, probsB.NewArray(), top1B.NewArray(), top1pB.NewArray())
	if names != nil {
		cols = append(cols, labelB.NewArray())
	}
	if cfg.TopK > 0 {
		cols = append(cols, topkB.NewArray())
	}
	cols = append(cols, idB.NewArray(), errB.NewArray())
	rec := array.NewRecordBatch(b.file.outSchema, cols, int64(len(keep)))
	defer rec.Release()
	if err := w.Write(rec); err != nil {
		return err
	}
	fs.RowsOut += int64(len(keep))
	return nil
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

// IsInputError reports whether err is about an input file rather than the run.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}
