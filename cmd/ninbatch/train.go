package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/urfave/cli/v2"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

func newTrainCommand() *cli.Command {
	return &cli.Command{
		Name:      "train",
		Usage:     "train a NIN model on labelled Parquet/Arrow images",
		ArgsUsage: "TRAIN_DATA...",
		Description: `Trains with SGD + momentum (Caffe update rule, weight decay on weights only,
per-layer learning-rate multipliers from the spec), dropout, and a step or cosine
schedule with optional warm-up. After every epoch it writes a checkpoint (weights,
momentum and state) and appends a JSON line of metrics; --resume continues from the
checkpoint exactly. The final model records how it was made.

Example:
   ninbatch train --preset nin-mnist --val data/mnist/test.parquet --epochs 20 \
       --lr 0.05 --schedule step --step-epochs 12,17 --out models/nin-mnist.nin data/mnist/train.parquet`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: flagPreset, Usage: "architecture: " + strings.Join(nin.PresetNames(), ", ")},
			&cli.StringFlag{Name: "spec", Usage: "architecture JSON file (instead of --preset)"},
			&cli.StringFlag{Name: "init", Usage: "start from this model file's weights (fine-tuning)"},
			&cli.StringFlag{Name: flagOut, Required: true, Usage: "final model file"},
			&cli.StringFlag{Name: "val", Usage: "validation data (Parquet/Arrow)"},
			&cli.IntFlag{Name: "epochs", Value: 20, Usage: "passes over the training data"},
			&cli.IntFlag{Name: flagBatch, Aliases: []string{"batch-size"}, Value: 128, Usage: "images per SGD step (32 for a set under 8,192 images, so a short run still takes enough steps to learn)"},
			&cli.Float64Flag{Name: "lr", Category: "Optimiser and schedule", Value: 0.03, Usage: "base learning rate"},
			&cli.StringFlag{Name: "schedule", Category: "Optimiser and schedule", Value: "step", Usage: "step, cosine or const"},
			&cli.StringFlag{Name: "step-epochs", Category: "Optimiser and schedule", Value: "", Usage: "step schedule: epochs at which the rate is multiplied by --gamma (e.g. 12,17)"},
			&cli.Float64Flag{Name: "gamma", Category: "Optimiser and schedule", Value: 0.1, Usage: "step schedule: factor applied to the rate at each --step-epochs epoch"},
			&cli.Float64Flag{Name: "warmup", Category: "Optimiser and schedule", Value: 0, Usage: "linear warm-up, in epochs"},
			&cli.Float64Flag{Name: "momentum", Category: "Optimiser and schedule", Value: 0.9, Usage: "SGD momentum (Caffe's update rule)"},
			&cli.Float64Flag{Name: "weight-decay", Category: "Optimiser and schedule", Value: 1e-4, Usage: "L2 penalty on the weights (not the biases)"},
			&cli.Uint64Flag{Name: flagSeed, Value: 1, Usage: "seed of the init, shuffles, dropout and augmentation (the same seed gives the same run)"},
			&cli.BoolFlag{Name: "no-dropout", Category: "Network and init", Usage: "train without the spec's dropout layers"},
			&cli.BoolFlag{Name: "no-final-relu", Category: "Network and init", Usage: "drop the ReLU after the last conv (guards against the dead-ReLU failure)"},
			&cli.IntFlag{Name: "crop-pad", Category: "Augmentation", Usage: "augmentation: random crop after padding by N pixels"},
			&cli.BoolFlag{Name: "flip", Category: "Augmentation", Usage: "augmentation: random horizontal flip"},
			&cli.StringFlag{Name: "image-col", Usage: "image column (default: auto-detect)"},
			&cli.StringFlag{Name: "label-col", Usage: "integer label column (default: label or labels)"},
			&cli.StringFlag{Name: "init-scheme", Category: "Network and init", Value: "lecun", Usage: "weight init: lecun (N(0, 1/fan_in)), kaiming (N(0, 2/fan_in)) or caffe (the spec's Gaussian stds, as in the reference configs; slow to start)"},
			&cli.IntFlag{Name: "limit", Usage: "use only the first N training images, in file order (quick experiments)"},
			&cli.IntFlag{Name: "shuffle-buffer", Usage: "images held for shuffling (0 = 8192, at most 64 MiB of pixels); the set is read from its files every epoch, row groups in a shuffled order, so memory does not grow with the set"},
			&cli.StringFlag{Name: "checkpoint", Category: "Checkpoints and outputs", Usage: "checkpoint file (default OUT.ckpt)"},
			&cli.BoolFlag{Name: "resume", Category: "Checkpoints and outputs", Usage: "continue from the checkpoint"},
			&cli.BoolFlag{Name: "force", Category: "Checkpoints and outputs", Usage: "replace an existing --out, checkpoint and metrics file (a new run over a checkpoint is refused without it)"},
			&cli.BoolFlag{Name: "export", Category: "Checkpoints and outputs", Usage: "write the checkpoint's model (as far as training got) to --out and stop"},
			&cli.StringFlag{Name: "metrics", Category: "Checkpoints and outputs", Usage: "per-epoch metrics, JSON lines (default OUT.metrics.jsonl)"},
			&cli.StringFlag{Name: flagReport, Category: "Checkpoints and outputs", Usage: "HTML report written at the end: the curves and epochs, and with --val the evaluation, class maps and most confident mistakes (default OUT.report.html; none for no report)"},
			&cli.StringFlag{Name: "plot", Category: "Checkpoints and outputs", Usage: "training curves, PNG, redrawn every epoch (default OUT.curves.png)"},
			&cli.IntFlag{Name: flagThreads, Category: "Engine tuning", Usage: "cores (overrides the global --threads)"},
		}, headFlags()...),
		Action: runTrain,
	}
}

