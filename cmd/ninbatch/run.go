package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

func newRunCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "score images in Parquet/Arrow files and write probabilities to Parquet",
		ArgsUsage: "INPUT... (files, directories or globs)",
		Description: `Streams each input (Parquet, Arrow IPC file or stream) in batches, decodes and
preprocesses its image column as the model says, runs the network and writes
OUT/<input base name>.parquet: every non-image input column unchanged, then probs,
top1, top1_prob, top1_label (when class names are known), topk, model_id and error.
Outputs mirror the inputs' paths below the directory (or glob prefix) given, and
never replace an input. Rows whose image cannot be read are kept with an error
(--on-error record), dropped (skip) or stop the run (fail); a file that cannot be
read is recorded as failed and the others are scored (fail stops at it). Columns
named like ninbatch's own are refused (use --prefix), except the score columns of
a file ninbatch scored before, which are replaced. Float32 tensor columns hold
pixels on the 0..255 scale unless --pixel-range 1. Exit codes: 0 all rows scored,
1 the run failed, 2 usage or configuration error, 3 finished but some rows or
files errored, 130/143 interrupted by SIGINT/SIGTERM, 70 internal error.

Example:
   ninbatch run --model models/nin-mnist.nin --out scored/ data/mnist/test.parquet`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagModel, Required: true, Usage: "model file (.nin)"},
			&cli.StringFlag{Name: flagOut, Required: true, Usage: "output directory"},
			&cli.IntFlag{Name: flagBatch, Aliases: []string{"batch-size"}, Value: 64, Usage: "rows per inference batch"},
			&cli.StringFlag{Name: "image-col", Usage: "image column (default: auto-detect)"},
			&cli.BoolFlag{Name: "recursive", Usage: "search directory inputs' subdirectories too (partitioned key=value/ layouts); outputs mirror the paths below the directory"},
			&cli.StringFlag{Name: "shape", Usage: "HxWxC of raw tensor image columns (default: the model's input)"},
			&cli.Float64Flag{Name: "pixel-range", Value: 255, Usage: "largest pixel value in float32 tensor columns: 255 (the scale of decoded images) or 1 (0..1 tensors, PyTorch's ToTensor)"},
			&cli.StringFlag{Name: "prefix", Usage: "prepend this to ninbatch's column names (probs, top1, ..., error), e.g. when the input has an 'error' column of its own"},
			&cli.IntFlag{Name: "topk", Value: 5, Usage: "entries in the topk column (0 = no column)"},
			&cli.StringFlag{Name: "maps", Usage: "add a map column: each row's class map, row-major H×W list<float32> (shape in the metadata), of the top1 class or of its label (label)"},
			&cli.StringFlag{Name: "map-label-col", Usage: "--maps label: the label column, integers or class names (default: label or labels)"},
			&cli.StringFlag{Name: "on-error", Value: "record", Usage: "bad rows: record (keep with error), skip (drop) or fail (stop)"},
			precisionFlag(),
			&cli.StringFlag{Name: "compression", Category: "Output files", Value: "zstd", Usage: "zstd, snappy or none"},
			&cli.IntFlag{Name: "row-group-rows", Category: "Output files", Value: 16384, Usage: "rows per output row group (at most); the writer buffers one row group, so this bounds memory"},
			&cli.StringFlag{Name: "summary", Usage: "write a JSON summary (counts, timings, img/s) to this file"},
			&cli.StringFlag{Name: "metrics-file", Usage: "write the run's outcome, row counts, img/s and duration as Prometheus text (node_exporter's textfile collector: a *.prom file in its directory)"},
			&cli.StringFlag{Name: "shard", Category: "Nightly runs", Usage: "I/N: score only shard I (0-based) of N; N workers together cover every input once"},
			&cli.IntFlag{Name: "shards", Category: "Nightly runs", EnvVars: []string{"NINBATCH_SHARDS"}, Usage: "N, with the shard index from $JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or $SLURM_ARRAY_TASK_ID (Slurm job array)"},
			&cli.Int64Flag{Name: "split-rows", Category: "Nightly runs", Usage: "split Parquet inputs above this many rows into row-group ranges, each its own unit and output (0 = never)"},
			&cli.BoolFlag{Name: "force", Category: "Nightly runs", Usage: "rescore inputs the manifest records as finished"},
			&cli.BoolFlag{Name: "prune", Category: "Nightly runs", Usage: "remove outputs whose input is gone from below the input directories (reported in the summary either way)"},
			&cli.IntFlag{Name: "decode-workers", Category: "Engine tuning", Usage: "image decoding goroutines (default: --threads)"},
			&cli.IntFlag{Name: flagThreads, Category: "Engine tuning", Usage: "cores for inference (overrides the global --threads)"},
		},
		Action: runRun,
	}
}

