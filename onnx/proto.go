// Package onnx reads and writes the part of the ONNX model format (onnx.proto)
// that a Network In Network uses, maps an ONNX graph onto a nin.Spec and its
// weights, and writes a nin.Model back out as an ONNX graph.
//
// The protobuf wire format is decoded with google.golang.org/protobuf's
// protowire package rather than generated code: the decoder keeps only the
// fields NIN needs, slices tensor bytes out of the file instead of copying
// them, and every allocation is bounded by bytes actually present in the
// input, so a hostile file cannot ask for more memory than it occupies.
package onnx

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Limits on what a NIN graph can need; a file beyond them is refused.
const (
	MaxFileBytes  = 2 << 30 // protobuf's own 2 GiB message limit
	maxNodes      = 4096
	maxAttrs      = 64 // per node
	maxAttrValues = 1024
	maxRank       = 8
	maxMetadata   = 1024
	maxIO         = 1024 // graph inputs, outputs, value_info, initializers
)

// Data types (TensorProto.DataType) that matter here.
const (
	TypeFloat   = 1
	TypeInt32   = 6
	TypeInt64   = 7
	TypeFloat16 = 10
	TypeDouble  = 11
	TypeBF16    = 16
)

// Attribute types (AttributeProto.AttributeType).
const (
	AttrFloat   = 1
	AttrInt     = 2
	AttrString  = 3
	AttrTensor  = 4
	AttrGraph   = 5
	AttrFloats  = 6
	AttrInts    = 7
	AttrStrings = 8
)

// Model is an ONNX ModelProto, reduced to what NIN import and export use.
type Model struct {
	IRVersion       int64
	Opsets          []Opset
	ProducerName    string
	ProducerVersion string
	DocString       string
	Graph           Graph
	Metadata        []KV
}

// Opset is one entry of opset_import; Domain "" is the default ai.onnx domain.
type Opset struct {
	Domain  string
	Version int64
}

// KV is a StringStringEntryProto (metadata_props, external_data).
type KV struct{ Key, Value string }

// Graph is a GraphProto.
type Graph struct {
	Name         string
	Nodes        []Node
	Initializers []Tensor
	Inputs       []ValueInfo
	Outputs      []ValueInfo
}

// Node is a NodeProto.
type Node struct {
	Name    string
	OpType  string
	Domain  string
	Inputs  []string
	Outputs []string
	Attrs   []Attribute
}

// Attribute is an AttributeProto. Graph-valued attributes (If, Loop) are
// kept only as a flag: no NIN op has one.
type Attribute struct {
	Name     string
	Type     int32
	F        float32
	I        int64
	S        string
	T        *Tensor
	Floats   []float32
	Ints     []int64
	HasGraph bool
}

// Tensor is a TensorProto. Raw and floatData alias the decoded file's
// bytes; External is set when the data lives in a separate file.
type Tensor struct {
	Name      string
	Dims      []int64
	DataType  int32
	Raw       []byte
	floatData []byte // packed float_data
	int64Data []int64
	External  []KV // data_location EXTERNAL: location, offset, length
}

// ValueInfo is a graph input or output: a float tensor of some shape.
// A dimension is either a number (Dim > 0) or a symbol (Param).
type ValueInfo struct {
	Name     string
	ElemType int32
	Shape    []Dim
	HasShape bool
}

// Dim is one TensorShapeProto dimension.
type Dim struct {
	Value int64
	Param string
}

// Opset returns the model's default-domain opset version (0 if none).
func (m *Model) Opset() int64 {
	for _, o := range m.Opsets {
		if o.Domain == "" || o.Domain == "ai.onnx" {
			return o.Version
		}
	}
	return 0
}

