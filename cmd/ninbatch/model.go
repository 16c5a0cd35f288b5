package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/ninbatch/ninbatch/nin"
)

// modelFrom returns the model named by MODEL (a .nin file) or by --preset
// (random weights, He init with the given seed), and a label for it.
func modelFrom(path, preset string, seed uint64) (*nin.Model, string, error) {
	switch {
	case path != "" && preset != "":
		return nil, "", usageErr("give a model file or --preset, not both")
	case path != "":
		m, err := nin.LoadFile(path)
		if err != nil {
			return nil, "", asUsage(err)
		}
		return m, path, nil
	case preset != "":
		s, err := nin.Preset(preset)
		if err != nil {
			return nil, "", asUsage(err)
		}
		m, err := nin.NewModel(s)
		if err != nil {
			return nil, "", asUsage(err)
		}
		m.Params.InitHe(seed)
		return m, "preset " + preset, nil
	default:
		return nil, "", usageErr("give a model file or --preset NAME")
	}
}

// specFrom is the architecture named by --spec FILE.json or --preset, or
// nil when neither is given.
func specFrom(c *cli.Context) (*nin.Spec, error) {
	switch {
	case c.String("spec") != "" && c.String(flagPreset) != "":
		return nil, usageErr("give --spec or --preset, not both")
	case c.String("spec") != "":
		b, err := os.ReadFile(c.String("spec"))
		if err != nil {
			return nil, asUsage(err)
		}
		s, err := nin.ParseSpec(b)
		if err != nil {
			return nil, asUsage(fmt.Errorf("%s: %w", c.String("spec"), err))
		}
		return s, nil
	case c.String(flagPreset) != "":
		s, err := nin.Preset(c.String(flagPreset))
		return s, asUsage(err)
	}
	return nil, nil
}
