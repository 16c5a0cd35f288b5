package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/urfave/cli/v2"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
)

func newEvalCommand() *cli.Command {
	return &cli.Command{
		Name:      "eval",
		Usage:     "measure a model's accuracy on labelled data",
		ArgsUsage: "DATA...",
		Description: `Prints top-1 and top-5 accuracy, mean log-loss, per-class accuracy and the
confusion matrix (rows: true class, columns: predicted). Labels are integers, or
strings matched against the model's class names. A bad row (unreadable image, null
or unknown label) stops the evaluation, or with --on-error skip is left out, named
in the log and counted (exit 3).

Example:
   ninbatch eval --model models/nin-mnist.nin data/mnist/test.parquet`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagModel, Required: true, Usage: "model file"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print JSON"},
			&cli.IntFlag{Name: flagBatch, Aliases: []string{"batch-size"}, Value: 64, Usage: "images per forward call"},
			&cli.StringFlag{Name: "image-col", Usage: "image column (default: auto-detect)"},
			&cli.StringFlag{Name: "label-col", Usage: "label column: integers, or strings among the model's class names (default: label or labels)"},
			&cli.StringFlag{Name: flagReport, Usage: "also write a self-contained HTML report (confusion matrix, per-class accuracy, class maps, the most confident mistakes, provenance) to this `FILE`"},
			&cli.StringFlag{Name: "on-error", Value: "fail", Usage: "bad rows: fail (stop, naming file, row and column) or skip (leave out and count)"},
			&cli.IntFlag{Name: flagThreads, Usage: "cores (overrides the global --threads)"},
			precisionFlag(),
			&cli.StringFlag{Name: "compare-to", Usage: "also score in this precision (fp32) and print the top-1 agreement and the largest probability change against it"},
		},
		Action: runEval,
	}
}

func runEval(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageErr("give the data to evaluate on")
	}
	tuning, err := tuningOf(c)
	if err != nil {
		return err
	}
	m, err := loadModel(c.String(flagModel))
	if err != nil {
		return asUsage(err)
	}
	files, err := nbio.ExpandInputs(c.Args().Slice())
	if err != nil {
		return asUsage(err)
	}
	if out := c.String(flagReport); out != "" {
		if err := replaceable(out, "--report", htmlMagic, append([]string{c.String(flagModel)}, files...)); err != nil {
			return err
		}
	}
	threads := threadsOf(c)
	prep := pipeline.PreprocessFor(m)
	onErr := c.String("on-error")
	if onErr != "fail" && onErr != "skip" {
		return usageErr("--on-error %q: want fail or skip", onErr)
	}
	data, err := nbio.OpenLabeledStream(files, nbio.LabelOptions{ImageCol: c.String("image-col"), LabelCol: c.String("label-col"),
		Classes: m.Spec.Classes(), ClassNames: m.Classes, Workers: threads, SkipBad: onErr == "skip",
		Warn: func(msg string) { logger.Warn().Msg(msg) }}, prep, memory.DefaultAllocator)
	if err != nil {
		return err
	}
	batch := c.Int(flagBatch)
	prec, err := precisionOf(c)
	if err != nil {
		return err
	}
	net, err := nin.NewNet(m, nin.Options{MaxBatch: batch, Threads: threads, Precision: prec, Tuning: tuning})
	if err != nil {
		return asUsage(err)
	}
	defer net.Close()
	var ref *nin.Net
	if to := c.String("compare-to"); to != "" {
		if to != nin.PrecisionFP32 {
			return usageErr("--compare-to %q: want fp32", to)
		}
		if prec == to {
			return usageErr("--compare-to %s compares another --precision (bf16) with %s", to, to)
		}
		if ref, err = nin.NewNet(m, nin.Options{MaxBatch: batch, Threads: threads, Precision: to, Tuning: tuning}); err != nil {
			return asUsage(err)
		}
		defer ref.Close()
	}
	var mc *pipeline.MapCollector
	if c.String(flagReport) != "" {
		mc = reportCollector()
	}
	t0 := time.Now()
	r, err := pipeline.EvaluateCompare(c.Context, net, ref, data, prep, batch, mc)
	if err != nil {
		return err
	}
	r.RowsSkipped = data.Skipped
	r.Seconds = time.Since(t0).Seconds()
	r.ImgPerSec = float64(r.N) / r.Seconds
	if out := c.String(flagReport); out != "" {
		page, err := newReport("Evaluation of "+m.Spec.Name, c.String(flagModel), m, files, r, mc, net.MapDims())
		if err != nil {
			return err
		}
		if data.Skipped > 0 {
			page.Note = fmt.Sprintf("%d bad rows were left out of the evaluation (--on-error skip).", data.Skipped)
		}
		if err := writeHTMLReport(out, page); err != nil {
			return err
		}
	}
	if c.Bool(flagJSON) {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		err := enc.Encode(struct {
			Model   string   `json:"model"`
			ModelID string   `json:"model_id"`
			Data    []string `json:"data"`
			Classes []string `json:"classes,omitempty"`
			*pipeline.EvalResult
		}{c.String(flagModel), m.ID, files, m.Classes, r})
		if err != nil {
			return err
		}
		return skippedRows(data.Skipped)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "model %s (%s)\ndata  %s: %d images\n\n", c.String(flagModel), m.ID[:12], strings.Join(files, ", "), r.N)
	fmt.Fprintf(w, "top-1 accuracy  %.4f  (error %.2f%%, %d wrong)\n", r.Top1, 100*r.Error, r.N-int(r.Top1*float64(r.N)+0.5))
	fmt.Fprintf(w, "top-5 accuracy  %.4f\nmean log-loss   %.4f\nspeed           %.0f img/s\n\n", r.Top5, r.LogLoss, r.ImgPerSec)
	if a := r.Compare; a != nil {
		fmt.Fprintf(w, "against %s     top-1 agreement %.2f%%, largest probability change %.4f, %s error %.2f%%\n\n",
			a.Precision, 100*a.Top1Agreement, a.MaxProbChange, a.Precision, 100*a.ErrorRef)
	}
	if len(r.PerClass) <= 50 {
		tw := tabwriter.NewWriter(w, 2, 8, 1, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "true\\pred\t")
		for k := range r.PerClass {
			fmt.Fprintf(tw, "%s\t", className(m.Classes, k))
		}
		fmt.Fprint(tw, "n\taccuracy\t\n")
		for k, row := range r.Confusion {
			fmt.Fprintf(tw, "%s\t", className(m.Classes, k))
			for _, v := range row {
				fmt.Fprintf(tw, "%d\t", v)
			}
			fmt.Fprintf(tw, "%d\t%.4f\t\n", r.ClassN[k], r.PerClass[k])
		}
		tw.Flush()
	}
	return skippedRows(data.Skipped)
}

func className(names []string, k int) string {
	if k < len(names) {
		return names[k]
	}
	return fmt.Sprint(k)
}

// skippedRows is exit 3 when eval left bad rows out.
func skippedRows(n int) error {
	if n == 0 {
		return nil
	}
	return &exitError{exitRowsErrors, fmt.Errorf("%d rows could not be read and were left out of the evaluation", n)}
}
