package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ninbatch/ninbatch/nin"
)

func newInitCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "write a randomly initialised model file",
		Description: `Creates a .nin model of a preset architecture with Caffe-style Gaussian
weights (the per-layer std of the reference configs) and zero biases.

Example:
   ninbatch init --preset nin-mnist --seed 1 --out mnist-init.nin`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: flagPreset, Required: true, Usage: "architecture: " + strings.Join(nin.PresetNames(), ", ")},
			&cli.Uint64Flag{Name: flagSeed, Value: 1, Usage: "random seed"},
			&cli.StringFlag{Name: flagOut, Required: true, Usage: "output .nin file"},
			&cli.StringFlag{Name: "classes", Usage: "comma-separated class names (one per output)"},
			&cli.BoolFlag{Name: "force", Usage: "replace --out if it exists"},
		}, headFlags()...),
		Action: runInit,
	}
}

func runInit(c *cli.Context) error {
	if !c.Bool("force") {
		if err := refuseReplace(c.String(flagOut), "random weights"); err != nil {
			return err
		}
	}
	s, err := specFrom(c)
	if err != nil {
		return err
	}
	m, err := nin.NewModel(s)
	if err != nil {
		return err
	}
	if cl := c.String("classes"); cl != "" {
		m.Classes = strings.Split(cl, ",")
		if len(m.Classes) != s.Classes() {
			return usageErr("--classes has %d names, %s has %d outputs", len(m.Classes), s.Name, s.Classes())
		}
	}
	seed := c.Uint64(flagSeed)
	m.Params.InitGaussian(seed)
	m.Provenance = nin.Provenance{
		Created: time.Now().UTC().Format(time.RFC3339), NinbatchVersion: version,
		Command: cmdline, Init: fmt.Sprintf("gaussian seed=%d", seed),
	}
	out := c.String(flagOut)
	if err := m.SaveFile(out); err != nil {
		return err
	}
	logger.Info().Str("out", out).Str("model_id", m.ID).Str("preset", s.Name).Uint64("seed", seed).Msg("model written")
	return nil
}