// MetadataValue returns metadata_props[key].
func (m *Model) MetadataValue(key string) (string, bool) {
	for _, kv := range m.Metadata {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// Attr finds a node attribute by name.
func (n *Node) Attr(name string) (*Attribute, bool) {
	for i := range n.Attrs {
		if n.Attrs[i].Name == name {
			return &n.Attrs[i], true
		}
	}
	return nil, false
}

// Elements is the product of the dims, or an error when a dim is negative
// or the product exceeds limit (checked before anything is allocated).
func (t *Tensor) Elements(limit int64) (int64, error) {
	n := int64(1)
	for _, d := range t.Dims {
		if d < 0 {
			return 0, fmt.Errorf("tensor %q: negative dimension %d", t.Name, d)
		}
		if d > 0 && n > limit/d {
			return 0, fmt.Errorf("tensor %q: shape %v has more than %d elements", t.Name, t.Dims, limit)
		}
		n *= d
	}
	return n, nil
}

// ---- decoding ----

// Decode parses a serialized ModelProto. Unknown fields are skipped; the
// fields it keeps are checked against the bytes present and the limits above.
func Decode(b []byte) (*Model, error) {
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%d bytes is over the protobuf limit of %d", len(b), MaxFileBytes)
	}
	m := &Model{}
	haveGraph := false
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			m.IRVersion = int64(x)
		case num == 8 && typ == protowire.BytesType:
			if len(m.Opsets) >= maxMetadata {
				return errors.New("too many opset_import entries")
			}
			var o Opset
			if err := fields(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
				switch {
				case n == 1 && t == protowire.BytesType:
					return str(v, &o.Domain)
				case n == 2 && t == protowire.VarintType:
					o.Version = int64(x)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("opset_import: %w", err)
			}
			m.Opsets = append(m.Opsets, o)
		case num == 2 && typ == protowire.BytesType:
			return str(v, &m.ProducerName)
		case num == 3 && typ == protowire.BytesType:
			return str(v, &m.ProducerVersion)
		case num == 6 && typ == protowire.BytesType:
			return str(v, &m.DocString)
		case num == 7 && typ == protowire.BytesType:
			if haveGraph {
				return errors.New("more than one graph")
			}
			haveGraph = true
			if err := decodeGraph(v, &m.Graph); err != nil {
				return fmt.Errorf("graph: %w", err)
			}
		case num == 14 && typ == protowire.BytesType:
			if len(m.Metadata) >= maxMetadata {
				return errors.New("too many metadata_props")
			}
			kv, err := decodeKV(v)
			if err != nil {
				return fmt.Errorf("metadata_props: %w", err)
			}
			m.Metadata = append(m.Metadata, kv)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("not a valid ONNX model: %w", err)
	}
	if !haveGraph {
		return nil, errors.New("not a valid ONNX model: no graph")
	}
	return m, nil
}

// fields walks one message's fields; v is a length-delimited payload and x
// a varint or fixed value. Every length was checked by protowire against
// the bytes left.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return truncated(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var u uint32
			u, n = protowire.ConsumeFixed32(b)
			x = uint64(u)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return truncated(n)
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func truncated(n int) error {
	return fmt.Errorf("malformed protobuf (%v)", protowire.ParseError(n))
}

func str(v []byte, dst *string) error {
	if !utf8.Valid(v) {
		return errors.New("string field is not UTF-8")
	}
	*dst = string(v)
	return nil
}

func decodeKV(b []byte) (KV, error) {
	var kv KV
	err := fields(b, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
		switch {
		case n == 1 && t == protowire.BytesType:
			return str(v, &kv.Key)
		case n == 2 && t == protowire.BytesType:
			return str(v, &kv.Value)
		}
		return nil
	})
	return kv, err
}

func decodeGraph(b []byte, g *Graph) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			if len(g.Nodes) >= maxNodes {
				return fmt.Errorf("more than %d nodes", maxNodes)
			}
			var nd Node
			if err := decodeNode(v, &nd); err != nil {
				return fmt.Errorf("node %d: %w", len(g.Nodes), err)
			}
			g.Nodes = append(g.Nodes, nd)
		case 2:
			return str(v, &g.Name)
		case 5:
			if len(g.Initializers) >= maxIO {
				return fmt.Errorf("more than %d initializers", maxIO)
			}
			var t Tensor
			if err := decodeTensor(v, &t); err != nil {
				return fmt.Errorf("initializer %d: %w", len(g.Initializers), err)
			}
			g.Initializers = append(g.Initializers, t)
		case 15:
			return errors.New("sparse initializers are not supported")
		case 11, 12:
			list := &g.Inputs
			if num == 12 {
				list = &g.Outputs
			}
			if len(*list) >= maxIO {
				return fmt.Errorf("more than %d graph inputs or outputs", maxIO)
			}
			vi, err := decodeValueInfo(v)
			if err != nil {
				return fmt.Errorf("input/output %d: %w", len(*list), err)
			}
			*list = append(*list, vi)
		}
		return nil
	})
}

func decodeNode(b []byte, nd *Node) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1, 2:
			list := &nd.Inputs
			if num == 2 {
				list = &nd.Outputs
			}
			if len(*list) >= maxAttrValues {
				return errors.New("too many inputs or outputs")
			}
			var s string
			if err := str(v, &s); err != nil {
				return err
			}
			*list = append(*list, s)
		case 3:
			return str(v, &nd.Name)
		case 4:
			return str(v, &nd.OpType)
		case 7:
			return str(v, &nd.Domain)
		case 5:
			if len(nd.Attrs) >= maxAttrs {
				return fmt.Errorf("more than %d attributes", maxAttrs)
			}
			var a Attribute
			if err := decodeAttr(v, &a); err != nil {
				return fmt.Errorf("attribute %d: %w", len(nd.Attrs), err)
			}
			nd.Attrs = append(nd.Attrs, a)
		}
		return nil
	})
}