// globalThreads is the global --threads value, set in the app's Before.
var globalThreads = runtime.NumCPU()

// threadsOf is the command's own --threads when given, else the global one.
// (urfave/cli resolves a name to the innermost flag set that defines it, so
// the global value must be captured before the command's flags shadow it.)
func threadsOf(c *cli.Context) int {
	for _, n := range c.LocalFlagNames() {
		if n == flagThreads {
			return c.Int(flagThreads)
		}
	}
	return globalThreads
}

func runTrain(c *cli.Context) error {
	if c.NArg() == 0 && !c.Bool("export") {
		return usageErr("give the training data (Parquet or Arrow files)")
	}
	tuning, err := tuningOf(c)
	if err != nil {
		return err
	}
	cfg, err := trainConfigOf(c)
	if err != nil {
		return err
	}
	files := trainFilesOf(c)
	if err := checkTrainOutputs(c, files); err != nil {
		return err
	}
	reportPath := c.String(flagReport)
	switch reportPath {
	case "":
		reportPath = files.Model + ".report.html"
	case "none":
		reportPath = ""
	}
	if reportPath != "" && !c.Bool("export") {
		guarded := append([]string{files.Model, files.Checkpoint, files.Metrics, files.Curves, c.String("val")}, c.Args().Slice()...)
		if err := replaceable(reportPath, "--report", htmlMagic, guarded); err != nil {
			return err
		}
	}
	if c.Bool("export") {
		m, st, err := pipeline.ExportCheckpoint(files)
		if err != nil {
			return asUsage(err)
		}
		logModelWritten(files.Model, m, st)
		return nil
	}
	if os.Getenv("GOGC") == "" {
		// the trainer's ~100 MB of long-lived buffers would otherwise let each
		// epoch's decode garbage grow the heap by as much again
		debug.SetGCPercent(25)
	}
	tr := &pipeline.Trainer{Config: cfg, Threads: threadsOf(c), Tuning: tuning, Files: files}
	if err := loadTrainInputs(c, tr); err != nil {
		return err
	}
	if !c.IsSet(flagBatch) && tr.Train.Rows() < smallSet {
		tr.Config.Batch = smallSetBatch // 2,000 images at 128 would be 16 steps an epoch: too few to leave ln(classes)
	}
	ctx, stop, signalCode := signalContext()
	defer stop()
	bar := newProgress()
	tr.Hooks = trainHooks(bar, cfg.Epochs, tr.Val != nil)
	err = tr.Run(ctx)
	bar.done()
	switch {
	case errors.Is(err, context.Canceled):
		return &exitError{max(signalCode(), exitInterrupted), fmt.Errorf("interrupted; continue with --resume (checkpoint %s holds %d finished epochs)", files.Checkpoint, tr.State.Epoch)}
	case errors.Is(err, pipeline.ErrConfigMismatch), errors.Is(err, pipeline.ErrTrainFiles):
		return asUsage(err)
	case err != nil && !errors.Is(err, pipeline.ErrModelWritten):
		return err
	}
	logModelWritten(files.Model, tr.Model, tr.State)
	if reportPath != "" {
		if rerr := trainReport(c, tr, reportPath); rerr != nil {
			return errors.Join(err, fmt.Errorf("the model was written, the report was not: %w", rerr))
		}
	}
	return err // nil, or the model was written but the metrics file was not
}

