package main

import (
	"bytes"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

// modelFrom returns the model named by MODEL (a .nin file) or by --preset
// (random weights, He init with the given seed), and a label for it.
// With c, a preset takes the --head flags.
func modelFrom(c *cli.Context, path, preset string, seed uint64) (*nin.Model, string, error) {
	switch {
	case path != "" && preset != "":
		return nil, "", usageErr("give a model file or --preset, not both")
	case path != "":
		if err := headFixed(c, path); err != nil {
			return nil, "", err
		}
		m, err := loadModel(path)
		if err != nil {
			return nil, "", asUsage(err)
		}
		return m, path, nil
	case preset != "":
		s, err := nin.Preset(preset)
		if err != nil {
			return nil, "", asUsage(err)
		}
		if err := applyHead(c, s); err != nil {
			return nil, "", err
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
		return s, applyHead(c, s)
	case c.String(flagPreset) != "":
		s, err := nin.Preset(c.String(flagPreset))
		if err != nil {
			return nil, asUsage(err)
		}
		return s, applyHead(c, s)
	}
	return nil, headFixed(c, "the model")
}

const (
	flagHead        = "head"
	flagHeadDropout = "head-dropout"
)

// headFlags choose the classifier of a model built from --preset or --spec.
func headFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagHead, Category: "Network and init", DefaultText: "the spec's, gap", Usage: "classifier head: gap (global average pooling, NIN's) or fc (flatten, dropout, one fully connected layer: the head NIN replaces)"},
		&cli.Float64Flag{Name: flagHeadDropout, Category: "Network and init", DefaultText: "0.5 with --head fc", Usage: "fc head: dropout on the flattened map, 0 for none"},
	}
}

// applyHead sets s's head from the --head flags, if given.
func applyHead(c *cli.Context, s *nin.Spec) error {
	if c == nil {
		return nil
	}
	if c.IsSet(flagHead) {
		s.Head, s.HeadDropout = c.String(flagHead), 0
		if s.Head == nin.HeadFC {
			s.HeadDropout = 0.5
		}
	}
	if c.IsSet(flagHeadDropout) {
		s.HeadDropout = c.Float64(flagHeadDropout)
	}
	if err := s.Validate(); err != nil {
		return usageErr("--head: %v", err)
	}
	return nil
}

// headFixed refuses the --head flags for a model that exists: its head is
// in its file.
func headFixed(c *cli.Context, what string) error {
	if c != nil && (c.IsSet(flagHead) || c.IsSet(flagHeadDropout)) {
		return usageErr("--head and --head-dropout shape a new model from --preset or --spec; %s has its head already", what)
	}
	return nil
}

// maxModelBytes bounds a model read from a store into memory.
const maxModelBytes = 4 << 30

// loadModel reads a .nin model from a local path, a file:// URL or a
// store (s3://, gs://, az://).
func loadModel(p string) (*nin.Model, error) {
	p, err := nbio.LocalPath(p)
	if err != nil {
		return nil, err
	}
	if !nbio.IsURL(p) {
		return nin.LoadFile(p)
	}
	b, err := nbio.ReadObject(p, maxModelBytes)
	if err != nil {
		return nil, fmt.Errorf("loading model: %w", err)
	}
	m, err := nin.Decode(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("loading model %s: %w", p, err)
	}
	return m, nil
}
