package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ninbatch/ninbatch/nin"
	"github.com/ninbatch/ninbatch/onnx"
)

const defaultImportScale = 1.0 / 255

func newImportCommand() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "turn a NIN trained elsewhere (ONNX, or a PyTorch state dict in safetensors) into a .nin model",
		ArgsUsage: "SRC.onnx | SRC.safetensors",
		Description: `ONNX (opsets 11-21, as torch.onnx.export writes them): the graph must be one
chain of Conv, Relu, MaxPool/AveragePool, Dropout, then GlobalAveragePool (or
ReduceMean over H,W), Flatten/Reshape/Squeeze and Softmax. Any other node is
refused with its name and op type. External data (.onnx.data) must sit in the
model's folder. A file ninbatch exported keeps its spec, preprocessing and
class names.

A PyTorch state dict (safetensors.torch.save_file) needs the architecture:
--preset or --spec FILE.json (models/specs/d2l-nin.json is d2l.ai's NiN).
Tensors match by ninbatch's names (mlpconv1.0.weight) or else in module
order (0.0.weight, 0.2.weight, ...), every shape checked.

Preprocessing defaults to torchvision's ToTensor(): resize to the input size,
pixel/255, no mean or std. Give what your training used:
--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 for ImageNet-style Normalize.

Examples:
   ninbatch import nin.onnx --out nin.nin --classes classes.txt
   ninbatch import d2l.safetensors --spec models/specs/d2l-nin.json --mean 0.5 --std 0.5 --out d2l.nin`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: flagOut, Required: true, Usage: "output .nin file"},
			&cli.BoolFlag{Name: "force", Usage: "replace --out if it exists"},
			&cli.StringFlag{Name: flagPreset, Usage: "architecture of a state dict: " + strings.Join(nin.PresetNames(), ", ")},
			&cli.StringFlag{Name: "spec", Usage: "architecture of a state dict as a spec `FILE.json`"},
			&cli.StringFlag{Name: "input", Usage: "image size `HxW` when the ONNX graph leaves it symbolic"},
			&cli.StringFlag{Name: "name", Usage: "model name (default: the spec's, or SRC's file name)"},
			&cli.Float64Flag{Name: "scale", Value: defaultImportScale, Usage: "pixel 0..255 × scale, before mean and std (ToTensor)", DefaultText: "1/255"},
			&cli.StringFlag{Name: "mean", Usage: "per-channel mean subtracted after scaling, comma-separated (default none)"},
			&cli.StringFlag{Name: "std", Usage: "per-channel std divided by after the mean, comma-separated (default none)"},
			&cli.StringFlag{Name: "resize", Value: "exact", Usage: "exact (to the input size), shorter (shorter side to --resize-to, center crop) or none"},
			&cli.IntFlag{Name: "resize-to", Usage: "shorter side for --resize shorter (e.g. 256 for a 224 crop)"},
			&cli.BoolFlag{Name: "gray", Usage: "the model takes one gray channel (checked against the model's input)"},
			&cli.StringFlag{Name: "classes", Usage: "class names, one per line in `FILE`, in output order"},
		}, headFlags()...),
		Action: runImport,
	}
}

func runImport(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr("give one source file (.onnx or .safetensors)")
	}
	src, out := c.Args().First(), c.String(flagOut)
	if !c.Bool("force") {
		if err := refuseReplace(out, "the imported model"); err != nil {
			return err
		}
	}
	spec, err := specFrom(c)
	if err != nil {
		return err
	}
	sum, safetensors, err := sniffSource(src)
	if err != nil {
		return asUsage(err)
	}
	var m *nin.Model
	fromMeta := false
	kind := "onnx"
	if safetensors {
		kind = "safetensors"
		if spec == nil {
			return usageErr("%s is a safetensors state dict: give its architecture with --preset or --spec FILE.json", src)
		}
		if m, err = nin.LoadStateDict(src, spec); err != nil {
			return asUsage(err)
		}
	} else {
		if m, fromMeta, err = importONNX(c, src, spec); err != nil {
			return err
		}
	}
	if err := applyImportFlags(c, m, fromMeta, src); err != nil {
		return err
	}
	m.Provenance = nin.Provenance{
		Created: time.Now().UTC().Format(time.RFC3339), NinbatchVersion: version, Command: cmdline,
		Init: "imported", Source: kind + " " + filepath.Base(src), SourceSHA256: sum,
	}
	if err := m.SaveFile(out); err != nil {
		return err
	}
	params, _ := nin.Totals(mustPlan(&m.Spec))
	logger.Info().Str("out", out).Str("model_id", m.ID).Str("source", src).Str("format", kind).
		Str("input", m.Spec.Input.String()).Int("classes", m.Spec.Classes()).Int64("params", params).
		Str("pooling", m.Spec.Pooling).Msg("model imported")
	return nil
}