func parseShape(s string) (nbio.Shape, error) {
	if s == "" {
		return nbio.Shape{}, nil
	}
	p := strings.Split(strings.ToLower(s), "x")
	if len(p) != 3 {
		return nbio.Shape{}, fmt.Errorf("--shape %q: want HxWxC", s)
	}
	var v [3]int
	for i, q := range p {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > 65536 {
			return nbio.Shape{}, fmt.Errorf("--shape %q: want HxWxC with positive integers", s)
		}
		v[i] = n
	}
	return nbio.Shape{H: v[0], W: v[1], C: v[2]}, nil
}

func runRun(c *cli.Context) error {
	tuning, err := tuningOf(c) // before anything is read or written
	if err != nil {
		return err
	}
	cfg, err := runConfig(c)
	if err != nil {
		return err
	}
	summary, metrics := c.String("summary"), c.String("metrics-file")
	for _, f := range [][2]string{{"--summary", summary}, {"--metrics-file", metrics}} {
		if f[1] != "" {
			if err := checkWritable(f[1], f[0]); err != nil {
				return err
			}
		}
	}
	sum, err := score(c, cfg, tuning)
	if metrics != "" {
		err = writeReport(metrics, "metrics file", promText(sum, exitCodeOf(err), time.Now()), err)
	}
	if sum != nil {
		finalFields = func(e *zerolog.Event) {
			e.Str("shard", sum.Shard).Int("units", sum.Files).Int("done", sum.FilesDone).Int("skipped_finished", sum.FilesSkip).
				Int("failed", sum.FilesFailed).Int("stale_temporaries_removed", sum.StaleTemps).Int64("rows", sum.RowsIn).
				Int64("scored", sum.RowsScored).Int64("errors", sum.RowsError).Int64("skipped", sum.RowsSkipped).
				Float64("seconds", sum.Seconds).Float64("img_per_s", sum.ImgPerSec)
		}
	}
	if summary == "" {
		return err
	}
	if sum == nil {
		sum = &pipeline.RunSummary{}
	}
	sum.Status = statusOf(exitCodeOf(err))
	if err != nil {
		sum.Error = err.Error()
	}
	b, jerr := jsonIndent(sum)
	if jerr != nil {
		return jerr
	}
	return writeReport(summary, "summary", b, err)
}

// writeReport writes a run's summary or metrics file atomically and
// returns the run's error, made a failure (exit 1) when the file could
// not be written after a run that would otherwise pass or be partial: a
// scheduler or an alert reading the file must not see a stale success.
func writeReport(path, what string, b []byte, runErr error) error {
	werr := writeAtomic(path, b)
	if werr == nil {
		return runErr
	}
	werr = fmt.Errorf("writing %s %s: %w", what, path, werr)
	if runErr == nil || exitCodeOf(runErr) == exitRowsErrors {
		return &exitError{exitFailed, werr}
	}
	logger.Error().Err(werr).Msg("writing the " + what)
	return runErr
}

// score loads the model and runs the pipeline; its error carries the
// exit code (runOutcome).
func score(c *cli.Context, cfg pipeline.RunConfig, tuning nin.Tuning) (*pipeline.RunSummary, error) {
	m, err := loadModel(c.String(flagModel))
	if err != nil {
		return nil, asUsage(err)
	}
	if classes := m.Spec.Classes(); cfg.TopK > classes {
		if c.IsSet("topk") {
			return nil, usageErr("--topk %d: want 0..%d (the model's classes)", cfg.TopK, classes)
		}
		cfg.TopK = classes // the default, 5, on a model with fewer classes
	}
	threads := threadsOf(c)
	if cfg.Workers <= 0 {
		cfg.Workers = threads
	}
	prec, err := precisionOf(c)
	if err != nil {
		return nil, err
	}
	net, err := nin.NewNet(m, nin.Options{MaxBatch: cfg.Batch, Threads: threads, Precision: prec, Tuning: tuning})
	if err != nil {
		return nil, asUsage(err)
	}
	defer net.Close()
	ctx, stop, signalCode := signalContext()
	defer stop()

	bar := newProgress()
	r := &pipeline.Runner{Model: m, Net: net, Mem: memory.DefaultAllocator, Config: cfg}
	runHooks(r, bar)
	logger.Info().Str("model", c.String(flagModel)).Str("model_id", m.ID).Int("inputs", len(cfg.Inputs)).
		Int("batch", cfg.Batch).Int("threads", threads).Str("isa", net.ISA()).Msg("scoring")
	sum, runErr := r.Run(ctx)
	bar.done()
	return sum, runOutcome(sum, runErr, signalCode())
}

