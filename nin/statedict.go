package nin

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// A PyTorch state dict saved with safetensors.torch.save_file holds one
// weight [out, in, kh, kw] and usually one bias [out] per conv, named after
// the module path. LoadStateDict matches them to a spec's convs: by name
// when they use ninbatch's own names (mlpconv1.0.weight), otherwise in
// module order (natural order of the dotted path: d2l's 0.0, 0.2, 0.4,
// 2.0, ... or model.features.3.0), checking every shape.

// stTensor is one entry of a safetensors header.
type stTensor struct {
	name         string
	dtype        string
	shape        []int64
	begin, end   int64
	prefix, kind string // module path and "weight" / "bias"
}

var ninbatchName = regexp.MustCompile(`^(mlpconv(\d+)\.(\d+)|fc)$`)

// LoadStateDict reads a safetensors state dict for spec and returns a model
// with its weights (biases a conv lacks are 0) and the default
// preprocessing. F32, F16, BF16 and F64 tensors are converted to float32.
func LoadStateDict(path string, spec *Spec) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	m, err := decodeStateDict(bufio.NewReaderSize(f, 1<<20), st.Size(), spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func decodeStateDict(r io.Reader, size int64, spec *Spec) (*Model, error) {
	hlen, raw, _, err := readSafetensorsHeader(r, size)
	if err != nil {
		return nil, err
	}
	dataLen := size - 8 - int64(hlen)
	ts, err := stEntries(raw, dataLen)
	if err != nil {
		return nil, err
	}
	m, err := NewModel(spec)
	if err != nil {
		return nil, err
	}
	dst, err := matchStateDict(ts, m.Params)
	if err != nil {
		return nil, err
	}
	// Read the data section in file order, converting each matched tensor.
	sort.Slice(ts, func(i, j int) bool { return ts[i].begin < ts[j].begin })
	var pos int64
	for _, t := range ts {
		if _, err := io.CopyN(io.Discard, r, t.begin-pos); err != nil {
			return nil, fmt.Errorf("reading tensor %s: %w", t.name, err)
		}
		buf := make([]byte, t.end-t.begin)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("reading tensor %s: %w (truncated file?)", t.name, err)
		}
		pos = t.end
		vals, err := stFloats(t, buf)
		if err != nil {
			return nil, err
		}
		d := dst[t.name]
		if t.kind == "weight" {
			d.SetOIHW(vals)
		} else {
			copy(d.B, vals)
		}
	}
	m.ID = m.ContentID()
	return m, nil
}

// stEntries parses the tensor entries and checks that their byte ranges
// tile the data section exactly.
func stEntries(raw map[string]json.RawMessage, dataLen int64) ([]stTensor, error) {
	var ts []stTensor
	for name, rm := range raw {
		var h tensorHeader
		if err := strictJSON(string(rm), &h); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		size := map[string]int64{"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[h.Dtype]
		if size == 0 {
			return nil, fmt.Errorf("tensor %s: dtype %s is not a float type", name, h.Dtype)
		}
		if len(h.DataOffsets) != 2 || len(h.Shape) > 8 {
			return nil, fmt.Errorf("tensor %s: bad shape or data_offsets", name)
		}
		n := int64(1)
		for _, d := range h.Shape {
			if d < 0 || (d > 0 && n > (1<<40)/d) {
				return nil, fmt.Errorf("tensor %s: shape %v out of range", name, h.Shape)
			}
			n *= d
		}
		b, e := h.DataOffsets[0], h.DataOffsets[1]
		if b < 0 || e < b || e > dataLen || e-b != n*size {
			return nil, fmt.Errorf("tensor %s: data_offsets [%d, %d] do not hold %s %v in the %d data bytes", name, b, e, h.Dtype, h.Shape, dataLen)
		}
		t := stTensor{name: name, dtype: h.Dtype, shape: h.Shape, begin: b, end: e}
		i := strings.LastIndexByte(name, '.')
		if i > 0 {
			t.prefix, t.kind = name[:i], name[i+1:]
		}
		if t.kind != "weight" && t.kind != "bias" {
			return nil, fmt.Errorf("tensor %s %v is not a conv or linear weight or bias; a NIN has only convolutions and at most one linear head (no batch-norm)", name, h.Shape)
		}
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].begin < ts[j].begin })
	var pos int64
	for _, t := range ts {
		if t.begin != pos {
			return nil, fmt.Errorf("tensor %s starts at byte %d, want %d: the data section has a gap or an overlap", t.name, t.begin, pos)
		}
		pos = t.end
	}
	if pos != dataLen {
		return nil, fmt.Errorf("tensors cover %d of the %d data bytes", pos, dataLen)
	}
	return ts, nil
}

