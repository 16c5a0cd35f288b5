package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/urfave/cli/v2"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

func newQuantizeCommand() *cli.Command {
	return &cli.Command{
		Name:      "quantize",
		Usage:     "calibrate a model for --precision int8",
		ArgsUsage: " ",
		Description: `Runs the fp32 model over calibration images (a sample of what it will score;
labels are not needed), records the range of every conv layer's input and writes
a copy of the model with int8 scales: one per layer for the activations (u8),
one per output channel for the weights (s8, symmetric, max|w|/127). The fp32
weights stay in the file, so it also runs at --precision fp32 and bf16; the
first conv, whose input (normalised pixels) is signed, stays fp32.

--method chooses the activation clip: mse (default) minimises the expected
squared error of the quantised activations over the calibration histogram;
percentile clips at --percentile of the values; max keeps the largest value
seen. The output is format ninbatch.nin/2, which ninbatch versions before
int8 support refuse.

Example:
   ninbatch quantize --model models/nin-mnist.nin --calib data/mnist/train.parquet --out nin-mnist-int8.nin
   ninbatch eval --model nin-mnist-int8.nin --precision int8 --compare-to fp32 data/mnist/test.parquet`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagModel, Required: true, Usage: "fp32 model file"},
			&cli.StringSliceFlag{Name: "calib", Required: true, Usage: "calibration images: Parquet or Arrow files, directories or globs (repeatable)"},
			&cli.StringFlag{Name: flagOut, Required: true, Usage: "output .nin file"},
			&cli.BoolFlag{Name: "force", Usage: "replace --out if it exists (never --model itself)"},
			&cli.IntFlag{Name: "calib-rows", Value: 2000, Usage: "images to calibrate on, drawn across the files with a fixed seed"},
			&cli.StringFlag{Name: "method", Value: nin.CalibMSE, Usage: "activation clip: mse, percentile or max"},
			&cli.Float64Flag{Name: "percentile", Value: 99.99, Usage: "the clip of --method percentile"},
			&cli.StringFlag{Name: "image-col", Usage: "image column (default: auto-detect)"},
			&cli.IntFlag{Name: flagThreads, Usage: "decoding goroutines (overrides the global --threads)"},
		},
		Action: runQuantize,
	}
}

var errCalibFull = errors.New("calibration sample complete")

func runQuantize(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErr("unexpected arguments %v: give the calibration data with --calib", c.Args().Slice())
	}
	in, out := c.String(flagModel), c.String(flagOut)
	if st, err := os.Stat(out); err == nil {
		if ist, err := os.Stat(in); err == nil && os.SameFile(st, ist) {
			return usageErr("--out %s is the --model: write the int8 model to another file", out)
		}
		if !c.Bool("force") {
			return usageErr("%s exists: pass --force to replace it with the int8 model, or choose another path", out)
		}
	}
	method := c.String("method")
	switch method {
	case nin.CalibMSE, nin.CalibMax:
	case nin.CalibPercentile:
		if p := c.Float64("percentile"); !(p > 50 && p <= 100) {
			return usageErr("--percentile %g: want a value in (50, 100]", p)
		}
	default:
		return usageErr("--method %q: want mse, percentile or max", method)
	}
	rows := c.Int("calib-rows")
	if rows < 1 {
		return usageErr("--calib-rows %d: want at least 1", rows)
	}
	m, err := loadModel(in)
	if err != nil {
		return asUsage(err)
	}
	files, err := nbio.ExpandInputs(c.StringSlice("calib"))
	if err != nil {
		return asUsage(err)
	}
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			if ost, err := os.Stat(out); err == nil && os.SameFile(st, ost) {
				return usageErr("--out %s is one of the --calib files: choose another path", out)
			}
		}
	}
	prep := pipeline.PreprocessFor(m)
	data, err := nbio.OpenLabeledStream(files, nbio.LabelOptions{ImageCol: c.String("image-col"), Unlabeled: true,
		Workers: threadsOf(c)}, prep, memory.DefaultAllocator)
	if err != nil {
		return err
	}
	const batch = 64
	cal, err := nin.NewCalibrator(m, batch)
	if err != nil {
		return err
	}
	defer cal.Close()
	sz := prep.Len()
	x := make([]float32, batch*sz)
	// shuffled chunks and a shuffle buffer: the sample spans the files, not their first rows
	ord := nbio.Order{Shuffle: true, Seed: 1, Buffer: min(rows*4, nbio.DefaultShuffleRows)}
	err = data.Each(c.Context, ord, batch, func(pix []uint8, _ []int32, n int) error {
		n = min(n, rows-cal.Images())
		for j := 0; j < n; j++ {
			prep.Normalize(x[j*sz:(j+1)*sz], pix[j*sz:(j+1)*sz])
		}
		if err := cal.Add(x, n); err != nil {
			return err
		}
		if cal.Images() >= rows {
			return errCalibFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errCalibFull) {
		return err
	}
	if cal.Images() < rows {
		logger.Warn().Int("images", cal.Images()).Int("calib_rows", rows).Msg("the calibration data has fewer images than --calib-rows: calibrating on all of them")
	}
	q, err := cal.Quant(method, c.Float64("percentile"))
	if err != nil {
		return err
	}
	q.CalibData = fmt.Sprintf("%d images of %v (sha256 %s)", cal.Images(), c.StringSlice("calib"), data.Fingerprint)
	m.Quant = q
	m.Provenance.Command = cmdline
	if err := m.SaveFile(out); err != nil {
		return err
	}
	ev := logger.Info().Str("out", out).Str("model_id", m.ID).Int("calib_images", cal.Images()).Str("method", method).
		Strs("int8_layers", q.Int8Layers())
	if k := len(m.Params.Convs) - len(q.Int8Layers()); k > 0 {
		ev = ev.Int("fp32_layers", k)
	}
	ev.Msg("int8 model written")
	return nil
}
