package nbio

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// ImageKind is how a column stores images.
type ImageKind int

const (
	// ImageStruct is Hugging Face's Image feature: struct<bytes: binary, path: string>.
	ImageStruct ImageKind = iota
	// ImageBinary is binary or large_binary holding encoded image bytes.
	ImageBinary
	// ImageRawU8 is a list or fixed_size_list of uint8 holding an H×W×C tensor.
	ImageRawU8
	// ImageRawF32 is a list or fixed_size_list of float32 holding an H×W×C
	// tensor of pixel values on the 0..255 scale (normalised like decoded pixels).
	ImageRawF32
)

func (k ImageKind) String() string {
	return [...]string{"struct<bytes,path>", "binary", "raw uint8 tensor", "raw float32 tensor"}[k]
}

// ImageColumn locates the image column of a schema.
type ImageColumn struct {
	Name  string
	Index int
	Kind  ImageKind
}

func imageKind(t arrow.DataType) (ImageKind, bool) {
	switch dt := t.(type) {
	case *arrow.StructType:
		if f, ok := dt.FieldByName("bytes"); ok && isBinary(f.Type) {
			return ImageStruct, true
		}
	case *arrow.BinaryType, *arrow.LargeBinaryType:
		return ImageBinary, true
	case *arrow.ListType, *arrow.LargeListType, *arrow.FixedSizeListType:
		switch dt.(arrow.ListLikeType).Elem().ID() {
		case arrow.UINT8:
			return ImageRawU8, true
		case arrow.FLOAT32:
			return ImageRawF32, true
		}
	}
	return 0, false
}

func isBinary(t arrow.DataType) bool {
	return t.ID() == arrow.BINARY || t.ID() == arrow.LARGE_BINARY
}

// FindImageColumn picks the image column: the named one, or the only
// column that can hold images, or among several the one called "image" or
// "img". Anything else is an error that lists the candidates.
func FindImageColumn(sc *arrow.Schema, name string) (ImageColumn, error) {
	if name != "" {
		idx := sc.FieldIndices(name)
		if len(idx) == 0 {
			return ImageColumn{}, fmt.Errorf("no image column %q (have %s)", name, strings.Join(fieldNames(sc), ", "))
		}
		k, ok := imageKind(sc.Field(idx[0]).Type)
		if !ok {
			return ImageColumn{}, fmt.Errorf("column %q has type %s, which cannot hold images (want struct<bytes,path>, binary, or a list of uint8/float32)", name, sc.Field(idx[0]).Type)
		}
		return ImageColumn{name, idx[0], k}, nil
	}
	var cands []ImageColumn
	for i, f := range sc.Fields() {
		if k, ok := imageKind(f.Type); ok {
			cands = append(cands, ImageColumn{f.Name, i, k})
		}
	}
	switch len(cands) {
	case 0:
		return ImageColumn{}, fmt.Errorf("no column can hold images (have %s); want struct<bytes,path>, binary, or a list of uint8/float32", strings.Join(fieldNames(sc), ", "))
	case 1:
		return cands[0], nil
	}
	for _, c := range cands {
		if c.Name == "image" || c.Name == "img" {
			return c, nil
		}
	}
	var names []string
	for _, c := range cands {
		names = append(names, c.Name)
	}
	return ImageColumn{}, fmt.Errorf("several columns could hold images (%s): choose one with --image-col", strings.Join(names, ", "))
}

// ImageValue is one row's image, in whichever form the column holds.
type ImageValue struct {
	Null    bool
	Encoded []byte    // ImageStruct, ImageBinary
	U8      []uint8   // ImageRawU8
	F32     []float32 // ImageRawF32
}

// ImageReader extracts images from one batch's image column.
type ImageReader struct {
	kind   ImageKind
	bin    interface{ Value(int) []byte }
	valid  arrow.Array
	offs   func(i int) (int64, int64)
	u8     []uint8
	f32    []float32
	hasBin bool
}

