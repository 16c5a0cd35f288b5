package main

import (
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
