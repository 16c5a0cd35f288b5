package nbio

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A bounds checker for the Arrow IPC flatbuffers that arrow-go decodes
// without checks: it sizes slices from vector lengths read straight from
// the buffer (arrow/ipc metadata.go: make([]arrow.Field, ChildrenLength())),
// so one corrupted length makes it allocate until the process dies, which
// no recover() can stop. Every offset, string and vector of the schema
// parts ninbatch feeds it is checked here first: Message → Schema → Field
// (children, recursively), custom metadata and Union type ids.

var errFlatbuf = errors.New("corrupt Arrow schema flatbuffer")

type fbuf struct {
	b     []byte
	nodes int
}

const (
	fbMaxDepth = 64
	fbMaxNodes = 1 << 16
)

func (f *fbuf) u32(p int) (int, bool) {
	if p < 0 || p+4 > len(f.b) {
		return 0, false
	}
	return int(binary.LittleEndian.Uint32(f.b[p:])), true
}

// deref follows the uoffset stored at p.
func (f *fbuf) deref(p int) (int, bool) {
	o, ok := f.u32(p)
	if !ok || o == 0 || p+o >= len(f.b) {
		return 0, false
	}
	return p + o, true
}

// field returns the position of field i of the table at t, or -1.
func (f *fbuf) field(t, i int) (int, bool) {
	so, ok := f.u32(t)
	if !ok {
		return 0, false
	}
	vt := t - int(int32(so))
	if vt < 0 || vt+4 > len(f.b) {
		return 0, false
	}
	vsize := int(binary.LittleEndian.Uint16(f.b[vt:]))
	tsize := int(binary.LittleEndian.Uint16(f.b[vt+2:]))
	if vsize < 4 || vt+vsize > len(f.b) || t+tsize > len(f.b) {
		return 0, false
	}
	if 4+2*i >= vsize { // the flatbuffers rule; an odd vsize still exposes the slot's first byte
		return -1, true // field absent (older schema)
	}
	if vt+4+2*i+2 > len(f.b) {
		return 0, false
	}
	off := int(binary.LittleEndian.Uint16(f.b[vt+4+2*i:]))
	if off == 0 {
		return -1, true
	}
	if off >= tsize {
		return 0, false
	}
	return t + off, true
}

// vector returns the start and length of vector field i (elem bytes each).
func (f *fbuf) vector(t, i, elem int) (int, int, bool) {
	p, ok := f.field(t, i)
	if !ok {
		return 0, 0, false
	}
	if p < 0 {
		return 0, 0, true
	}
	v, ok := f.deref(p)
	if !ok {
		return 0, 0, false
	}
	n, ok := f.u32(v)
	if !ok || n > (len(f.b)-v-4)/elem {
		return 0, 0, false
	}
	return v + 4, n, true
}

// tables checks a vector of tables, calling each on every element.
func (f *fbuf) tables(t, i int, each func(t int) bool) bool {
	start, n, ok := f.vector(t, i, 4)
	if !ok {
		return false
	}
	for k := 0; k < n; k++ {
		if f.nodes++; f.nodes > fbMaxNodes {
			return false
		}
		e, ok := f.deref(start + 4*k)
		if !ok || !each(e) {
			return false
		}
	}
	return true
}

func (f *fbuf) str(t, i int) bool {
	_, _, ok := f.vector(t, i, 1)
	return ok
}

func (f *fbuf) keyValues(t, i int) bool {
	return f.tables(t, i, func(kv int) bool { return f.str(kv, 0) && f.str(kv, 1) })
}

func (f *fbuf) schema(t int) bool {
	return f.tables(t, 1, func(ft int) bool { return f.fieldTable(ft, 0) }) && f.keyValues(t, 2) && func() bool {
		_, _, ok := f.vector(t, 3, 8)
		return ok
	}()
}

const fbTypeUnion = 14

func (f *fbuf) fieldTable(t, depth int) bool {
	if depth > fbMaxDepth || !f.str(t, 0) || !f.keyValues(t, 6) {
		return false
	}
	if tt, ok := f.field(t, 2); !ok {
		return false
	} else if tt >= 0 && tt < len(f.b) && f.b[tt] == fbTypeUnion {
		p, ok := f.field(t, 3)
		if !ok {
			return false
		}
		if p >= 0 {
			u, ok := f.deref(p)
			if !ok {
				return false
			}
			if _, _, ok := f.vector(u, 1, 4); !ok {
				return false
			}
		}
	}
	return f.tables(t, 5, func(c int) bool { return f.fieldTable(c, depth+1) })
}

// CheckIPCSchemaMessage checks the first encapsulated IPC message of an
// Arrow stream (continuation marker, length, flatbuffer Message): when it
// is a Schema, every vector in it must fit in the message.
func CheckIPCSchemaMessage(data []byte) error {
	off := 0
	if len(data) >= 4 && binary.LittleEndian.Uint32(data) == 0xFFFFFFFF {
		off = 4
	}
	if len(data) < off+4 {
		return fmt.Errorf("%w: truncated message", errFlatbuf)
	}
	n := int(int32(binary.LittleEndian.Uint32(data[off:])))
	if n <= 0 || n > len(data)-off-4 {
		return fmt.Errorf("%w: message length %d outside the %d available bytes", errFlatbuf, n, len(data)-off-4)
	}
	f := &fbuf{b: data[off+4 : off+4+n]}
	msg, ok := f.deref(0)
	if !ok {
		return errFlatbuf
	}
	ht, ok := f.field(msg, 1)
	if !ok {
		return errFlatbuf
	}
	if !f.keyValues(msg, 4) {
		return errFlatbuf
	}
	const headerSchema = 1
	if ht < 0 || f.b[ht] != headerSchema {
		return nil // not a schema message: nothing of ours to check
	}
	hp, ok := f.field(msg, 2)
	if !ok || hp < 0 {
		return errFlatbuf
	}
	sc, ok := f.deref(hp)
	if !ok || !f.schema(sc) {
		return errFlatbuf
	}
	return nil
}

// CheckIPCFileFooter checks the footer flatbuffer of an Arrow IPC file
// (Footer: version, schema, dictionaries [Block], recordBatches [Block]).
func CheckIPCFileFooter(footer []byte) error {
	f := &fbuf{b: footer}
	root, ok := f.deref(0)
	if !ok {
		return errFlatbuf
	}
	if p, ok := f.field(root, 1); !ok {
		return errFlatbuf
	} else if p >= 0 {
		sc, ok := f.deref(p)
		if !ok || !f.schema(sc) {
			return errFlatbuf
		}
	}
	for _, i := range []int{2, 3} { // Block structs: 24 bytes
		if _, _, ok := f.vector(root, i, 24); !ok {
			return errFlatbuf
		}
	}
	return nil
}
