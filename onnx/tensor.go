package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ninbatch/ninbatch/nin"
)

// maxTensorElements bounds one weight tensor (1 GiB of float32).
const maxTensorElements = 1 << 28

// Floats returns the tensor's values as float32. FLOAT16, BFLOAT16 and
// DOUBLE are converted. dir is the model file's folder, where external data
// must live ("" refuses external data). The element count is checked
// against the bytes present before anything is allocated.
func (t *Tensor) Floats(dir string) ([]float32, error) {
	n, err := t.Elements(maxTensorElements)
	if err != nil {
		return nil, err
	}
	size := map[int32]int64{TypeFloat: 4, TypeFloat16: 2, TypeBF16: 2, TypeDouble: 8}[t.DataType]
	if size == 0 {
		return nil, fmt.Errorf("tensor %q: data type %d is not a floating-point type", t.Name, t.DataType)
	}
	var raw []byte
	switch {
	case len(t.External) > 0:
		if raw, err = t.readExternal(dir, n*size); err != nil {
			return nil, err
		}
	case t.Raw != nil:
		raw = t.Raw
	case t.DataType == TypeFloat:
		raw = t.floatData
	case n == 0:
	default:
		return nil, fmt.Errorf("tensor %q: data type %d stored outside raw_data is not supported", t.Name, t.DataType)
	}
	if int64(len(raw)) != n*size {
		return nil, fmt.Errorf("tensor %q: shape %v needs %d bytes, the file has %d", t.Name, t.Dims, n*size, len(raw))
	}
	out := make([]float32, n)
	for i := range out {
		switch t.DataType {
		case TypeFloat:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		case TypeDouble:
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		case TypeBF16:
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		case TypeFloat16:
			out[i] = nin.HalfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	}
	for i, v := range out {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("tensor %q: element %d is %g", t.Name, i, v)
		}
	}
	return out, nil
}

// Ints returns an INT64 or INT32 tensor's values (Reshape shapes, axes).
func (t *Tensor) Ints() ([]int64, error) {
	n, err := t.Elements(maxAttrValues)
	if err != nil {
		return nil, err
	}
	switch {
	case t.DataType == TypeInt64 && t.Raw != nil && int64(len(t.Raw)) == 8*n:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.Raw[8*i:]))
		}
		return out, nil
	case t.DataType == TypeInt64 && t.Raw == nil && int64(len(t.int64Data)) == n:
		return append([]int64(nil), t.int64Data...), nil
	case t.DataType == TypeInt32 && t.Raw != nil && int64(len(t.Raw)) == 4*n:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(t.Raw[4*i:])))
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q: not an integer tensor of shape %v", t.Name, t.Dims)
}

// readExternal reads want bytes of external data. The location must be a
// relative path that stays inside dir once symlinks are resolved.
func (t *Tensor) readExternal(dir string, want int64) ([]byte, error) {
	var loc string
	var off, length int64 = 0, -1
	for _, kv := range t.External {
		var err error
		switch kv.Key {
		case "location":
			loc = kv.Value
		case "offset":
			off, err = strconv.ParseInt(kv.Value, 10, 64)
		case "length":
			length, err = strconv.ParseInt(kv.Value, 10, 64)
		}
		if err != nil || off < 0 || (kv.Key == "length" && length < 0) {
			return nil, fmt.Errorf("tensor %q: external_data %s=%q is not a byte count", t.Name, kv.Key, kv.Value)
		}
	}
	where := fmt.Sprintf("tensor %q: external data %q", t.Name, loc)
	if dir == "" {
		return nil, fmt.Errorf("%s: external data needs the model's folder", where)
	}
	if loc == "" || !filepath.IsLocal(filepath.FromSlash(loc)) {
		return nil, fmt.Errorf("%s: location must be a relative path inside the model's folder", where)
	}
	if length >= 0 && length != want {
		return nil, fmt.Errorf("%s: length %d, shape %v needs %d bytes", where, length, t.Dims, want)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	path, err := filepath.EvalSymlinks(filepath.Join(dir, filepath.FromSlash(loc)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if rel, err := filepath.Rel(root, path); err != nil || !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("%s: resolves outside the model's folder", where)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if !st.Mode().IsRegular() || off > st.Size() || want > st.Size()-off {
		return nil, fmt.Errorf("%s: needs bytes %d..%d, the file has %d", where, off, off+want, st.Size())
	}
	buf := make([]byte, want)
	if _, err := f.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && want == 0) {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return buf, nil
}

// FloatTensor is a named FLOAT initializer with the values as raw data.
func FloatTensor(name string, dims []int64, v []float32) Tensor {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	return Tensor{Name: name, Dims: append([]int64(nil), dims...), DataType: TypeFloat, Raw: raw}
}
