package main

import (
	"bytes"
	"fmt"
	"image/png"
	"time"

	"github.com/ninbatch/ninbatch/native"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
	"github.com/ninbatch/ninbatch/report"
)

const flagReport = "report"

// htmlMagic starts every report: an existing file without it is not one.
var htmlMagic = []byte("<!DOCTYPE html>")

// reportCollector keeps what a report shows of an evaluation pass.
func reportCollector() *pipeline.MapCollector {
	return &pipeline.MapCollector{PerClass: 1, Mistakes: 8}
}

// newReport assembles the page of an evaluation of m (r and the images mc
// kept; both nil when there was no evaluation).
func newReport(title, modelPath string, m *nin.Model, data []string, r *pipeline.EvalResult, mc *pipeline.MapCollector, md nin.Dims) (*report.Page, error) {
	p := &report.Page{Title: title, Generated: time.Now().UTC().Format(time.RFC3339), Version: version,
		Machine: fmt.Sprintf("kernels %s; cpu %s", native.Current(), native.CPUFlags()), Command: cmdline,
		ModelPath: modelPath, Model: m, Data: data, Eval: r}
	if mc == nil {
		return p, nil
	}
	stride, offset, err := m.Spec.MapGrid()
	if err != nil {
		return nil, err
	}
	sh := report.Shape{H: m.Spec.Input.H, W: m.Spec.Input.W, C: m.Spec.Input.C, MapH: md.H, MapW: md.W,
		MapStride: stride, MapOffset: offset, Classes: md.C, ClassNames: m.Classes}
	encode := func(s []pipeline.MapSample) ([]byte, error) {
		if len(s) == 0 {
			return nil, nil
		}
		var b bytes.Buffer
		err := png.Encode(&b, report.Grid(s, sh))
		return b.Bytes(), err
	}
	grid := mc.Grid(min(md.C, 20)) // one row per class, up to 20 rows
	if p.GridPNG, err = encode(grid); err != nil {
		return nil, err
	}
	p.Mistakes = mc.Wrong
	if p.MistakePNG, err = encode(mc.Wrong); err != nil {
		return nil, err
	}
	return p, nil
}

// writeReport renders p to path atomically.
func writeHTMLReport(path string, p *report.Page) error {
	var b bytes.Buffer
	if err := report.WriteHTML(&b, p); err != nil {
		return err
	}
	if err := writeAtomic(path, b.Bytes()); err != nil {
		return fmt.Errorf("writing the report %s: %w", path, err)
	}
	logger.Info().Str("report", path).Int("bytes", b.Len()).Msg("report written")
	return nil
}