// trainReport writes the run's report: its epochs and curves (the
// checkpoint's history: every epoch, a resumed run's too), and the final
// model evaluated on the validation set.
func trainReport(c *cli.Context, tr *pipeline.Trainer, path string) error {
	history := tr.State.History
	m := tr.Model
	var r *pipeline.EvalResult
	var mc *pipeline.MapCollector
	var md nin.Dims
	var data []string
	if tr.Val != nil {
		const batch = 64
		net, err := nin.NewNet(m, nin.Options{MaxBatch: batch, Threads: tr.Threads, Tuning: tr.Tuning})
		if err != nil {
			return err
		}
		defer net.Close()
		mc, md, data = reportCollector(), net.MapDims(), []string{c.String("val")}
		t0 := time.Now()
		if r, err = pipeline.EvaluateMaps(c.Context, net, tr.Val, tr.Prep, batch, mc); err != nil {
			return err
		}
		r.Seconds = time.Since(t0).Seconds()
		r.ImgPerSec = float64(r.N) / r.Seconds
	}
	page, err := newReport("Training run of "+m.Spec.Name, tr.Files.Model, m, data, r, mc, md)
	if err != nil {
		return err
	}
	page.History = history
	if len(history) > 0 {
		if page.CurvesPNG, err = pipeline.CurvesPNG(history); err != nil {
			return err
		}
	}
	if tr.Val == nil {
		page.Note = "No validation data (--val): the report has the curves and the provenance, no evaluation."
	}
	return writeHTMLReport(path, page)
}

// A set under smallSet images trains with smallSetBatch unless --batch is given.
const smallSet, smallSetBatch = 8192, 32

// trainConfigOf reads the training settings from the flags.
func trainConfigOf(c *cli.Context) (pipeline.TrainConfig, error) {
	steps, err := parseInts(c.String("step-epochs"))
	if err != nil {
		return pipeline.TrainConfig{}, usageErr("--step-epochs: %v", err)
	}
	cfg := pipeline.TrainConfig{
		Epochs: c.Int("epochs"), Batch: c.Int(flagBatch), LR: c.Float64("lr"), Schedule: c.String("schedule"),
		StepEpochs: steps, Gamma: c.Float64("gamma"), WarmupEpochs: c.Float64("warmup"),
		Momentum: c.Float64("momentum"), WeightDecay: c.Float64("weight-decay"), Seed: c.Uint64(flagSeed),
		NoDropout: c.Bool("no-dropout"), CropPad: c.Int("crop-pad"), Flip: c.Bool("flip"),
		ShuffleBuffer: c.Int("shuffle-buffer"),
	}
	if n := c.Int("limit"); n < 0 {
		return cfg, usageErr("--limit %d: want 0 (all images) or more", n)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageErr("%v", err)
	}
	return cfg, nil
}

