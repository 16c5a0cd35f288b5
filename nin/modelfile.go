package nin

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The .nin model file is a safetensors file: a little-endian u64 header
// length, a JSON header (tensor name → dtype, shape, data offsets, plus a
// "__metadata__" map of strings), then the raw little-endian tensor bytes.
// Tensors are float32 in the PyTorch/Caffe layout: conv weights
// "mlpconv{B}.{I}.weight" [out, in, kh, kw] and biases "mlpconv{B}.{I}.bias"
// [out], B counting blocks from 1 and I the conv within the block from 0;
// an fc head adds "fc.weight" [classes, C·H·W] (nn.Linear's layout over an
// NCHW flatten) and "fc.bias" [classes].
// __metadata__ holds:
//
//	format      "ninbatch.nin/1"
//	spec        the architecture (Spec) as JSON
//	preprocess  Preprocess as JSON
//	classes     class names as a JSON array of strings
//	provenance  Provenance as JSON
//	quant       Quant as JSON (format 2 only)
//
// Format 2 is format 1 plus the int8 calibration; a model without one is
// written as format 1, which every ninbatch reads. Readers refuse a format
// they do not know, so an older ninbatch cannot run an int8 model without
// its scales.
const (
	fileFormat      = "ninbatch.nin/1"
	fileFormatQuant = "ninbatch.nin/2"
)

