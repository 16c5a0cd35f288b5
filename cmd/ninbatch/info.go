package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/ninbatch/ninbatch/native"
	"github.com/ninbatch/ninbatch/nin"
)

func newInfoCommand() *cli.Command {
	return &cli.Command{
		Name:      "info",
		Usage:     "show a model's layers, shapes, parameters and FLOPs",
		ArgsUsage: "MODEL.nin | --preset NAME",
		Description: `Prints one line per layer (input → output shape, parameters, MFLOPs and the
GEMM each conv runs per image, M = output pixels, K = k·k·Cin, N = Cout) and the totals.
FLOPs are 2 × conv multiply-accumulates per image.

Examples:
   ninbatch info --preset nin-cifar10
   ninbatch info models/nin-mnist.nin --json
   ninbatch info --model models/nin-mnist.nin`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: flagModel, Usage: "model file (.nin), as run and eval take it; or give it as the argument"},
			&cli.StringFlag{Name: flagPreset, Usage: "built-in architecture: " + strings.Join(nin.PresetNames(), ", ")},
			&cli.BoolFlag{Name: flagJSON, Usage: "print JSON instead of a table"},
		}, headFlags()...),
		Action: runInfo,
	}
}

type infoJSON struct {
	Name          string          `json:"name"`
	Source        string          `json:"source"`
	ModelID       string          `json:"model_id,omitempty"`    // content id: spec, preprocessing, classes, tensors
	FileSHA256    string          `json:"file_sha256,omitempty"` // of the file's bytes (provenance included)
	Input         nin.Dims        `json:"input"`
	Pooling       string          `json:"pooling"`
	Classes       int             `json:"classes"`
	ClassNames    []string        `json:"class_names,omitempty"`
	Preprocess    nin.Preprocess  `json:"preprocess"`
	Provenance    *nin.Provenance `json:"provenance,omitempty"`
	Layers        []nin.Layer     `json:"layers"`
	Head          string          `json:"head"`         // gap or fc
	HeadDropout   float64         `json:"head_dropout"` // fc head, training only
	BodyParams    int64           `json:"body_params"`  // the mlpconv blocks
	HeadParams    int64           `json:"head_params"`  // the classifier: 0 for gap
	FCHeadParams  int64           `json:"fc_head_params"`
	TotalParams   int64           `json:"total_params"`
	TotalMACs     int64           `json:"total_macs"`
	GFLOPPerImage float64         `json:"gflop_per_image"`
	ISA           string          `json:"isa"` // the kernels this machine runs
	// Quant is the int8 calibration (ninbatch quantize), and the
	// precisions this machine can run the model at.
	Quant      *nin.Quant `json:"quant,omitempty"`
	Precisions []string   `json:"precisions"`
}

func runInfo(c *cli.Context) error {
	path := c.Args().First()
	switch {
	case c.NArg() > 1:
		return usageErr("info takes one model file")
	case c.IsSet(flagModel) && path != "":
		return usageErr("give the model file as the argument or as --model, not both")
	case c.IsSet(flagModel):
		path = c.String(flagModel)
	}
	m, src, err := modelFrom(c, path, c.String(flagPreset), 1)
	if err != nil {
		return err
	}
	layers, err := m.Spec.Plan()
	if err != nil {
		return err
	}
	params, macs := nin.Totals(layers)
	head, fc, err := m.Spec.HeadParams()
	if err != nil {
		return err
	}
	info := infoJSON{
		Head: m.Spec.HeadKind(), HeadDropout: m.Spec.HeadDropout, BodyParams: params - head, HeadParams: head, FCHeadParams: fc,
		Name: m.Spec.Name, Source: src, ModelID: m.ID, FileSHA256: m.FileHash, Input: m.Spec.Input, Pooling: m.Spec.Pooling,
		Classes: m.Spec.Classes(), ClassNames: m.Classes, Preprocess: m.Preprocess, Layers: layers,
		TotalParams: params, TotalMACs: macs, GFLOPPerImage: 2 * float64(macs) / 1e9, ISA: native.Current().String(),
	}
	if m.ID != "" {
		info.Provenance = &m.Provenance
	}
	info.Quant = m.Quant
	info.Precisions = []string{nin.PrecisionFP32}
	if native.BF16Kernel() != "" {
		info.Precisions = append(info.Precisions, nin.PrecisionBF16)
	}
	if m.Quant != nil && native.Int8Kernel() != "" {
		info.Precisions = append(info.Precisions, nin.PrecisionInt8)
	}
	if c.Bool(flagJSON) {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "model    %s (%s)\n", info.Name, src)
	if m.ID != "" {
		fmt.Fprintf(w, "id       %s\n", m.ID)
		if m.FileHash != "" && m.FileHash != m.ID {
			fmt.Fprintf(w, "file     sha256 %s\n", m.FileHash)
		}
	}
	fmt.Fprintf(w, "input    %s (HxWxC), %s pooling, %d classes\n\n", info.Input, info.Pooling, info.Classes)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tlayer\top\tinput\toutput\tparams\tMFLOPs\tGEMM MxKxN\t")
	for i, l := range layers {
		gemm, mflops := "", ""
		if l.GemmM > 0 {
			gemm = fmt.Sprintf("%dx%dx%d", l.GemmM, l.GemmK, l.GemmN)
			mflops = fmt.Sprintf("%.2f", 2*float64(l.MACs)/1e6)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", i, l.Name, l.Op, l.In, l.Out, commas(l.Params), mflops, gemm)
	}
	fmt.Fprintf(tw, "\ttotal\t\t\t\t%s\t%.2f\t\t\n", commas(params), 2*float64(macs)/1e6)
	tw.Flush()
	fmt.Fprintf(w, "\n%s parameters (%.2f MiB float32), %.3f GFLOP/image (2 x %s MACs)\n",
		commas(params), float64(params)*4/(1<<20), info.GFLOPPerImage, commas(macs))
	if info.Head == nin.HeadGAP {
		fmt.Fprintf(w, "head     gap: 0 parameters (an fc head on the same body would add %s); body %s\n", commas(fc), commas(info.BodyParams))
	} else {
		fmt.Fprintf(w, "head     fc, dropout %g: %s parameters (%.0f%% of the model); body %s\n",
			info.HeadDropout, commas(head), 100*float64(head)/float64(params), commas(info.BodyParams))
	}
	fmt.Fprintf(w, "kernels  %s here (cpu: %s; NINBATCH_ISA=avx2|scalar lowers it)\n", info.ISA, native.CPUFlags())
	if q := m.Quant; q != nil {
		fmt.Fprintf(w, "int8     calibrated (%s, %d images): %d of %d convs int8\n", q.Method, q.CalibImages, len(q.Int8Layers()), len(q.Layers))
	}
	fmt.Fprintf(w, "precision %s here (--precision)\n", strings.Join(info.Precisions, ", "))
	return nil
}

// commas formats 966986 as "966,986".
func commas(v int64) string {
	s := fmt.Sprint(v)
	if v == 0 {
		return "0"
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}
