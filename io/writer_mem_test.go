package nbio

import (
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
)

// scoreSchema is the shape of `ninbatch run` output for a 10-class model.
func scoreSchema() *arrow.Schema {
	st := arrow.StructOf(arrow.Field{Name: "class", Type: arrow.PrimitiveTypes.Int32},
		arrow.Field{Name: "prob", Type: arrow.PrimitiveTypes.Float32},
		arrow.Field{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true})
	return arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "probs", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
		{Name: "top1", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
		{Name: "top1_prob", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "top1_label", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "topk", Type: arrow.ListOf(st), Nullable: true},
		{Name: "model_id", Type: arrow.BinaryTypes.String},
		{Name: "error", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
}

// scoreBatch builds n rows of random scores starting at id first.
func scoreBatch(mem memory.Allocator, sc *arrow.Schema, rng *rand.Rand, first, n int) arrow.RecordBatch {
	names := []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	for i := 0; i < n; i++ {
		b.Field(0).(*array.Int64Builder).Append(int64(first + i))
		lb := b.Field(1).(*array.ListBuilder)
		lb.Append(true)
		for j := 0; j < 10; j++ {
			lb.ValueBuilder().(*array.Float32Builder).Append(rng.Float32())
		}
		c := rng.Intn(10)
		b.Field(2).(*array.Int32Builder).Append(int32(c))
		b.Field(3).(*array.Float32Builder).Append(rng.Float32())
		b.Field(4).(*array.StringBuilder).Append(names[c])
		tb := b.Field(5).(*array.ListBuilder)
		tb.Append(true)
		sb := tb.ValueBuilder().(*array.StructBuilder)
		for j := 0; j < 5; j++ {
			sb.Append(true)
			sb.FieldBuilder(0).(*array.Int32Builder).Append(int32(j))
			sb.FieldBuilder(1).(*array.Float32Builder).Append(rng.Float32())
			sb.FieldBuilder(2).(*array.StringBuilder).Append(names[j])
		}
		b.Field(6).(*array.StringBuilder).Append("sha256:0123456789abcdef0123456789abcdef")
		b.Field(7).(*array.StringBuilder).AppendNull()
	}
	return b.NewRecordBatch()
}

// TestWriterHeapBounded writes 65,536 score rows in 16,384-row groups and
// samples the live heap after a GC. With dictionary-encoded float columns
// and arrow-go's 8 MiB-window zstd encoders it peaked at 27-32 MB; the
// writer now holds under 8 MB, and the bound here leaves room for noise.
func TestWriterHeapBounded(t *testing.T) {
	sc := scoreSchema()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	path := filepath.Join(t.TempDir(), "o.parquet")
	w, err := CreateParquet(path, sc, WriterOptions{RowGroupRows: 16384}, mem)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	for row := 0; row < 65536; row += 64 {
		rec := scoreBatch(mem, sc, rng, row, 64)
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		if (row+64)%2048 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if d := ms.HeapInuse - min(ms.HeapInuse, base); d > peak {
				peak = d
			}
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	t.Logf("peak writer heap %.1f MB", float64(peak)/1e6)
	if peak > 16<<20 {
		t.Errorf("writer held %.1f MB of live heap; want < 16 MiB", float64(peak)/1e6)
	}

	// float leaves are plain-encoded, the others keep their dictionaries
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, err := file.NewParquetReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if pr.NumRows() != 65536 || pr.NumRowGroups() != 4 {
		t.Fatalf("%d rows in %d row groups, want 65536 in 4", pr.NumRows(), pr.NumRowGroups())
	}
	rg := pr.MetaData().RowGroup(0)
	for c := 0; c < rg.NumColumns(); c++ {
		cc, err := rg.ColumnChunk(c)
		if err != nil {
			t.Fatal(err)
		}
		isFloat := cc.Type() == parquet.Types.Float || cc.Type() == parquet.Types.Double
		if cc.HasDictionaryPage() == isFloat {
			t.Errorf("column %s (%s): dictionary page %v", cc.PathInSchema(), cc.Type(), cc.HasDictionaryPage())
		}
		if cc.Compression() != compress.Codecs.Zstd {
			t.Errorf("column %s: compression %s", cc.PathInSchema(), cc.Compression())
		}
	}
}

// TestZstdCodecRoundTrip: the registered zstd codec is ninbatch's 1 MiB
// window one, and it round-trips buffers larger than its window.
func TestZstdCodecRoundTrip(t *testing.T) {
	c, err := compress.GetCodec(compress.Codecs.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*pageZstd); !ok {
		t.Fatalf("zstd codec is %T, want *pageZstd", c)
	}
	rng := rand.New(rand.NewSource(2))
	for _, n := range []int{1, 1000, zstdWindow - 1, 3*zstdWindow + 17} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(rng.Intn(16)) // compressible
		}
		enc := c.EncodeLevel(nil, src, compress.DefaultCompressionLevel)
		dec, err := compress.Decode(c, make([]byte, n), enc)
		if err != nil || string(dec) != string(src) {
			t.Fatalf("n=%d: round trip failed (%v)", n, err)
		}
	}
}