// NewImageReader prepares row access to a column of the given kind.
func NewImageReader(col arrow.Array, kind ImageKind) (r *ImageReader, err error) {
	defer func() { // arrays from a corrupt input can make arrow-go panic
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("malformed image column (%v)", p)
		}
	}()
	r = &ImageReader{kind: kind, valid: col}
	switch kind {
	case ImageStruct:
		st := col.(*array.Struct)
		idx, _ := st.DataType().(*arrow.StructType).FieldIdx("bytes")
		b := st.Field(idx)
		r.bin, r.hasBin = b.(interface{ Value(int) []byte }), true
		r.valid = &nullUnion{st, b}
	case ImageBinary:
		r.bin, r.hasBin = col.(interface{ Value(int) []byte }), true
	case ImageRawU8, ImageRawF32:
		var values arrow.Array
		switch l := col.(type) {
		case *array.List:
			values = l.ListValues()
			r.offs = func(i int) (int64, int64) { return l.ValueOffsets(i) }
		case *array.LargeList:
			values = l.ListValues()
			r.offs = func(i int) (int64, int64) { return l.ValueOffsets(i) }
		case *array.FixedSizeList:
			values = l.ListValues()
			r.offs = func(i int) (int64, int64) { return l.ValueOffsets(i) }
		default:
			return nil, fmt.Errorf("unsupported list type %s", col.DataType())
		}
		if values.NullN() > 0 {
			return nil, fmt.Errorf("image tensor column has null elements inside its lists")
		}
		n := values.Len()
		if kind == ImageRawU8 {
			r.u8 = values.(*array.Uint8).Uint8Values()
			n = len(r.u8)
		} else {
			r.f32 = values.(*array.Float32).Float32Values()
			n = len(r.f32)
		}
		for i := 0; i < col.Len(); i++ { // a corrupt input must not index out of range
			if b, e := r.offs(i); b < 0 || e < b || e > int64(n) {
				return nil, fmt.Errorf("row %d: list offsets [%d, %d) outside its %d values (corrupt input)", i, b, e, n)
			}
		}
	}
	if r.hasBin {
		if err := checkBinaryOffsets(r.bin.(arrow.Array)); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// checkBinaryOffsets verifies a binary column's offsets against its data.
func checkBinaryOffsets(a arrow.Array) error {
	var offs func(i int) int64
	var size int64
	switch b := a.(type) {
	case *array.Binary:
		o := b.ValueOffsets()
		if len(o) < b.Len()+1 {
			return fmt.Errorf("binary column has %d offsets for %d rows (corrupt input)", len(o), b.Len())
		}
		offs, size = func(i int) int64 { return int64(o[i]) }, int64(len(b.ValueBytes()))
	case *array.LargeBinary:
		o := b.ValueOffsets()
		if len(o) < b.Len()+1 {
			return fmt.Errorf("binary column has %d offsets for %d rows (corrupt input)", len(o), b.Len())
		}
		offs, size = func(i int) int64 { return o[i] }, int64(len(b.ValueBytes()))
	default:
		return nil
	}
	base := offs(0)
	for i := 0; i <= a.Len(); i++ {
		if v := offs(i); v < base || v-base > size || (i > 0 && v < offs(i-1)) {
			return fmt.Errorf("row %d: binary offsets out of range (corrupt input)", i)
		}
	}
	return nil
}

// nullUnion: a struct row is null when the struct or its bytes field is.
type nullUnion struct {
	arrow.Array
	bytes arrow.Array
}

func (n *nullUnion) IsNull(i int) bool { return n.Array.IsNull(i) || n.bytes.IsNull(i) }

// At returns row i's image.
func (r *ImageReader) At(i int) ImageValue {
	if r.valid.IsNull(i) {
		return ImageValue{Null: true}
	}
	if r.hasBin {
		return ImageValue{Encoded: r.bin.Value(i)}
	}
	b, e := r.offs(i)
	if r.kind == ImageRawU8 {
		return ImageValue{U8: append(r.u8[b:e:e], []uint8{}...)[: e-b : e-b]}
	}
	return ImageValue{F32: append(r.f32[b:e:e], []float32{}...)[: e-b : e-b]}
}

// Shape is an explicit H×W×C for raw tensor columns (--shape); zero means
// "the model's input".
type Shape struct{ H, W, C int }

// Input turns one image value into model input floats.
//
//	dst: (H, W, C) float32   scratch: (H, W, C) uint8
func (p *Preprocess) Input(dst []float32, scratch []uint8, v ImageValue, shape Shape) error {
	pc, err := p.pixels(scratch, v, shape)
	if err != nil {
		if v.F32 != nil && err == errFloatTensor {
			return p.normalizeFloat(dst, v.F32, shape)
		}
		return err
	}
	if pc < p.C {
		p.normalizeGray(dst, scratch)
		return nil
	}
	p.Normalize(dst, scratch)
	return nil
}

var errFloatTensor = fmt.Errorf("float tensor")

// Pixels turns one image value into model-size uint8 pixels.
func (p *Preprocess) Pixels(dst []uint8, v ImageValue, shape Shape) error {
	pc, err := p.pixels(dst, v, shape)
	if err == nil && pc < p.C {
		expandGray(dst[:p.Len()])
	}
	return err
}

// pixels is Pixels, except that an encoded gray image for a 3-channel model
// is left gray (see Preprocess.image): pc is the channel count written.
func (p *Preprocess) pixels(dst []uint8, v ImageValue, shape Shape) (pc int, err error) {
	switch {
	case v.Null:
		return 0, fmt.Errorf("image is null")
	case v.Encoded != nil:
		if len(v.Encoded) == 0 {
			return 0, fmt.Errorf("image bytes are empty")
		}
		return p.image(dst, v.Encoded)
	case v.F32 != nil:
		return 0, errFloatTensor
	default:
		if shape == (Shape{}) {
			shape = Shape{p.H, p.W, p.C}
		}
		if n := shape.H * shape.W * shape.C; len(v.U8) != n {
			return 0, fmt.Errorf("image tensor has %d values, shape %dx%dx%d needs %d", len(v.U8), shape.H, shape.W, shape.C, n)
		}
		if shape.C != p.C {
			return 0, fmt.Errorf("image tensor has %d channels, the model takes %d", shape.C, p.C)
		}
		if shape.H == p.H && shape.W == p.W { // a tensor of the model's size is taken as already preprocessed
			copy(dst, v.U8)
			return p.C, nil
		}
		return p.C, p.Fit(dst, v.U8, shape.H, shape.W)
	}
}

func (p *Preprocess) normalizeFloat(dst, src []float32, shape Shape) error {
	if shape != (Shape{}) && shape != (Shape{p.H, p.W, p.C}) {
		return fmt.Errorf("float32 image tensors must already have the model's shape %dx%dx%d (got --shape %dx%dx%d)", p.H, p.W, p.C, shape.H, shape.W, shape.C)
	}
	if len(src) != p.Len() {
		return fmt.Errorf("image tensor has %d values, the model input needs %d", len(src), p.Len())
	}
	mul, add := p.affine()
	if fs := p.FloatScale; fs != 0 && fs != 1 {
		for c := range mul {
			mul[c] *= fs
		}
	}
	for i := 0; i < p.Len(); i += p.C {
		for c := 0; c < p.C; c++ {
			dst[i+c] = src[i+c]*mul[c] + add[c]
		}
	}
	return nil
}

// ClassNames reads Hugging Face ClassLabel names for a column from the
// "huggingface" metadata ({"info": {"features": {col: {"_type":
// "ClassLabel", "names": [...]}}}}), or nil.
func ClassNames(meta map[string]string, column string) []string {
	raw, ok := meta["huggingface"]
	if !ok {
		return nil
	}
	var hf struct {
		Info struct {
			Features map[string]struct {
				Type  string   `json:"_type"`
				Names []string `json:"names"`
			} `json:"features"`
		} `json:"info"`
	}
	if json.Unmarshal([]byte(raw), &hf) != nil {
		return nil
	}
	f, ok := hf.Info.Features[column]
	if !ok || f.Type != "ClassLabel" {
		return nil
	}
	return f.Names
}

// HFMetadata builds the "huggingface" metadata for an image + label dataset.
func HFMetadata(imageCol, labelCol string, names []string) string {
	feat := map[string]any{imageCol: map[string]any{"_type": "Image"}}
	if labelCol != "" {
		feat[labelCol] = map[string]any{"_type": "ClassLabel", "names": names}
	}
	b, _ := json.Marshal(map[string]any{"info": map[string]any{"features": feat}})
	return string(b)
}
