package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	nbio "github.com/ninbatch/ninbatch/io"
	"github.com/ninbatch/ninbatch/nin"
)

// runModel is a tiny 12×12 gray model with 4 classes and class names.
func runModel(t *testing.T) *nin.Model {
	m := newTiny(t)
	m.Classes = []string{"tl", "tr", "bl", "br"}
	m.ID = "test-model"
	return m
}

type layout int

const (
	hfStruct layout = iota
	binaryCol
	largeBinaryCol
	rawU8List
	rawU8Fixed
	rawF32List
)

var layouts = map[layout]string{hfStruct: "hf_struct", binaryCol: "binary", largeBinaryCol: "large_binary",
	rawU8List: "u8_list", rawU8Fixed: "u8_fixed", rawF32List: "f32_list"}

// badKind marks rows to corrupt.
type badKind int

const (
	good badKind = iota
	corrupt
	truncated
	null
	wrongLen
	unsupported
)

// writeInput writes rows id, tag (passthrough) and an image column in the
// given layout; bad[i] != good corrupts row i.
func writeInput(t *testing.T, path string, lay layout, pixels [][]uint8, bad map[int]badKind) {
	t.Helper()
	mem := memory.NewGoAllocator()
	var imgType arrow.DataType
	switch lay {
	case hfStruct:
		imgType = arrow.StructOf(arrow.Field{Name: "bytes", Type: arrow.BinaryTypes.Binary, Nullable: true},
			arrow.Field{Name: "path", Type: arrow.BinaryTypes.String, Nullable: true})
	case binaryCol:
		imgType = arrow.BinaryTypes.Binary
	case largeBinaryCol:
		imgType = arrow.BinaryTypes.LargeBinary
	case rawU8List:
		imgType = arrow.ListOf(arrow.PrimitiveTypes.Uint8)
	case rawU8Fixed:
		imgType = arrow.FixedSizeListOf(144, arrow.PrimitiveTypes.Uint8)
	case rawF32List:
		imgType = arrow.ListOf(arrow.PrimitiveTypes.Float32)
	}
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "image", Type: imgType, Nullable: true},
		{Name: "tag", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	for i, px := range pixels {
		b.Field(0).(*array.Int64Builder).Append(int64(1000 + i))
		if i%5 == 0 {
			b.Field(2).(*array.StringBuilder).AppendNull()
		} else {
			b.Field(2).(*array.StringBuilder).Append(fmt.Sprintf("tag-%d", i))
		}
		kind := bad[i]
		enc, _ := nbio.EncodePNG(px, 12, 12, 1)
		switch kind {
		case corrupt:
			enc = append(append([]byte{}, enc[:20]...), []byte("garbage garbage garbage garbage")...)
		case truncated:
			enc = enc[:len(enc)/2]
		case unsupported:
			enc = []byte("GIF89a-not-really-an-image-at-all")
			enc = []byte("%PDF-1.4 this is not an image")
		}
		ib := b.Field(1)
		switch lay {
		case hfStruct:
			sb := ib.(*array.StructBuilder)
			if kind == null {
				sb.AppendNull()
				continue
			}
			sb.Append(true)
			sb.FieldBuilder(0).(*array.BinaryBuilder).Append(enc)
			sb.FieldBuilder(1).(*array.StringBuilder).Append(fmt.Sprintf("%d.png", i))
		case binaryCol, largeBinaryCol:
			bb := ib.(*array.BinaryBuilder)
			if kind == null {
				bb.AppendNull()
				continue
			}
			bb.Append(enc)
		case rawU8List:
			lb := ib.(*array.ListBuilder)
			if kind == null {
				lb.AppendNull()
				continue
			}
			lb.Append(true)
			v := px
			if kind == wrongLen || kind == corrupt || kind == truncated || kind == unsupported {
				v = px[:100]
			}
			lb.ValueBuilder().(*array.Uint8Builder).AppendValues(v, nil)
		case rawU8Fixed:
			lb := ib.(*array.FixedSizeListBuilder)
			if kind == null {
				lb.AppendNull()
				continue
			}
			lb.Append(true)
			lb.ValueBuilder().(*array.Uint8Builder).AppendValues(px, nil)
		case rawF32List:
			lb := ib.(*array.ListBuilder)
			if kind == null {
				lb.AppendNull()
				continue
			}
			lb.Append(true)
			n := 144
			if kind != good {
				n = 7
			}
			for _, v := range px[:n] {
				lb.ValueBuilder().(*array.Float32Builder).Append(float32(v))
			}
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	w, err := nbio.CreateParquet(path, sc, nbio.WriterOptions{RowGroupRows: 7}, mem)
	if err != nil {
		t.Fatal(err)
	}
	// several row groups and batches
	for off := int64(0); off < rec.NumRows(); off += 7 {
		s := rec.NewSlice(off, min(off+7, rec.NumRows()))
		if err := w.Write(s); err != nil {
			t.Fatal(err)
		}
		s.Release()
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

type outRow struct {
	id    int64
	tag   string
	tagOK bool
	probs []float32
	top1  int32
	label string
	err   string
}

func readOutput(t *testing.T, path string) []outRow {
	t.Helper()
	src, err := nbio.Open(path, nil, 1000, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var rows []outRow
	sc := src.Schema()
	col := func(name string) int { return sc.FieldIndices(name)[0] }
	err = nbio.EachBatch(src, func(rec arrow.RecordBatch) error {
		ids := rec.Column(col("id")).(*array.Int64)
		tags := rec.Column(col("tag")).(*array.String)
		probs := rec.Column(col("probs")).(*array.List)
		pv := probs.ListValues().(*array.Float32)
		top1 := rec.Column(col("top1")).(*array.Int32)
		lab := rec.Column(col("top1_label")).(*array.String)
		errs := rec.Column(col("error")).(*array.String)
		for i := 0; i < int(rec.NumRows()); i++ {
			r := outRow{id: ids.Value(i), tag: tags.Value(i), tagOK: tags.IsValid(i), top1: top1.Value(i), label: lab.Value(i)}
			if errs.IsValid(i) {
				r.err = errs.Value(i)
			} else {
				b, e := probs.ValueOffsets(i)
				r.probs = append([]float32(nil), pv.Float32Values()[b:e]...)
			}
			rows = append(rows, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func newRunner(t *testing.T, m *nin.Model, inputs []string, out string, onErr string, workers int) *Runner {
	net, err := nin.NewNet(m, nin.Options{MaxBatch: 5, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(net.Close)
	return &Runner{Model: m, Net: net, Mem: memory.DefaultAllocator, Config: RunConfig{
		Inputs: nbio.Files(inputs...), OutDir: out, Batch: 5, TopK: 3, OnError: onErr, Workers: workers, Version: "test"}}
}

// TestRunLayoutsMatchEngine: every image layout scores to the engine's own
// forward on the same tensors (≤ 1e-6), rows in input order, passthrough
// values and nulls intact, with several decode workers.
func TestRunLayoutsMatchEngine(t *testing.T) {
	m := runModel(t)
	data := tinyData(23, 5)
	var pixels [][]uint8
	for i := 0; i < data.N; i++ {
		pixels = append(pixels, data.Pixels[i*144:(i+1)*144])
	}
	// expected: the engine on the same preprocessed tensors
	prep := PreprocessFor(m)
	net, _ := nin.NewNet(m, nin.Options{MaxBatch: 23, Threads: 1})
	defer net.Close()
	x := make([]float32, 23*144)
	for i := range pixels {
		prep.Normalize(x[i*144:(i+1)*144], pixels[i])
	}
	want := make([]float32, 23*4)
	net.Forward(x, 23, want, nil)

	dir := t.TempDir()
	for lay, name := range layouts {
		in := filepath.Join(dir, name+".parquet")
		writeInput(t, in, lay, pixels, nil)
		out := filepath.Join(dir, "out-"+name)
		os.MkdirAll(out, 0o755)
		r := newRunner(t, m, []string{in}, out, "record", 3)
		sum, err := r.Run(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if sum.RowsIn != 23 || sum.RowsScored != 23 || sum.FilesDone != 1 {
			t.Fatalf("%s: summary %+v", name, sum)
		}
		rows := readOutput(t, filepath.Join(out, name+".parquet"))
		if len(rows) != 23 {
			t.Fatalf("%s: %d rows", name, len(rows))
		}
		for i, r := range rows {
			if r.id != int64(1000+i) || r.tagOK != (i%5 != 0) || (r.tagOK && r.tag != fmt.Sprintf("tag-%d", i)) {
				t.Fatalf("%s row %d: passthrough %+v", name, i, r)
			}
			var s float64
			for k, p := range r.probs {
				s += float64(p)
				if d := math.Abs(float64(p - want[i*4+k])); d > 1e-6 {
					t.Fatalf("%s row %d class %d: %g vs engine %g", name, i, k, p, want[i*4+k])
				}
			}
			if math.Abs(s-1) > 1e-5 || r.label != m.Classes[r.top1] {
				t.Fatalf("%s row %d: probs sum %g, top1 %d label %q", name, i, s, r.top1, r.label)
			}
		}
	}
}

// TestRunBadRows: each kind of bad row under record, skip and fail.
func TestRunBadRows(t *testing.T) {
	m := runModel(t)
	data := tinyData(12, 6)
	var pixels [][]uint8
	for i := 0; i < data.N; i++ {
		pixels = append(pixels, data.Pixels[i*144:(i+1)*144])
	}
	cases := []struct {
		name string
		lay  layout
		kind badKind
		msg  string
	}{
		{"corrupt_png", binaryCol, corrupt, "corrupt"},
		{"truncated_png", hfStruct, truncated, "png"},
		{"null_image", hfStruct, null, "null"},
		{"null_binary", binaryCol, null, "null"},
		{"unsupported_format", binaryCol, unsupported, "unsupported image format"},
		{"wrong_tensor_length", rawU8List, wrongLen, "144"},
		{"wrong_f32_length", rawF32List, wrongLen, "144"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		in := filepath.Join(dir, c.name+".parquet")
		writeInput(t, in, c.lay, pixels, map[int]badKind{3: c.kind, 8: c.kind})
		for _, mode := range []string{"record", "skip", "fail"} {
			out := filepath.Join(dir, c.name+"-"+mode)
			os.MkdirAll(out, 0o755)
			sum, err := newRunner(t, m, []string{in}, out, mode, 2).Run(context.Background())
			outFile := filepath.Join(out, c.name+".parquet")
			switch mode {
			case "record":
				if err != nil || sum.RowsError != 2 || sum.RowsOut != 12 {
					t.Fatalf("%s/%s: %v %+v", c.name, mode, err, sum)
				}
				rows := readOutput(t, outFile)
				for i, r := range rows {
					bad := i == 3 || i == 8
					if r.id != int64(1000+i) || (r.err != "") != bad || (bad && !strings.Contains(strings.ToLower(r.err), c.msg)) || (bad != (r.probs == nil)) {
						t.Fatalf("%s/%s row %d: %+v", c.name, mode, i, r)
					}
				}
			case "skip":
				if err != nil || sum.RowsSkipped != 2 || sum.RowsOut != 10 {
					t.Fatalf("%s/%s: %v %+v", c.name, mode, err, sum)
				}
				rows := readOutput(t, outFile)
				var ids []int64
				for _, r := range rows {
					ids = append(ids, r.id)
					if r.err != "" {
						t.Fatalf("%s/%s: error row kept", c.name, mode)
					}
				}
				if fmt.Sprint(ids) != "[1000 1001 1002 1004 1005 1006 1007 1009 1010 1011]" {
					t.Fatalf("%s/%s: ids %v", c.name, mode, ids)
				}
			case "fail":
				var re *RowError
				if !errors.As(err, &re) || re.Row != 3 || re.Column != "image" || re.File != in {
					t.Fatalf("%s/%s: error %v", c.name, mode, err)
				}
				if !strings.Contains(err.Error(), in) || !strings.Contains(err.Error(), "row 3") {
					t.Fatalf("%s/%s: message %q", c.name, mode, err)
				}
				if ents := dataFiles(out); len(ents) != 0 {
					t.Fatalf("%s/%s: left files %v", c.name, mode, ents)
				}
			}
		}
	}
}

// TestRunBadFiles: file-level problems fail before anything is written.
func TestRunBadFiles(t *testing.T) {
	m := runModel(t)
	data := tinyData(4, 7)
	pixels := [][]uint8{data.Pixels[:144], data.Pixels[144:288]}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.parquet")
	writeInput(t, good, hfStruct, pixels, nil)
	b, _ := os.ReadFile(good)
	notParquet := filepath.Join(dir, "notes.parquet")
	os.WriteFile(notParquet, []byte("id,image\n1,abc\n"), 0o644)
	trunc := filepath.Join(dir, "trunc.parquet")
	os.WriteFile(trunc, b[:len(b)-20], 0o644)
	noImage := filepath.Join(dir, "noimage.parquet")
	{
		sc := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
		bl := array.NewRecordBuilder(memory.DefaultAllocator, sc)
		bl.Field(0).(*array.Int64Builder).Append(1)
		rec := bl.NewRecordBatch()
		w, _ := nbio.CreateParquet(noImage, sc, nbio.WriterOptions{}, memory.DefaultAllocator)
		w.Write(rec)
		w.Commit()
		rec.Release()
		bl.Release()
	}
	for _, c := range []struct{ file, msg string }{
		{notParquet, "not a Parquet or Arrow"},
		{trunc, "footer"},
		{noImage, "no column can hold images"},
	} {
		out := filepath.Join(dir, "out-"+filepath.Base(c.file))
		os.MkdirAll(out, 0o755)
		// --on-error fail: the good file comes first, and preflight must
		// still refuse before writing it
		_, err := newRunner(t, m, []string{good, c.file}, out, "fail", 1).Run(context.Background())
		if err == nil || !IsInputError(err) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), c.file) {
			t.Fatalf("%s: %v", c.file, err)
		}
		if ents := dataFiles(out); len(ents) != 0 {
			t.Fatalf("%s: partial output %v", c.file, ents)
		}
		// record (the default): the bad file is recorded, the good one commits
		sum, err := newRunner(t, m, []string{good, c.file}, out, "record", 1).Run(context.Background())
		if err != nil || sum.FilesDone != 1 || sum.FilesFailed != 1 || len(sum.Failures) != 1 ||
			!strings.Contains(sum.Failures[0].Error, c.msg) || sum.Failures[0].Input != c.file {
			t.Fatalf("%s, record: %v %+v", c.file, err, sum)
		}
		if ents := dataFiles(out); len(ents) != 1 || ents[0] != "good.parquet" {
			t.Fatalf("%s, record: outputs %v", c.file, ents)
		}
		man, _ := ReadManifests(out)
		if e := man[OutputRel(filepath.Base(c.file), 0, 0)]; e.Status != "failed" || !strings.Contains(e.Error, c.msg) {
			t.Fatalf("%s, record: manifest entry %+v", c.file, e)
		}
	}
}

// dataFiles lists what a run left in dir besides its lock and manifest.
func dataFiles(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".ninbatch.") && strings.HasSuffix(n, ".lock") || strings.HasPrefix(n, "_ninbatch_manifest") {
			continue
		}
		out = append(out, n)
	}
	return out
}