// matchStateDict maps each tensor name to its conv, checking shapes.
func matchStateDict(ts []stTensor, p *Params) (map[string]*ConvParams, error) {
	byPrefix := map[string][]stTensor{}
	var prefixes []string
	own := true
	for _, t := range ts {
		if byPrefix[t.prefix] == nil {
			prefixes = append(prefixes, t.prefix)
		}
		byPrefix[t.prefix] = append(byPrefix[t.prefix], t)
		own = own && ninbatchName.MatchString(t.prefix)
	}
	if own {
		prefixes = prefixes[:0]
		for _, c := range p.Convs {
			prefixes = append(prefixes, c.Name)
		}
		for pf := range byPrefix {
			if !slices.Contains(prefixes, pf) {
				return nil, fmt.Errorf("tensor %s.weight: the spec has no conv %s", pf, pf)
			}
		}
	} else {
		sort.Slice(prefixes, func(i, j int) bool { return naturalLess(prefixes[i], prefixes[j]) })
		if n := len(p.Convs); n > 0 && p.Convs[n-1].FC {
			// the fc head is the one 2-D weight, wherever its name sorts
			// (torchvision's "classifier" comes before "features")
			lin := slices.IndexFunc(prefixes, func(pf string) bool {
				return slices.ContainsFunc(byPrefix[pf], func(t stTensor) bool { return t.kind == "weight" && len(t.shape) == 2 })
			})
			if lin >= 0 {
				pf := prefixes[lin]
				prefixes = append(slices.Delete(prefixes, lin, lin+1), pf)
			}
		}
	}
	if len(prefixes) != len(p.Convs) {
		return nil, fmt.Errorf("the file has %d convs (%s), the spec %d", len(prefixes), strings.Join(prefixes, ", "), len(p.Convs))
	}
	dst := map[string]*ConvParams{}
	for i, pf := range prefixes {
		c := &p.Convs[i]
		var haveW bool
		for _, t := range byPrefix[pf] {
			want := []int64{int64(c.Cout)}
			if t.kind == "weight" {
				want = c.fileShape()
				haveW = true
			}
			if c.FC && t.kind == "weight" && len(t.shape) == 4 { // an fc head stored as a conv: same bytes
				want = []int64{int64(c.Cout), int64(c.Cin), int64(c.K), int64(c.K)}
			}
			if !slices.Equal(t.shape, want) {
				return nil, fmt.Errorf("tensor %s has shape %v, the spec's %s.%s needs %v", t.name, t.shape, c.Name, t.kind, want)
			}
			dst[t.name] = c
		}
		if !haveW {
			return nil, fmt.Errorf("conv %s (%s in the spec) has no weight tensor", pf, c.Name)
		}
	}
	return dst, nil
}

// naturalLess orders dotted module paths with numeric parts as numbers,
// so "2.0" comes before "10.0" as nn.Sequential numbers them.
func naturalLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea == nil && eb == nil {
			return na < nb
		}
		// mlpconv10 after mlpconv9: compare a trailing number numerically
		sa, sb := strings.TrimRight(pa[i], "0123456789"), strings.TrimRight(pb[i], "0123456789")
		if sa == sb && sa != pa[i] && sb != pb[i] {
			na, _ = strconv.Atoi(pa[i][len(sa):])
			nb, _ = strconv.Atoi(pb[i][len(sb):])
			return na < nb
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

// stFloats converts one tensor's bytes to float32, refusing NaN and Inf.
func stFloats(t stTensor, b []byte) ([]float32, error) {
	var out []float32
	switch t.dtype {
	case "F32":
		out = make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case "F64":
		out = make([]float32, len(b)/8)
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
	case "BF16":
		out = make([]float32, len(b)/2)
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case "F16":
		out = make([]float32, len(b)/2)
		for i := range out {
			out[i] = HalfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
	for i, v := range out {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("tensor %s: element %d is %g", t.name, i, v)
		}
	}
	return out, nil
}

// HalfToFloat converts an IEEE binary16 value to float32.
func HalfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp == 0:
		v := float32(frac) / (1 << 24) // subnormal or zero: frac · 2^-24
		return math.Float32frombits(sign | math.Float32bits(v))
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}