// trainFilesOf names the run's outputs, defaulting each to OUT plus a suffix.
func trainFilesOf(c *cli.Context) pipeline.TrainFiles {
	out := c.String(flagOut)
	or := func(flag, suffix string) string {
		if v := c.String(flag); v != "" {
			return v
		}
		return out + suffix
	}
	return pipeline.TrainFiles{Model: out, Checkpoint: or("checkpoint", ".ckpt"), Metrics: or("metrics", ".metrics.jsonl"),
		Curves: or("plot", ".curves.png"), Dataset: strings.Join(c.Args().Slice(), ","), Command: cmdline, Version: version}
}

// loadTrainInputs fills in the model (new, or the checkpoint's with
// --resume) and the decoded training and validation sets.
func loadTrainInputs(c *cli.Context, tr *pipeline.Trainer) error {
	var err error
	if c.Bool("resume") {
		if err := headFixed(c, "the checkpoint"); err != nil {
			return err
		}
		if tr.Model, tr.Velocity, tr.State, err = pipeline.LoadCheckpoint(tr.Files.Checkpoint); err != nil {
			return asUsage(err)
		}
		logger.Info().Str("checkpoint", tr.Files.Checkpoint).Int("epochs_done", tr.State.Epoch).Uint64("step", tr.State.Step).Msg("resuming")
	} else {
		if tr.Model, err = newTrainModel(c); err != nil {
			return err
		}
		if c.Bool("no-final-relu") {
			tr.Model.Spec.NoFinalReLU = true
		}
	}
	m := tr.Model
	tr.Prep = pipeline.PreprocessFor(m)
	var train, val *nbio.LabeledStream
	load := func(args []string) (*nbio.LabeledStream, error) {
		files, err := nbio.ExpandInputs(args)
		if err != nil {
			return nil, asUsage(err)
		}
		return nbio.OpenLabeledStream(files, nbio.LabelOptions{ImageCol: c.String("image-col"), LabelCol: c.String("label-col"),
			Classes: m.Spec.Classes(), ClassNames: m.Classes, Workers: tr.Threads}, tr.Prep, memory.DefaultAllocator)
	}
	t0 := time.Now()
	if train, err = load(c.Args().Slice()); err != nil {
		return err
	}
	if n := c.Int("limit"); n > 0 {
		train.Limit(n)
	}
	tr.Train = train
	if v := c.String("val"); v != "" {
		if val, err = load([]string{v}); err != nil {
			return err
		}
		tr.Val = val
	}
	if m.Classes == nil && len(train.Classes) == m.Spec.Classes() {
		m.Classes = train.Classes
	}
	logger.Info().Int("train", train.N).Int("val", valN(val)).Float64("open_s", time.Since(t0).Seconds()).
		Int("shuffle_buffer", nbio.ShuffleRows(tr.Config.ShuffleBuffer, tr.Prep.Len(), train.N)).
		Str("model", m.Spec.Name).Int("threads", tr.Threads).Msg("data loaded")
	return nil
}

// trainHooks show progress on the terminal and in the log.
func trainHooks(bar *progress, epochs int, hasVal bool) pipeline.TrainHooks {
	return pipeline.TrainHooks{
		Progress: func(epoch, step, steps int, loss float64) {
			bar.show("epoch %d/%d  step %d/%d  loss %.4f", epoch, epochs, step, steps, loss)
			if bar.every() {
				logger.Info().Int("epoch", epoch).Int("step", step).Int("steps", steps).Float64("loss", loss).Msg("training")
			}
		},
		Warn: func(msg string) { bar.done(); logger.Warn().Msg(msg) },
		Epoch: func(em pipeline.EpochMetrics) {
			bar.done()
			ev := logger.Info().Int("epoch", em.Epoch).Float64("lr", em.LR).Float64("train_loss", em.TrainLoss).Float64("train_acc", em.TrainAcc)
			if hasVal {
				ev = ev.Float64("val_loss", em.ValLoss).Float64("val_acc", em.ValAcc)
			}
			ev.Float64("alive", em.AliveFrac).Float64("img_per_s", em.ImgPerSec).Float64("seconds", em.Seconds).Msg("epoch done")
		},
	}
}

