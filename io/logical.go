package nbio

import (
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/arrow-go/v18/parquet/schema"
)

// keptType carries a Parquet logical type that the Arrow conversion drops
// (JSON read as binary, INTERVAL as a bare 12-byte fixed binary, a TIME
// adjusted to UTC as a plain time64), so that a passthrough column is
// written back with the annotation it came with. The values are the
// storage's, untouched.
type keptType struct {
	arrow.ExtensionBase
	logical schema.LogicalType
}

// keptArray is the array of a keptType column.
type keptArray struct{ array.ExtensionArrayBase }

func (k *keptType) ExtensionName() string { return "ninbatch.parquet_logical_type" }

// Serialize records the logical type in the Arrow schema stored in the
// output; readers that do not know the extension see the storage type.
func (k *keptType) Serialize() string {
	b, _ := json.Marshal(k.logical)
	return string(b)
}

func (k *keptType) Deserialize(storage arrow.DataType, data string) (arrow.ExtensionType, error) {
	return nil, fmt.Errorf("%s is rebuilt from the Parquet schema, not deserialized", k.ExtensionName())
}

func (k *keptType) ExtensionEquals(o arrow.ExtensionType) bool {
	ok, isKept := o.(*keptType)
	return isKept && arrow.TypeEqual(k.Storage, ok.Storage) && k.logical.Equals(ok.logical)
}

func (k *keptType) ArrayType() reflect.Type { return reflect.TypeOf(keptArray{}) }

func (k *keptType) String() string {
	return fmt.Sprintf("%s (Parquet %s)", k.Storage, k.logical)
}

// ParquetLogicalType implements pqarrow.ExtensionCustomParquetType.
func (k *keptType) ParquetLogicalType() schema.LogicalType { return k.logical }

// keptLogicalTypes compares the Parquet logical type of every leaf column
// of the projected top-level fields with what writing the Arrow schema back
// would produce. A top-level primitive column that would lose its logical
// type gets a keptType (returned by field index); a nested leaf that would
// is named in lost, so the run can say up front what it cannot keep.
func keptLogicalTypes(ps *schema.Schema, manifest *pqarrow.SchemaManifest, sc *arrow.Schema, top []int) (kept map[int]*keptType, lost []string) {
	for out, i := range top {
		f := sc.Field(out)
		sf := &manifest.Fields[i]
		written, err := pqarrow.ToParquet(arrow.NewSchema([]arrow.Field{f}, nil), parquet.NewWriterProperties(), pqarrow.DefaultWriterProps())
		if err != nil {
			lost = append(lost, fmt.Sprintf("%s: cannot be written back (%v)", f.Name, err))
			continue
		}
		var leaves []int
		collectLeaves(sf, &leaves)
		if len(leaves) != written.NumColumns() {
			continue // a layout pqarrow changes on its own (it keeps the values)
		}
		for j, leaf := range leaves {
			in := ps.Column(leaf)
			lt, wt := in.LogicalType(), written.Column(j).LogicalType()
			if lt.Equals(wt) || lt.Equals(schema.NoLogicalType{}) || !dropsAnnotation(lt) {
				continue
			}
			if sf.IsLeaf() && lt.IsApplicable(written.Column(j).PhysicalType(), int32(written.Column(j).TypeLength())) {
				if kept == nil {
					kept = map[int]*keptType{}
				}
				kept[out] = &keptType{ExtensionBase: arrow.ExtensionBase{Storage: f.Type}, logical: lt}
				continue
			}
			lost = append(lost, fmt.Sprintf("%s: Parquet logical type %s is written as %s (nested columns keep their values, not this annotation)", in.Path(), lt, wt))
		}
	}
	return kept, lost
}

// dropsAnnotation: the logical types whose loss changes what a reader
// sees (DuckDB reads JSON as JSON, INTERVAL as INTERVAL, TIMETZ as TIMETZ);
// others that differ only in spelling between writers (a string read from a
// converted ENUM, integer widths) are left as pqarrow writes them.
func dropsAnnotation(lt schema.LogicalType) bool {
	switch t := lt.(type) {
	case schema.JSONLogicalType, schema.BSONLogicalType, schema.IntervalLogicalType:
		return true
	case schema.TimeLogicalType:
		return t.IsAdjustedToUTC()
	}
	return false
}

// keepLogical re-types the columns of rec listed in kept (zero copy: the
// same buffers under the extension type).
func keepLogical(rec arrow.RecordBatch, sc *arrow.Schema, kept map[int]*keptType) arrow.RecordBatch {
	if kept == nil {
		return rec
	}
	cols := make([]arrow.Array, rec.NumCols())
	for i := range cols {
		c := rec.Column(i)
		if k, ok := kept[i]; ok {
			c = array.NewExtensionArrayWithStorage(k, c)
		} else {
			c.Retain()
		}
		cols[i] = c
	}
	out := array.NewRecordBatch(sc, cols, rec.NumRows())
	for _, c := range cols {
		c.Release()
	}
	rec.Release()
	return out
}

// withKept is sc with the kept columns' types replaced.
func withKept(sc *arrow.Schema, kept map[int]*keptType) *arrow.Schema {
	if kept == nil {
		return sc
	}
	fields := append([]arrow.Field(nil), sc.Fields()...)
	for i, k := range kept {
		fields[i].Type = k
	}
	md := sc.Metadata()
	return arrow.NewSchema(fields, &md)
}
