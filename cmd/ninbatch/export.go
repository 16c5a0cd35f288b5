package main

import (
	"github.com/urfave/cli/v2"

	"github.com/ninbatch/ninbatch/onnx"
)

func newExportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write a .nin model as ONNX for other runtimes",
		ArgsUsage: "MODEL.nin",
		Description: `Writes opset 13 with a dynamic batch: input "input" float32 [batch, C, H, W]
(preprocessed as the model's doc string and metadata say), output "probs"
[batch, classes]. The spec, preprocessing and class names ride in the
metadata, so "ninbatch import" gives back the identical model.

Example:
   ninbatch export models/nin-mnist.nin --format onnx --out nin-mnist.onnx`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagOut, Required: true, Usage: "output file"},
			&cli.StringFlag{Name: "format", Value: "onnx", Usage: "output format (onnx)"},
			&cli.BoolFlag{Name: "force", Usage: "replace --out if it exists"},
		},
		Action: runExport,
	}
}

func runExport(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr("give one .nin model")
	}
	if f := c.String("format"); f != "onnx" {
		return usageErr("--format %q: only onnx is supported", f)
	}
	out := c.String(flagOut)
	if !c.Bool("force") {
		if err := refuseReplace(out, "the exported model"); err != nil {
			return err
		}
	}
	m, err := loadModel(c.Args().First())
	if err != nil {
		return asUsage(err)
	}
	g, err := onnx.Export(m, version)
	if err != nil {
		return err
	}
	b := g.Marshal()
	if err := writeAtomic(out, b); err != nil {
		return err
	}
	logger.Info().Str("out", out).Str("model_id", m.ID).Int("bytes", len(b)).Int64("opset", onnx.ExportOpset).Msg("model exported")
	return nil
}