type tensorHeader struct {
	Dtype       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// tensorNames lists the file's tensors in storage order with their shapes.
func (p *Params) tensorLayout() (names []string, shapes [][]int64, convs []int) {
	for i, c := range p.Convs {
		names = append(names, c.Name+".weight", c.Name+".bias")
		shapes = append(shapes, c.fileShape(), []int64{int64(c.Cout)})
		convs = append(convs, i, i)
	}
	return
}

// Encode writes the model as a .nin (safetensors) file and returns the
// hex sha256 of the bytes written (the file hash, not the content id).
func (m *Model) Encode(w io.Writer) (string, error) { return m.encodeWith(w, nil, nil) }

// encodeWith also stores extra metadata and, when vel is not nil, the
// momentum tensors as "velocity.<name>" (training checkpoints).
func (m *Model) encodeWith(w io.Writer, vel *Params, extra map[string]string) (string, error) {
	if err := m.Spec.Validate(); err != nil {
		return "", err
	}
	if err := m.Preprocess.Validate(&m.Spec); err != nil {
		return "", err
	}
	if len(m.Classes) != 0 && len(m.Classes) != m.Spec.Classes() {
		return "", fmt.Errorf("model has %d class names for %d outputs", len(m.Classes), m.Spec.Classes())
	}
	meta := map[string]string{"format": fileFormat}
	if m.Quant != nil {
		if err := m.Quant.validate(m.Params); err != nil {
			return "", err
		}
		b, err := json.Marshal(m.Quant)
		if err != nil {
			return "", fmt.Errorf("encoding quant: %w", err)
		}
		meta["format"], meta["quant"] = fileFormatQuant, string(b)
	}
	for k, v := range extra {
		meta[k] = v
	}
	for k, v := range map[string]any{"spec": m.Spec, "preprocess": m.Preprocess, "classes": m.Classes, "provenance": m.Provenance} {
		b, err := json.Marshal(v)
		if err != nil {
			return "", fmt.Errorf("encoding %s: %w", k, err)
		}
		meta[k] = string(b)
	}
	if m.Classes == nil {
		meta["classes"] = "[]"
	}
	header := map[string]any{"__metadata__": meta}
	names, shapes, _ := m.Params.tensorLayout()
	sources := []*Params{m.Params}
	if vel != nil {
		n := len(names)
		for i := 0; i < n; i++ {
			names = append(names, velocityPrefix+names[i])
			shapes = append(shapes, shapes[i])
		}
		sources = append(sources, vel)
	}
	var off int64
	for i, n := range names {
		cnt := int64(1)
		for _, d := range shapes[i] {
			cnt *= d
		}
		header[n] = tensorHeader{Dtype: "F32", Shape: shapes[i], DataOffsets: []int64{off, off + 4*cnt}}
		off += 4 * cnt
	}
	hb, err := json.Marshal(header) // map keys sorted: deterministic bytes
	if err != nil {
		return "", err
	}
	for len(hb)%8 != 0 { // safetensors pads the header with spaces to 8-byte alignment
		hb = append(hb, ' ')
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 1<<20)
	var lenb [8]byte
	binary.LittleEndian.PutUint64(lenb[:], uint64(len(hb)))
	bw.Write(lenb[:])
	bw.Write(hb)
	var buf []float32
	var b4 [4]byte
	for _, src := range sources {
		for _, c := range src.Convs {
			if cap(buf) < len(c.W) {
				buf = make([]float32, len(c.W))
			}
			buf = buf[:len(c.W)]
			c.toFileLayout(buf)
			for _, vs := range [][]float32{buf, c.B} {
				for _, v := range vs {
					binary.LittleEndian.PutUint32(b4[:], math.Float32bits(v))
					bw.Write(b4[:])
				}
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SaveFile writes the model atomically (temporary file, fsync, rename,
// fsync of the directory) and sets m.ID.
func (m *Model) SaveFile(path string) error {
	var id string
	err := writeAtomic(path, func(w io.Writer) (err error) {
		id, err = m.Encode(w)
		return err
	})
	if err != nil {
		return fmt.Errorf("saving model %s: %w", path, err)
	}
	m.ID, m.FileHash = m.ContentID(), id
	return nil
}

// writeAtomic writes a file through a temporary name in the same directory.
func writeAtomic(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	if err := f.Chmod(0o644); err != nil { // CreateTemp makes it 0600; models are shared like outputs
		f.Close()
		os.Remove(tmp)
		return err
	}
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// LoadFile reads and validates a .nin model file.
func LoadFile(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loading model: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("loading model %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("loading model %s: not a regular file", path)
	}
	m, err := Decode(bufio.NewReaderSize(f, 1<<20), st.Size())
	if err != nil {
		return nil, fmt.Errorf("loading model %s: %w", path, err)
	}
	return m, nil
}

// Decode reads a .nin file of the given size from r and validates all of it:
// header length and JSON, format, spec, preprocessing, class names, every
// tensor's name, dtype, shape and byte range (in bounds, contiguous, no
// overlap or gap, covering the data exactly) and that every value is
// finite. Nothing is allocated beyond the header until the sizes have been
// checked against the file size.
func Decode(r io.Reader, size int64) (*Model, error) {
	m, _, _, err := decode(r, size, false)
	return m, err
}

const velocityPrefix = "velocity."

// decode reads a model file, or with checkpoint=true a training checkpoint
// that also holds velocity tensors; it returns the raw metadata too.
func decode(r io.Reader, size int64, checkpoint bool) (*Model, *Params, map[string]string, error) {
	m, vel, meta, err := decodeInner(r, size, checkpoint)
	if err != nil {
		return nil, nil, nil, err
	}
	return m, vel, meta, nil
}

func decodeInner(r io.Reader, size int64, checkpoint bool) (*Model, *Params, map[string]string, error) {
	h := sha256.New()
	r = io.TeeReader(r, h)
	hlen, raw, meta, err := readHeader(r, size)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := modelFromMeta(meta)
	if err != nil {
		return nil, nil, nil, err
	}
	// The spec bounds the parameter count; check it against the file before allocating.
	layers, _ := m.Spec.Plan()
	nparams, _ := Totals(layers)
	dataLen := size - 8 - int64(hlen)
	copies := int64(1)
	if checkpoint {
		copies = 2
	}
	if dataLen != 4*nparams*copies {
		return nil, nil, nil, fmt.Errorf("tensor data is %d bytes but the spec needs %d (%d float32 parameters): truncated or mismatched file", dataLen, 4*nparams*copies, nparams*copies)
	}
	p, err := NewParams(&m.Spec)
	if err != nil {
		return nil, nil, nil, err
	}
	var vel *Params
	if checkpoint {
		if vel, err = NewParams(&m.Spec); err != nil {
			return nil, nil, nil, err
		}
	}
	spans, err := tensorSpans(raw, p, vel, dataLen)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := readTensors(r, spans); err != nil {
		return nil, nil, nil, err
	}
	if n, _ := io.Copy(io.Discard, io.LimitReader(r, 1)); n != 0 {
		return nil, nil, nil, errors.New("file is longer than its declared size")
	}
	m.Params = p
	if s, ok := meta["quant"]; ok {
		if meta["format"] != fileFormatQuant {
			return nil, nil, nil, fmt.Errorf("__metadata__ has int8 scales (quant) but format %q: want %q", meta["format"], fileFormatQuant)
		}
		m.Quant = &Quant{}
		if err := strictJSON(s, m.Quant); err != nil {
			return nil, nil, nil, fmt.Errorf("__metadata__ quant: %w", err)
		}
		if err := m.Quant.validate(p); err != nil {
			return nil, nil, nil, fmt.Errorf("__metadata__ %w", err)
		}
	} else if meta["format"] == fileFormatQuant {
		return nil, nil, nil, fmt.Errorf("__metadata__ format %q without its int8 scales (quant)", fileFormatQuant)
	}
	m.ID, m.FileHash = m.ContentID(), hex.EncodeToString(h.Sum(nil))
	return m, vel, meta, nil
}

// readHeader reads and checks a .nin file's safetensors header: its
// length, the tensor entries (raw, without __metadata__) and the metadata,
// which must name the ninbatch format.
func readHeader(r io.Reader, size int64) (uint64, map[string]json.RawMessage, map[string]string, error) {
	hlen, raw, meta, err := readSafetensorsHeader(r, size)
	if err != nil {
		return 0, nil, nil, err
	}
	if meta == nil {
		return 0, nil, nil, errors.New("header has no __metadata__: not a ninbatch model")
	}
	switch f := meta["format"]; {
	case f == fileFormat || f == fileFormatQuant:
	case strings.HasPrefix(f, "ninbatch.nin/"):
		return 0, nil, nil, fmt.Errorf("model format %q is newer than this ninbatch reads (%s and %s): upgrade ninbatch", f, fileFormat, fileFormatQuant)
	default:
		return 0, nil, nil, fmt.Errorf("__metadata__ format %q: want %q", f, fileFormat)
	}
	return hlen, raw, meta, nil
}

// readSafetensorsHeader reads and checks any safetensors header; meta is
// nil when the file has no __metadata__.
func readSafetensorsHeader(r io.Reader, size int64) (uint64, map[string]json.RawMessage, map[string]string, error) {
	if size < 8 {
		return 0, nil, nil, fmt.Errorf("file is %d bytes, too short for a safetensors header", size)
	}
	var lenb [8]byte
	if _, err := io.ReadFull(r, lenb[:]); err != nil {
		return 0, nil, nil, fmt.Errorf("reading header length: %w", err)
	}
	hlen := binary.LittleEndian.Uint64(lenb[:])
	if hlen > maxHeaderSize {
		return 0, nil, nil, fmt.Errorf("not a .nin (safetensors) file: its first 8 bytes declare a %d-byte header, which exceeds the %d-byte limit", hlen, maxHeaderSize)
	}
	if int64(hlen) > size-8 {
		return 0, nil, nil, fmt.Errorf("header length %d runs past the end of the %d byte file (truncated?)", hlen, size)
	}
	hb := make([]byte, hlen)
	if _, err := io.ReadFull(r, hb); err != nil {
		return 0, nil, nil, fmt.Errorf("reading header: %w", err)
	}
	if err := checkHeader(hb); err != nil {
		return 0, nil, nil, fmt.Errorf("not a valid safetensors file: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hb, &raw); err != nil {
		return 0, nil, nil, fmt.Errorf("header is not a JSON object: %w", err)
	}
	var meta map[string]string
	if mb, ok := raw["__metadata__"]; ok {
		if err := json.Unmarshal(mb, &meta); err != nil {
			return 0, nil, nil, fmt.Errorf("__metadata__: %w", err)
		}
		if meta == nil {
			meta = map[string]string{}
		}
	}
	delete(raw, "__metadata__")
	return hlen, raw, meta, nil
}

// modelFromMeta is the model the metadata describes, without its weights.
func modelFromMeta(meta map[string]string) (*Model, error) {
	m := &Model{}
	spec, err := ParseSpec([]byte(meta["spec"]))
	if err != nil {
		return nil, fmt.Errorf("__metadata__ spec: %w", err)
	}
	m.Spec = *spec
	if err := strictJSON(meta["preprocess"], &m.Preprocess); err != nil {
		return nil, fmt.Errorf("__metadata__ preprocess: %w", err)
	}
	if err := m.Preprocess.Validate(spec); err != nil {
		return nil, fmt.Errorf("__metadata__: %w", err)
	}
	if s := meta["classes"]; s != "" {
		if err := json.Unmarshal([]byte(s), &m.Classes); err != nil {
			return nil, fmt.Errorf("__metadata__ classes: %w", err)
		}
	}
	if len(m.Classes) == 0 {
		m.Classes = nil
	} else if len(m.Classes) != spec.Classes() {
		return nil, fmt.Errorf("__metadata__ classes: %d names for %d outputs", len(m.Classes), spec.Classes())
	}
	if s := meta["provenance"]; s != "" {
		if err := json.Unmarshal([]byte(s), &m.Provenance); err != nil {
			return nil, fmt.Errorf("__metadata__ provenance: %w", err)
		}
	}
	return m, nil
}

// tensorSpan is where one tensor's bytes lie in the data section.
type tensorSpan struct {
	name       string
	begin, end int64
	conv       int
	weight     bool
	dst        *Params
}

// tensorSpans matches the header's tensors with p's (and vel's, in a
// checkpoint) and returns them in file order, checking that they tile the
// data section exactly: no tensor missing or extra, no gap, no overlap.
func tensorSpans(raw map[string]json.RawMessage, p, vel *Params, dataLen int64) ([]tensorSpan, error) {
	names, shapes, convs := p.tensorLayout()
	targets := make([]*Params, len(names))
	for i := range targets {
		targets[i] = p
	}
	if vel != nil {
		n := len(names)
		for i := 0; i < n; i++ {
			names = append(names, velocityPrefix+names[i])
			shapes = append(shapes, shapes[i])
			convs = append(convs, convs[i])
			targets = append(targets, vel)
		}
	}
	var spans []tensorSpan
	for i, name := range names {
		tb, ok := raw[name]
		if !ok {
			return nil, fmt.Errorf("tensor %s is missing (spec has %d conv layers)", name, len(p.Convs))
		}
		delete(raw, name)
		var th tensorHeader
		if err := strictJSON(string(tb), &th); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		if th.Dtype != "F32" {
			return nil, fmt.Errorf("tensor %s: dtype %s, want F32", name, th.Dtype)
		}
		if !equalShape(th.Shape, shapes[i]) {
			return nil, fmt.Errorf("tensor %s: shape %v, the spec needs %v", name, th.Shape, shapes[i])
		}
		if len(th.DataOffsets) != 2 {
			return nil, fmt.Errorf("tensor %s: data_offsets %v: want [begin, end]", name, th.DataOffsets)
		}
		b, e := th.DataOffsets[0], th.DataOffsets[1]
		n := int64(1)
		for _, d := range shapes[i] {
			n *= d
		}
		if b < 0 || e < b || e > dataLen {
			return nil, fmt.Errorf("tensor %s: data_offsets [%d, %d] outside the %d bytes of tensor data", name, b, e, dataLen)
		}
		if e-b != 4*n {
			return nil, fmt.Errorf("tensor %s: %d bytes for %d float32 values", name, e-b, n)
		}
		spans = append(spans, tensorSpan{name, b, e, convs[i], i%2 == 0, targets[i]})
	}
	if len(raw) > 0 {
		extra := make([]string, 0, len(raw))
		for k := range raw {
			extra = append(extra, k)
		}
		sort.Strings(extra)
		return nil, fmt.Errorf("unexpected tensors not in the spec: %s", strings.Join(extra, ", "))
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].begin < spans[j].begin })
	var pos int64
	for _, s := range spans {
		if s.begin < pos {
			return nil, fmt.Errorf("tensor %s: data_offsets [%d, %d] overlap the previous tensor", s.name, s.begin, s.end)
		}
		if s.begin > pos {
			return nil, fmt.Errorf("tensor %s: gap of %d bytes before its data", s.name, s.begin-pos)
		}
		pos = s.end
	}
	return spans, nil
}

// readTensors reads the data section in file order into the spans'
// parameters, refusing NaN and infinite values.
func readTensors(r io.Reader, spans []tensorSpan) error {
	var tmp []float32
	var bbuf []byte
	for _, s := range spans {
		n := int(s.end-s.begin) / 4
		if cap(bbuf) < 4*n {
			bbuf = make([]byte, 4*n)
		}
		bbuf = bbuf[:4*n]
		if _, err := io.ReadFull(r, bbuf); err != nil {
			return fmt.Errorf("reading tensor %s: %w", s.name, err)
		}
		if cap(tmp) < n {
			tmp = make([]float32, n)
		}
		tmp = tmp[:n]
		for i := range tmp {
			v := math.Float32frombits(binary.LittleEndian.Uint32(bbuf[4*i:]))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("tensor %s: element %d is %v", s.name, i, v)
			}
			tmp[i] = v
		}
		c := &s.dst.Convs[s.conv]
		if s.weight {
			c.fromFileLayout(tmp)
		} else {
			copy(c.B, tmp)
		}
	}
	return nil
}

func strictJSON(s string, v any) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