func logModelWritten(out string, m *nin.Model, st pipeline.TrainState) {
	logger.Info().Str("out", out).Str("model_id", m.ID).Int("epochs", st.Epoch).
		Float64("training_s", st.Seconds).Interface("final", m.Provenance.Metrics).Msg("model written")
}

// checkTrainOutputs refuses to replace a model, checkpoint or metrics file
// that an earlier run left, unless --force: a new run over a checkpoint
// would restart from epoch 0 and overwrite it, and --out may be a
// trained model. --resume continues the run that wrote them.
func checkTrainOutputs(c *cli.Context, f pipeline.TrainFiles) error {
	out, ckpt, metrics := f.Model, f.Checkpoint, f.Metrics
	if c.Bool("force") {
		return nil
	}
	if c.Bool("export") {
		return refuseReplace(out, "the model exported from the checkpoint")
	}
	if c.Bool("resume") {
		return nil
	}
	if _, err := os.Stat(ckpt); err == nil {
		epochs := "an earlier run"
		if _, _, st, err := pipeline.LoadCheckpoint(ckpt); err == nil {
			epochs = fmt.Sprintf("a run that finished %d epochs", st.Epoch)
		}
		return usageErr("checkpoint %s exists (%s): pass --resume to continue it, or --force to start over (replacing it, %s and %s)", ckpt, epochs, metrics, out)
	}
	if err := refuseReplace(out, "the model this run trains"); err != nil {
		return err
	}
	return refuseReplace(metrics, "this run's metrics")
}

// refuseReplace is a usage error when path exists: commands that write a
// model replace an existing file only with --force.
func refuseReplace(path, what string) error {
	if _, err := os.Lstat(path); err == nil {
		return usageErr("%s exists: pass --force to replace it with %s, or choose another path", path, what)
	}
	return nil
}

func valN(v *nbio.LabeledStream) int {
	if v == nil {
		return 0
	}
	return v.N
}

func newTrainModel(c *cli.Context) (*nin.Model, error) {
	var spec *nin.Spec
	var err error
	switch {
	case c.String("init") != "":
		if err := headFixed(c, c.String("init")); err != nil {
			return nil, err
		}
		m, err := loadModel(c.String("init"))
		if err != nil {
			return nil, asUsage(err)
		}
		m.Provenance.Init = "from " + c.String("init") + " (" + m.ID + ")"
		m.Quant = nil // training changes the weights: their int8 scales no longer hold
		return m, nil
	default:
		if spec, err = specFrom(c); err != nil {
			return nil, err
		}
		if spec == nil {
			return nil, usageErr("give --preset, --spec or --init")
		}
	}
	m, err := nin.NewModel(spec)
	if err != nil {
		return nil, asUsage(err)
	}
	seed := c.Uint64(flagSeed)
	switch c.String("init-scheme") {
	case "caffe":
		m.Params.InitGaussian(seed)
		m.Provenance.Init = fmt.Sprintf("gaussian (caffe stds) seed=%d", seed)
	case "kaiming":
		m.Params.InitKaiming(seed)
		m.Provenance.Init = fmt.Sprintf("kaiming seed=%d", seed)
	case "lecun":
		m.Params.InitLeCun(seed)
		m.Provenance.Init = fmt.Sprintf("lecun seed=%d", seed)
	default:
		return nil, usageErr("--init-scheme %q: want caffe, kaiming or lecun", c.String("init-scheme"))
	}
	return m, nil
}