// runConfig reads and checks run's flags and inputs.
func runConfig(c *cli.Context) (pipeline.RunConfig, error) {
	var cfg pipeline.RunConfig
	if c.NArg() == 0 {
		return cfg, usageErr("give at least one input file, directory or glob")
	}
	onErr := c.String("on-error")
	if onErr != "record" && onErr != "skip" && onErr != "fail" {
		return cfg, usageErr("--on-error %q: want record, skip or fail", onErr)
	}
	shape, err := parseShape(c.String("shape"))
	if err != nil {
		return cfg, usageErr("%v", err)
	}
	batch := c.Int(flagBatch)
	if batch < 1 || batch > 65536 {
		return cfg, usageErr("--batch %d: want 1..65536", batch)
	}
	switch c.String("compression") {
	case "zstd", "snappy", "none":
	default:
		return cfg, usageErr("--compression %q: want zstd, snappy or none", c.String("compression"))
	}
	pixelRange := float32(c.Float64("pixel-range"))
	if pixelRange != 255 && pixelRange != 1 {
		return cfg, usageErr("--pixel-range %v: want 255 (float tensors hold 0..255, like decoded images) or 1 (0..1, PyTorch's ToTensor)", c.Float64("pixel-range"))
	}
	shard, shards, err := parseShard(c.String("shard"), c.Int("shards"), os.Getenv)
	if err != nil {
		return cfg, usageErr("%v", err)
	}
	if n := c.Int("decode-workers"); n < 0 || n > 256 {
		return cfg, usageErr("--decode-workers %d: want 1..256, or 0 for --threads", n)
	}
	if n := c.Int("row-group-rows"); n < 1 || n > 1<<24 {
		return cfg, usageErr("--row-group-rows %d: want 1..%d", n, 1<<24)
	}
	if n := c.Int("topk"); n < 0 {
		return cfg, usageErr("--topk %d: want 0 (no column) up to the model's classes", n)
	}
	if m := c.String("maps"); m != "" && m != pipeline.MapsTop1 && m != pipeline.MapsLabel {
		return cfg, usageErr("--maps %q: want top1 or label", m)
	}
	if c.IsSet("map-label-col") && c.String("maps") != pipeline.MapsLabel {
		return cfg, usageErr("--map-label-col needs --maps label")
	}
	if c.Int64("split-rows") < 0 {
		return cfg, usageErr("--split-rows must not be negative")
	}
	out, err := nbio.LocalPath(c.String(flagOut))
	if err != nil {
		return cfg, usageErr("--out: %v", err)
	}
	if nbio.IsURL(out) {
		if _, err := nbio.ParseObjectURL(out); err != nil {
			return cfg, usageErr("--out: %v", err)
		}
	}
	inputs, err := nbio.ExpandInputFiles(c.Args().Slice(), nbio.ExpandOptions{Recursive: c.Bool("recursive"), Exclude: []string{out}})
	if err != nil {
		return cfg, asUsage(err)
	}
	return pipeline.RunConfig{Inputs: inputs, OutDir: out, ImageCol: c.String("image-col"), Shape: shape,
		PixelRange: pixelRange, Prefix: c.String("prefix"), Prune: c.Bool("prune"),
		Batch: batch, TopK: c.Int("topk"), OnError: onErr, Compression: c.String("compression"),
		RowGroupRows: c.Int("row-group-rows"), Workers: c.Int("decode-workers"), Version: version,
		Shard: shard, Shards: shards, Force: c.Bool("force"), SplitRows: c.Int64("split-rows"),
		Maps: c.String("maps"), MapLabelCol: c.String("map-label-col")}, nil
}

// runHooks wires the runner's progress, warnings and per-file lines to
// the log and the progress bar.
func runHooks(r *pipeline.Runner, bar *progress) {
	start := time.Now()
	r.Progress = func(input string, done, total int64) {
		el := time.Since(start).Seconds()
		rate := float64(done) / el
		eta := "?"
		if total > 0 && rate > 0 {
			eta = (time.Duration(float64(total-done)/rate) * time.Second).Round(time.Second).String()
		}
		bar.show("%d/%d rows  %.0f img/s  ETA %s  %s", done, total, rate, eta, filepath.Base(input))
		if bar.every() {
			logger.Info().Int64("rows", done).Int64("total", total).Float64("img_per_s", rate).Str("eta", eta).Str("input", input).Msg("scoring")
		}
	}
	r.Warn = func(msg string) {
		bar.done()
		logger.Warn().Msg(msg)
	}
	r.FileDone = func(fs pipeline.FileSummary) {
		bar.done()
		logger.Info().Str("input", fs.Input).Str("output", fs.Output).Int64("rows", fs.RowsIn).
			Int64("errors", fs.RowsError).Int64("skipped", fs.RowsSkipped).Float64("seconds", fs.Seconds).Msg("file done")
	}
}

