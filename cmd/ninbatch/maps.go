package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/urfave/cli/v2"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/pipeline"
	"github.com/ninbatch/ninbatch/report"
)

func newMapsCommand() *cli.Command {
	return &cli.Command{
		Name:      "maps",
		Usage:     "draw the class maps: what each class's last feature map sees in an image",
		ArgsUsage: "DATA...",
		Description: `Draws the Network In Network paper's figure for a model and labelled data: one
row per image, the input first, then one map per class (the last mlpconv's output
before global average pooling, upsampled to the input, viridis, one scale per row),
the label's map framed in black and the prediction underlined in red. By default one
correctly classified image per class; --pick wrong shows the most confident mistakes,
--pick first the first images whatever their outcome. --overlay draws the predicted
class's map over each image instead. --json also writes the raw maps.

A map's mean over its pixels is the class's logit: with the GAP head the maps are
the model's own confidence maps; with an fc head each pixel's share of the fully
connected layer.

Example:
   ninbatch maps --model models/nin-mnist.nin --out maps.png data/mnist/test.parquet`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagModel, Required: true, Usage: "model file"},
			&cli.StringFlag{Name: flagOut, Required: true, Usage: "the figure, PNG"},
			&cli.IntFlag{Name: "rows", Usage: "images to draw (default: one per class, at most 10 with --pick wrong or first)"},
			&cli.StringFlag{Name: "pick", Value: "correct", Usage: "which images: correct (correctly classified, classes in turn), wrong (most confident mistakes) or first (in file order)"},
			&cli.BoolFlag{Name: "overlay", Usage: "draw the predicted class's map over each image instead of a row of maps"},
			&cli.StringFlag{Name: flagJSON, Usage: "also write the raw maps and predictions to this JSON `FILE`"},
			&cli.StringFlag{Name: "image-col", Usage: "image column (default: auto-detect)"},
			&cli.StringFlag{Name: "label-col", Usage: "label column: integers, or strings among the model's class names (default: label or labels)"},
			&cli.IntFlag{Name: flagBatch, Aliases: []string{"batch-size"}, Value: 64, Usage: "images per forward call"},
			&cli.IntFlag{Name: flagThreads, Usage: "cores (overrides the global --threads)"},
		},
		Action: runMaps,
	}
}

func runMaps(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageErr("give the labelled data to draw from")
	}
	out, jsonOut := c.String(flagOut), c.String(flagJSON)
	pick, rows := c.String("pick"), c.Int("rows")
	switch {
	case pick != "correct" && pick != "wrong" && pick != "first":
		return usageErr("--pick %q: want correct, wrong or first", pick)
	case rows < 0 || rows > 1000:
		return usageErr("--rows %d: want 1..1000 (0: the default)", rows)
	}
	files, err := nbio.ExpandInputs(c.Args().Slice())
	if err != nil {
		return asUsage(err)
	}
	guarded := append([]string{c.String(flagModel)}, files...)
	if err := replaceable(out, "--out", []byte("\x89PNG"), guarded); err != nil {
		return err
	}
	if jsonOut != "" {
		if err := replaceable(jsonOut, "--json", []byte("{"), guarded); err != nil {
			return err
		}
	}
	tuning, err := tuningOf(c)
	if err != nil {
		return err
	}
	m, err := loadModel(c.String(flagModel))
	if err != nil {
		return asUsage(err)
	}
	threads := threadsOf(c)
	prep := pipeline.PreprocessFor(m)
	data, err := nbio.OpenLabeledStream(files, nbio.LabelOptions{ImageCol: c.String("image-col"), LabelCol: c.String("label-col"),
		Classes: m.Spec.Classes(), ClassNames: m.Classes, Workers: threads}, prep, memory.DefaultAllocator)
	if err != nil {
		return err
	}
	batch := c.Int(flagBatch)
	net, err := nin.NewNet(m, nin.Options{MaxBatch: batch, Threads: threads, Tuning: tuning})
	if err != nil {
		return asUsage(err)
	}
	defer net.Close()
	mc := &pipeline.MapCollector{StopWhenFull: true}
	switch pick {
	case "correct":
		mc.PerClass = 1
		if classes := m.Spec.Classes(); rows > classes {
			mc.PerClass = (rows + classes - 1) / classes
		}
	case "wrong":
		mc.Mistakes, mc.StopWhenFull = or(rows, 10), false
	case "first":
		mc.First = or(rows, 10)
	}
	if _, err := pipeline.EvaluateMaps(c.Context, net, data, prep, batch, mc); err != nil {
		return err
	}
	var samples []pipeline.MapSample
	switch pick {
	case "correct":
		samples = mc.Grid(rows)
	case "wrong":
		samples = mc.Wrong
	case "first":
		samples = mc.FirstN
	}
	if len(samples) == 0 {
		return fmt.Errorf("no %s images to draw in %s", map[string]string{"correct": "correctly classified", "wrong": "misclassified", "first": ""}[pick], strings.Join(files, ", "))
	}
	md := net.MapDims()
	stride, offset, err := m.Spec.MapGrid()
	if err != nil {
		return err
	}
	sh := report.Shape{H: m.Spec.Input.H, W: m.Spec.Input.W, C: m.Spec.Input.C, MapH: md.H, MapW: md.W,
		MapStride: stride, MapOffset: offset, Classes: md.C, ClassNames: m.Classes}
	var img image.Image
	if c.Bool("overlay") {
		img = report.Overlay(samples, sh)
	} else {
		img = report.Grid(samples, sh)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return err
	}
	if err := writeAtomic(out, buf.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	if jsonOut != "" {
		buf.Reset()
		if err := writeMapsJSON(&buf, m, files, md, samples); err != nil {
			return err
		}
		if err := writeAtomic(jsonOut, buf.Bytes()); err != nil {
			return fmt.Errorf("writing %s: %w", jsonOut, err)
		}
	}
	logger.Info().Str("out", out).Int("images", len(samples)).Str("pick", pick).
		Str("maps", fmt.Sprintf("%dx%d", md.H, md.W)).Msg("maps drawn")
	return nil
}