func decodeAttr(b []byte, a *Attribute) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			return str(v, &a.Name)
		case num == 20 && typ == protowire.VarintType:
			a.Type = int32(x)
		case num == 2 && typ == protowire.Fixed32Type:
			a.F = math.Float32frombits(uint32(x))
		case num == 3 && typ == protowire.VarintType:
			a.I = int64(x)
		case num == 4 && typ == protowire.BytesType:
			if !utf8.Valid(v) {
				a.S = fmt.Sprintf("%q", v) // binary payloads are never a NIN attribute
				return nil
			}
			a.S = string(v)
		case num == 5 && typ == protowire.BytesType:
			t := &Tensor{}
			if err := decodeTensor(v, t); err != nil {
				return fmt.Errorf("tensor: %w", err)
			}
			a.T = t
		case num == 6 || num == 11:
			a.HasGraph = true // never decoded: no recursion into subgraphs
		case num == 7:
			return appendFloats(&a.Floats, typ, v, x)
		case num == 8:
			return appendInts(&a.Ints, typ, v, x)
		}
		return nil
	})
}

func appendFloats(dst *[]float32, typ protowire.Type, v []byte, x uint64) error {
	switch typ {
	case protowire.Fixed32Type:
		if len(*dst) >= maxAttrValues {
			return errors.New("too many floats")
		}
		*dst = append(*dst, math.Float32frombits(uint32(x)))
	case protowire.BytesType: // packed
		if len(v)%4 != 0 || len(*dst)+len(v)/4 > maxAttrValues {
			return errors.New("bad or too long packed floats")
		}
		for i := 0; i < len(v); i += 4 {
			u, _ := protowire.ConsumeFixed32(v[i:])
			*dst = append(*dst, math.Float32frombits(u))
		}
	}
	return nil
}

// appendInts reads a repeated int64, packed or not, up to limit values.
func appendIntsN(dst *[]int64, typ protowire.Type, v []byte, x uint64, limit int) error {
	switch typ {
	case protowire.VarintType:
		if len(*dst) >= limit {
			return errors.New("too many ints")
		}
		*dst = append(*dst, int64(x))
	case protowire.BytesType: // packed
		for len(v) > 0 {
			u, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return truncated(n)
			}
			if len(*dst) >= limit {
				return errors.New("too many ints")
			}
			*dst = append(*dst, int64(u))
			v = v[n:]
		}
	}
	return nil
}

func appendInts(dst *[]int64, typ protowire.Type, v []byte, x uint64) error {
	return appendIntsN(dst, typ, v, x, maxAttrValues)
}

func decodeTensor(b []byte, t *Tensor) error {
	external := false
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1:
			return appendIntsN(&t.Dims, typ, v, x, maxRank)
		case num == 2 && typ == protowire.VarintType:
			t.DataType = int32(x)
		case num == 8 && typ == protowire.BytesType:
			return str(v, &t.Name)
		case num == 9 && typ == protowire.BytesType:
			t.Raw = v
		case num == 4 && typ == protowire.BytesType:
			if len(v)%4 != 0 {
				return errors.New("float_data is not a whole number of floats")
			}
			t.floatData = append(t.floatData, v...)
		case num == 4 && typ == protowire.Fixed32Type:
			t.floatData = protowire.AppendFixed32(t.floatData, uint32(x))
		case num == 7:
			return appendIntsN(&t.int64Data, typ, v, x, maxAttrValues)
		case num == 13 && typ == protowire.BytesType:
			if len(t.External) >= 16 {
				return errors.New("too many external_data entries")
			}
			kv, err := decodeKV(v)
			if err != nil {
				return fmt.Errorf("external_data: %w", err)
			}
			t.External = append(t.External, kv)
		case num == 14 && typ == protowire.VarintType:
			external = x == 1
		case num == 3:
			return errors.New("segmented tensors are not supported")
		}
		return nil
	})
	if err != nil {
		return err
	}
	if external != (len(t.External) > 0) {
		return fmt.Errorf("tensor %q: data_location and external_data disagree", t.Name)
	}
	return nil
}

func decodeValueInfo(b []byte) (ValueInfo, error) {
	var vi ValueInfo
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			return str(v, &vi.Name)
		case num == 2 && typ == protowire.BytesType: // TypeProto
			return fields(v, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
				if n != 1 || t != protowire.BytesType { // tensor_type only
					return nil
				}
				return fields(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
					switch {
					case n == 1 && t == protowire.VarintType:
						vi.ElemType = int32(x)
					case n == 2 && t == protowire.BytesType:
						vi.HasShape = true
						return fields(v, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
							if n != 1 || t != protowire.BytesType {
								return nil
							}
							if len(vi.Shape) >= maxRank {
								return fmt.Errorf("rank over %d", maxRank)
							}
							var d Dim
							err := fields(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
								switch {
								case n == 1 && t == protowire.VarintType:
									d.Value = int64(x)
								case n == 2 && t == protowire.BytesType:
									return str(v, &d.Param)
								}
								return nil
							})
							vi.Shape = append(vi.Shape, d)
							return err
						})
					}
					return nil
				})
			})
		}
		return nil
	})
	return vi, err
}