// runOutcome maps a run's result to the exit codes: 2 a run that must not
// start as configured, 75 an output another run holds, 1 a failed run,
// 130/143 one stopped by SIGINT or SIGTERM, 3 files or rows that could not
// be scored, 70 a bug.
func runOutcome(sum *pipeline.RunSummary, runErr error, signalCode int) error {
	var locked *pipeline.LockedError
	var config *pipeline.ConfigError
	var internal *pipeline.InternalError
	switch {
	case runErr == nil:
	case errors.As(runErr, &internal):
		logger.Error().Str("stack", string(internal.Stack)).Msg("internal error in a pipeline stage")
		return &exitError{exitInternal, fmt.Errorf("%w (please report it with the log)", runErr)}
	case errors.As(runErr, &locked):
		return &exitError{exitBusy, runErr}
	case errors.As(runErr, &config):
		return &exitError{exitUsage, runErr}
	case errors.Is(runErr, context.Canceled):
		if signalCode == 0 {
			signalCode = exitInterrupted
		}
		return &exitError{signalCode, errors.New("interrupted: the file being written was discarded; finished outputs are complete")}
	default:
		return &exitError{exitFailed, runErr}
	}
	if sum.FilesFailed > 0 {
		return &exitError{exitRowsErrors, fmt.Errorf("%d of %d units could not be scored and were recorded as failed (see the log or --summary); the others are committed",
			sum.FilesFailed, sum.Files)}
	}
	if sum.RowsError+sum.RowsSkipped > 0 {
		return &exitError{exitRowsErrors, fmt.Errorf("%d rows could not be scored (%d recorded with an error, %d skipped)",
			sum.RowsError+sum.RowsSkipped, sum.RowsError, sum.RowsSkipped)}
	}
	return nil
}

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}

// parseShard reads --shard I/N, or --shards N with the index from the
// scheduler: JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or
// SLURM_ARRAY_TASK_ID (a Slurm job array, counted from
// SLURM_ARRAY_TASK_MIN in steps of SLURM_ARRAY_TASK_STEP). A Slurm array
// whose task count is not N is refused: its tasks would score some
// shards twice and others never. (0, 0) means unsharded.
func parseShard(spec string, shards int, env func(string) string) (int, int, error) {
	switch {
	case spec != "":
		var i, n int
		if _, err := fmt.Sscanf(spec, "%d/%d", &i, &n); err != nil || n < 1 || i < 0 || i >= n || fmt.Sprintf("%d/%d", i, n) != spec {
			return 0, 0, fmt.Errorf("--shard %q: want I/N with 0 <= I < N", spec)
		}
		return i, n, nil
	case shards < 0:
		return 0, 0, fmt.Errorf("--shards %d must be positive", shards)
	case shards == 0:
		return 0, 0, nil
	}
	k8s, slurm := env("JOB_COMPLETION_INDEX"), env("SLURM_ARRAY_TASK_ID")
	var i int
	switch {
	case k8s != "":
		v, err := strconv.Atoi(k8s)
		if err != nil || v < 0 || v >= shards {
			return 0, 0, fmt.Errorf("--shards %d needs JOB_COMPLETION_INDEX in 0..%d (got %q)", shards, shards-1, k8s)
		}
		i = v
	case slurm != "":
		num := func(name, def string) (int, error) {
			v := env(name)
			if v == "" {
				v = def
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("%s=%q is not a number", name, v)
			}
			return n, nil
		}
		id, err := num("SLURM_ARRAY_TASK_ID", "")
		if err != nil {
			return 0, 0, err
		}
		lo, err := num("SLURM_ARRAY_TASK_MIN", "0")
		if err != nil {
			return 0, 0, err
		}
		step, err := num("SLURM_ARRAY_TASK_STEP", "1")
		if err != nil {
			return 0, 0, err
		}
		if step < 1 || id < lo || (id-lo)%step != 0 {
			return 0, 0, fmt.Errorf("SLURM_ARRAY_TASK_ID %d is not on the array's range (min %d, step %d)", id, lo, step)
		}
		if n := env("SLURM_ARRAY_TASK_COUNT"); n != "" && n != strconv.Itoa(shards) {
			return 0, 0, fmt.Errorf("--shards %d, but the Slurm array has %s tasks (SLURM_ARRAY_TASK_COUNT): pass --shards $SLURM_ARRAY_TASK_COUNT", shards, n)
		}
		i = (id - lo) / step
		if i >= shards {
			return 0, 0, fmt.Errorf("--shards %d, but SLURM_ARRAY_TASK_ID %d is task %d of the array (min %d, step %d)", shards, id, i, lo, step)
		}
	default:
		return 0, 0, fmt.Errorf("--shards %d needs the shard index from the scheduler: JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm job array); neither is set (use --shard I/N to give it)", shards)
	}
	return i, shards, nil
}