func or(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// writeMapsJSON writes the samples' predictions and raw class maps.
func writeMapsJSON(w io.Writer, m *nin.Model, files []string, md nin.Dims, samples []pipeline.MapSample) error {
	type image struct {
		pipeline.MapSample
		LabelName string      `json:"label_name,omitempty"`
		PredName  string      `json:"pred_name,omitempty"`
		Maps      [][]float32 `json:"maps"` // [class][y*map_w + x]
	}
	doc := struct {
		Model   string   `json:"model"`
		ModelID string   `json:"model_id"`
		Head    string   `json:"head"`
		Data    []string `json:"data"`
		MapH    int      `json:"map_h"`
		MapW    int      `json:"map_w"`
		Classes []string `json:"classes,omitempty"`
		Images  []image  `json:"images"`
	}{Model: m.Spec.Name, ModelID: m.ID, Head: m.Spec.HeadKind(), Data: files, MapH: md.H, MapW: md.W, Classes: m.Classes}
	hw := md.H * md.W
	for _, s := range samples {
		im := image{MapSample: s, LabelName: className(m.Classes, s.Label), PredName: className(m.Classes, s.Pred), Maps: make([][]float32, md.C)}
		for k := range im.Maps {
			im.Maps[k] = make([]float32, hw)
			for p := 0; p < hw; p++ {
				im.Maps[k][p] = s.Maps[p*md.C+k]
			}
		}
		doc.Images = append(doc.Images, im)
	}
	enc := json.NewEncoder(w)
	return enc.Encode(doc)
}

// replaceable refuses an output path that is one of the run's inputs or an
// existing file that does not start with magic (so a mistyped --out never
// overwrites data or a model); an earlier output of the same kind is
// replaced.
func replaceable(path, flag string, magic []byte, inputs []string) error {
	st, err := os.Stat(path)
	if err != nil {
		return checkWritable(path, flag)
	}
	for _, in := range inputs {
		if ist, err := os.Stat(in); err == nil && os.SameFile(st, ist) {
			return usageErr("%s %s is one of the inputs: choose another path", flag, path)
		}
	}
	if st.IsDir() {
		return usageErr("%s %s is a directory", flag, path)
	}
	if !st.Mode().IsRegular() { // a device or a pipe: written through a temporary file and a rename, it cannot be
		return usageErr("%s %s is not a regular file", flag, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return usageErr("%s %s: %v", flag, path, err)
	}
	defer f.Close()
	head := make([]byte, len(magic))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, magic) {
		return usageErr("%s %s exists and is not a file this command wrote: remove it or choose another path", flag, path)
	}
	return nil
}
