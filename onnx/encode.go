package onnx

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Marshal serializes the model as a ModelProto.
func (m *Model) Marshal() []byte {
	var b []byte
	b = appendVarintField(b, 1, uint64(m.IRVersion))
	b = appendStringField(b, 2, m.ProducerName)
	b = appendStringField(b, 3, m.ProducerVersion)
	b = appendStringField(b, 6, m.DocString)
	b = protowire.AppendTag(b, 7, protowire.BytesType)
	b = protowire.AppendBytes(b, m.Graph.marshal())
	for _, o := range m.Opsets {
		var ob []byte
		ob = appendStringField(ob, 1, o.Domain)
		ob = appendVarintField(ob, 2, uint64(o.Version))
		b = appendMessage(b, 8, ob)
	}
	for _, kv := range m.Metadata {
		b = appendMessage(b, 14, kv.marshal())
	}
	return b
}

func (kv KV) marshal() []byte {
	var b []byte
	b = appendStringField(b, 1, kv.Key)
	return appendStringField(b, 2, kv.Value)
}

func (g *Graph) marshal() []byte {
	var b []byte
	for i := range g.Nodes {
		b = appendMessage(b, 1, g.Nodes[i].marshal())
	}
	b = appendStringField(b, 2, g.Name)
	for i := range g.Initializers {
		b = appendMessage(b, 5, g.Initializers[i].marshal())
	}
	for i := range g.Inputs {
		b = appendMessage(b, 11, g.Inputs[i].marshal())
	}
	for i := range g.Outputs {
		b = appendMessage(b, 12, g.Outputs[i].marshal())
	}
	return b
}

func (n *Node) marshal() []byte {
	var b []byte
	for _, s := range n.Inputs {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	for _, s := range n.Outputs {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	b = appendStringField(b, 3, n.Name)
	b = appendStringField(b, 4, n.OpType)
	for i := range n.Attrs {
		b = appendMessage(b, 5, n.Attrs[i].marshal())
	}
	return appendStringField(b, 7, n.Domain)
}

func (a *Attribute) marshal() []byte {
	var b []byte
	b = appendStringField(b, 1, a.Name)
	switch a.Type {
	case AttrFloat:
		b = protowire.AppendTag(b, 2, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(a.F))
	case AttrInt:
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(a.I))
	case AttrString:
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendString(b, a.S)
	case AttrInts:
		var p []byte
		for _, v := range a.Ints {
			p = protowire.AppendVarint(p, uint64(v))
		}
		b = appendMessage(b, 8, p)
	}
	b = protowire.AppendTag(b, 20, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(a.Type))
}

func (t *Tensor) marshal() []byte {
	var b []byte
	if len(t.Dims) > 0 {
		var p []byte
		for _, d := range t.Dims {
			p = protowire.AppendVarint(p, uint64(d))
		}
		b = appendMessage(b, 1, p)
	}
	b = appendVarintField(b, 2, uint64(t.DataType))
	b = appendStringField(b, 8, t.Name)
	if len(t.int64Data) > 0 {
		var p []byte
		for _, v := range t.int64Data {
			p = protowire.AppendVarint(p, uint64(v))
		}
		b = appendMessage(b, 7, p)
	}
	if t.Raw != nil {
		b = protowire.AppendTag(b, 9, protowire.BytesType)
		b = protowire.AppendBytes(b, t.Raw)
	}
	if len(t.External) > 0 {
		for _, kv := range t.External {
			b = appendMessage(b, 13, kv.marshal())
		}
		b = appendVarintField(b, 14, 1) // data_location EXTERNAL
	}
	return b
}

func (vi *ValueInfo) marshal() []byte {
	var shape []byte
	for _, d := range vi.Shape {
		var db []byte
		if d.Param != "" {
			db = appendStringField(db, 2, d.Param)
		} else {
			db = protowire.AppendTag(db, 1, protowire.VarintType)
			db = protowire.AppendVarint(db, uint64(d.Value))
		}
		shape = appendMessage(shape, 1, db)
	}
	var tt []byte
	tt = appendVarintField(tt, 1, uint64(vi.ElemType))
	tt = appendMessage(tt, 2, shape)
	var b []byte
	b = appendStringField(b, 1, vi.Name)
	return appendMessage(b, 2, appendMessage(nil, 1, tt))
}

// Int64Tensor is a named INT64 initializer (Reshape's shape, axes).
func Int64Tensor(name string, v ...int64) Tensor {
	return Tensor{Name: name, Dims: []int64{int64(len(v))}, DataType: TypeInt64, int64Data: append([]int64(nil), v...)}
}

func appendMessage(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}
