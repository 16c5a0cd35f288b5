package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ninbatch/ninbatch/blas"
	"github.com/ninbatch/ninbatch/native"
	"github.com/ninbatch/ninbatch/nin"
)

func newBenchCommand() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "time the forward pass on synthetic input",
		ArgsUsage: "[MODEL.nin]",
		Description: `Runs the forward pass on random input (and random weights for a preset) and
prints images/s and effective GFLOP/s (2 × conv MACs per image), median and best of
--reps timed repetitions.

Examples:
   ninbatch bench --preset nin-cifar10 --batch 64 --threads 2
   ninbatch --threads 1 bench --preset nin-mnist --batch 16 --tuning '{"mode":"streams"}' --json`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: flagPreset, Usage: "architecture: " + strings.Join(nin.PresetNames(), ", ")},
			&cli.StringFlag{Name: flagModel, Usage: "model file (instead of --preset)"},
			&cli.IntFlag{Name: flagBatch, Aliases: []string{"batch-size"}, Value: 64, Usage: "images per forward call"},
			&cli.IntFlag{Name: flagThreads, Usage: "cores (overrides the global --threads)"},
			precisionFlag(),
			&cli.StringFlag{Name: flagTuning, Usage: `engine tuning as JSON, e.g. '{"mode":"streams","winograd":"off","gemm":"openblas"}' (default: $` + nin.TuningEnv + `; see docs/engine.md)`},
			&cli.IntFlag{Name: "reps", Value: 5, Usage: "timed repetitions"},
			&cli.Float64Flag{Name: "rep-seconds", Value: 0.5, Usage: "minimum length of one repetition"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print JSON"},
			&cli.BoolFlag{Name: "serve", Usage: "answer JSON-line timing requests on stdin (for scripts/bench_peers.py)"},
		}, headFlags()...),
		Action: runBench,
	}
}

type benchResult struct {
	Model         string   `json:"model"`
	Batch         int      `json:"batch"`
	Threads       int      `json:"threads"`
	Mode          string   `json:"mode"`
	Wait          string   `json:"wait,omitempty"` // split calls at batch < threads: spin or park
	Winograd      []string `json:"winograd_layers"`
	Direct        []string `json:"direct_layers"`
	GEMM          string   `json:"gemm"` // "packed" or "openblas": what ran the conv GEMMs
	ISA           string   `json:"isa"`  // the kernels' instruction set: avx512, avx2 or scalar
	CPUFlags      string   `json:"cpu_flags"`
	MicroBatch    int      `json:"micro_batch"`
	Reps          int      `json:"reps"`
	ImgPerSec     float64  `json:"img_per_s"`      // median
	ImgPerSecBest float64  `json:"img_per_s_best"` // best rep
	GFLOPs        float64  `json:"gflop_per_s"`    // median
	GFLOPsBest    float64  `json:"gflop_per_s_best"`
	GFLOPPerImage float64  `json:"gflop_per_image"`
	BLAS          string   `json:"blas"`
	// CPU time (all threads) per image over the timed reps: on a shared
	// machine a steadier comparison between settings than img/s.
	CPUMsPerImage float64 `json:"cpu_ms_per_image"`
}

func runBench(c *cli.Context) error {
	if c.Bool("serve") {
		return serveBench(c.App.Reader, c.App.Writer)
	}
	m, src, err := modelFrom(c, c.String(flagModel)+c.Args().First(), c.String(flagPreset), 1)
	if err != nil {
		return err
	}
	threads := threadsOf(c)
	batch, reps := c.Int(flagBatch), c.Int("reps")
	if batch < 1 || reps < 1 || c.Float64("rep-seconds") <= 0 {
		return usageErr("--batch, --reps and --rep-seconds must be positive")
	}
	tuning, err := tuningOf(c)
	if err != nil {
		return err
	}
	prec, err := precisionOf(c)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, batch*m.Spec.Input.Len())
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	if prec == nin.PrecisionInt8 && m.Quant == nil && c.String(flagPreset) != "" {
		// random weights: calibrated on the random input itself
		if m, err = nin.CalibrateOn(m, x, batch); err != nil {
			return err
		}
	}
	net, err := nin.NewNet(m, nin.Options{MaxBatch: batch, Threads: threads, Precision: prec, Tuning: tuning})
	if err != nil {
		return asUsage(err)
	}
	defer net.Close()
	layers := net.Layers()
	_, macs := nin.Totals(layers)
	gflop := 2 * float64(macs) / 1e9

	probs := make([]float32, batch*net.Classes())
	forward := func() error { return net.Forward(x, batch, probs, nil) }

	// Calibrate: calls per rep so a rep lasts at least rep-seconds.
	if err := forward(); err != nil {
		return err
	}
	t0 := time.Now()
	calls := 0
	for time.Since(t0).Seconds() < 0.2 || calls < 1 {
		if err := forward(); err != nil {
			return err
		}
		calls++
	}
	per := time.Since(t0).Seconds() / float64(calls)
	inner := max(1, int(c.Float64("rep-seconds")/per+0.5))
	rates := make([]float64, reps)
	cpu0 := cpuSeconds()
	for i := range rates {
		t := time.Now()
		for j := 0; j < inner; j++ {
			if err := forward(); err != nil {
				return err
			}
		}
		rates[i] = float64(inner*batch) / time.Since(t).Seconds()
	}
	cpuPerImage := (cpuSeconds() - cpu0) / float64(reps*inner*batch)
	sorted := slices.Clone(rates)
	slices.Sort(sorted)
	opt := net.Options()
	res := benchResult{
		Model: src, Batch: batch, Threads: threads, Mode: string(opt.Mode), Winograd: net.WinogradForms(), Direct: net.DirectLayers(), MicroBatch: opt.MicroBatch, Reps: reps,
		GEMM: gemmName(net.PackedGEMM()), ISA: net.ISA(), CPUFlags: native.CPUFlags(),
		ImgPerSec: sorted[len(sorted)/2], ImgPerSecBest: sorted[len(sorted)-1], GFLOPPerImage: gflop,
		BLAS: blas.Backend + " " + blas.CoreName(), CPUMsPerImage: cpuPerImage * 1e3,
	}
	res.GFLOPs, res.GFLOPsBest = res.ImgPerSec*gflop, res.ImgPerSecBest*gflop
	waits := ""
	if batch < threads && opt.Mode == nin.ModeAuto {
		res.Wait = opt.Wait
		waits = ", split calls " + res.Wait
	}
	if c.Bool(flagJSON) {
		return json.NewEncoder(c.App.Writer).Encode(res)
	}
	fmt.Fprintf(c.App.Writer, "%s batch %d threads %d mode %s (micro-batch %d, gemm %s, isa %s, winograd %v%s): %.1f img/s, %.1f GFLOP/s median; best %.1f img/s, %.1f GFLOP/s; %.2f CPU ms/image (%d reps x %d calls, %s; cpu: %s)\n",
		src, batch, threads, res.Mode, res.MicroBatch, res.GEMM, res.ISA, res.Winograd, waits, res.ImgPerSec, res.GFLOPs, res.ImgPerSecBest, res.GFLOPsBest, res.CPUMsPerImage, reps, inner, res.BLAS, res.CPUFlags)
	return nil
}

// cpuSeconds is the process's user + system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// gemmName names what ran a Net's conv GEMMs.
func gemmName(packed bool) string {
	if packed {
		return string(nin.GEMMPacked)
	}
	return string(nin.GEMMOpenBLAS)
}