func mustPlan(s *nin.Spec) []nin.Layer {
	l, _ := s.Plan()
	return l
}

// sniffSource hashes the file and tells a safetensors file (u64 header
// length, then '{') from an ONNX protobuf.
func sniffSource(path string) (sum string, safetensors bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	var head [9]byte
	n, _ := io.ReadFull(f, head[:])
	safetensors = n == 9 && head[8] == '{'
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", false, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", false, fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), safetensors, nil
}

func importONNX(c *cli.Context, src string, spec *nin.Spec) (*nin.Model, bool, error) {
	g, err := onnx.ReadFile(src)
	if err != nil {
		return nil, false, asUsage(err)
	}
	var in nin.Dims
	if s := c.String("input"); s != "" {
		if _, err := fmt.Sscanf(strings.ToLower(s), "%dx%d", &in.H, &in.W); err != nil || in.H < 1 || in.W < 1 {
			return nil, false, usageErr("--input %q: want HxW, e.g. 224x224", s)
		}
	}
	imp, err := onnx.Import(g, onnx.ImportOptions{Dir: filepath.Dir(src), Input: in})
	if err != nil {
		return nil, false, asUsage(fmt.Errorf("%s: %w", src, err))
	}
	m := imp.Model
	if spec != nil {
		// the user's spec brings training settings; the graph decides the layers
		if !onnx.SameLayers(spec, &m.Spec) {
			return nil, false, usageErr("%s: the graph's layers differ from the given architecture %s", src, spec.Name)
		}
		m.Spec = *spec
		m.ID = m.ContentID()
	}
	if imp.Softmax == "" {
		logger.Info().Str("source", src).Msg("the graph ends at the class scores; ninbatch writes their softmax")
	}
	return m, imp.FromMetadata, nil
}

// applyImportFlags sets name, preprocessing and class names. A ninbatch
// export's own metadata stands unless a flag is given.
func applyImportFlags(c *cli.Context, m *nin.Model, fromMeta bool, src string) error {
	s := &m.Spec
	if c.IsSet("name") {
		s.Name = c.String("name")
	} else if !fromMeta && (s.Name == "" || s.Name == "imported") {
		s.Name = strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
	}
	if c.Bool("gray") && s.Input.C != 1 {
		return usageErr("--gray: the model takes %d channels", s.Input.C)
	}
	p := &m.Preprocess
	if !fromMeta {
		color := map[int]string{1: "gray", 3: "rgb"}[s.Input.C]
		*p = nin.Preprocess{Resize: "exact", Color: color, Scale: defaultImportScale}
	}
	if c.IsSet("scale") || !fromMeta {
		p.Scale = c.Float64("scale")
	}
	if c.IsSet("resize") || !fromMeta {
		p.Resize, p.ResizeTo = c.String("resize"), c.Int("resize-to")
	}
	for _, f := range []struct {
		name string
		dst  *[]float64
	}{{"mean", &p.Mean}, {"std", &p.Std}} {
		if !c.IsSet(f.name) {
			continue
		}
		v, err := parseFloatList(c.String(f.name))
		if err != nil {
			return usageErr("--%s: %v", f.name, err)
		}
		if len(v) == 1 && s.Input.C == 3 {
			v = []float64{v[0], v[0], v[0]}
		}
		*f.dst = v
	}
	if p.Mean != nil && p.Std == nil {
		p.Std = make([]float64, len(p.Mean))
		for i := range p.Std {
			p.Std[i] = 1
		}
	}
	if p.Std != nil && p.Mean == nil {
		p.Mean = make([]float64, len(p.Std))
	}
	if err := p.Validate(s); err != nil {
		return asUsage(err)
	}
	if f := c.String("classes"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return asUsage(err)
		}
		var names []string
		for _, l := range strings.Split(string(bytes.TrimRight(b, "\r\n")), "\n") {
			if len(b) == 0 {
				break
			}
			names = append(names, strings.TrimSpace(strings.TrimSuffix(l, "\r")))
		}
		if len(names) != s.Classes() {
			return usageErr("--classes %s has %d names, the model has %d outputs", f, len(names), s.Classes())
		}
		m.Classes = names
	}
	if err := s.Validate(); err != nil {
		return asUsage(err)
	}
	m.ID = m.ContentID()
	return nil
}

func parseFloatList(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, v)
	}
	return out, nil
}
