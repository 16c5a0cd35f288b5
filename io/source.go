package nbio

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Source streams record batches of at most the requested number of rows
// from one input file, projected to the requested top-level columns.
type Source interface {
	Path() string
	Format() string                   // "parquet", "arrow-file" or "arrow-stream"
	Schema() *arrow.Schema            // the projected schema
	Metadata() map[string]string      // file key/value and schema metadata
	Unkept() []string                 // Parquet annotations a rewrite of these columns would lose
	NumRows() int64                   // -1 when unknown before reading (Arrow streams)
	Next() (arrow.RecordBatch, error) // io.EOF after the last batch; the caller releases each batch
	Close() error                     // safe to call twice
}

// Open opens a Parquet or Arrow IPC (file or stream) input, recognised by
// its magic bytes, projected to columns (nil = all top-level columns).
func Open(path string, columns []string, batchSize int, mem memory.Allocator) (Source, error) {
	return OpenRowGroups(path, columns, batchSize, nil, mem)
}

// OpenRowGroups is Open restricted to some Parquet row groups (nil = all;
// Arrow inputs have no row groups and must pass nil).
func OpenRowGroups(path string, columns []string, batchSize int, rowGroups []int, mem memory.Allocator) (src Source, err error) {
	if batchSize < 1 {
		return nil, fmt.Errorf("batch size %d must be positive", batchSize)
	}
	mem = limited(mem)
	f, err := OpenInput(path)
	if err != nil {
		return nil, err
	}
	var magic [6]byte
	n, _ := io.ReadFull(f, magic[:])
	if se := storeFailure(f); se != nil {
		f.Close()
		return nil, se
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	// arrow-go panics on some corrupt metadata; a hostile input is an error
	defer func() {
		if p := recover(); p != nil {
			f.Close()
			src, err = nil, fmt.Errorf("opening %s: corrupt file (%v)", path, p)
		}
	}()
	switch {
	case n >= 4 && string(magic[:4]) == "PAR1":
		src, err = openParquet(f, path, columns, batchSize, rowGroups, mem)
	case rowGroups != nil:
		err = errors.New("row-group ranges need a Parquet input")
	case n == 6 && string(magic[:6]) == "ARROW1":
		src, err = openArrowFile(f, path, columns, batchSize, mem)
	case n >= 4 && magic[0] == 0xFF && magic[1] == 0xFF && magic[2] == 0xFF && magic[3] == 0xFF:
		src, err = openArrowStream(f, path, columns, batchSize, mem)
	default:
		err = errors.New("not a Parquet or Arrow IPC file (unknown magic bytes)")
	}
	if err != nil {
		se := storeFailure(f)
		f.Close()
		if se != nil {
			return nil, se
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return src, nil
}

// projection maps column names to indices of a schema (nil = all).
func projection(sc *arrow.Schema, columns []string) ([]int, error) {
	if columns == nil {
		idx := make([]int, sc.NumFields())
		for i := range idx {
			idx[i] = i
		}
		return idx, nil
	}
	var idx []int
	for _, c := range columns {
		i := sc.FieldIndices(c)
		if len(i) == 0 {
			return nil, fmt.Errorf("no column %q (have %s)", c, strings.Join(fieldNames(sc), ", "))
		}
		idx = append(idx, i[0])
	}
	return idx, nil
}

func fieldNames(sc *arrow.Schema) []string {
	var n []string
	for _, f := range sc.Fields() {
		n = append(n, f.Name)
	}
	return n
}

func schemaMeta(md arrow.Metadata, into map[string]string) {
	for i, k := range md.Keys() {
		if _, ok := into[k]; !ok {
			into[k] = md.Values()[i]
		}
	}
}

// ---- Parquet ----

type parquetSource struct {
	f      InputReader
	path   string
	pr     *file.Reader
	rr     pqarrow.RecordReader
	schema *arrow.Schema
	kept   map[int]*keptType // passthrough columns re-typed to keep their Parquet logical type
	lost   []string          // logical types a rewrite cannot keep
	meta   map[string]string
	rows   int64
	read   int64
	closed bool
}

func openParquet(f InputReader, path string, columns []string, batchSize int, rowGroups []int, mem memory.Allocator) (src Source, err error) {
	defer func() {
		if p := recover(); p != nil {
			src, err = nil, fmt.Errorf("corrupt Parquet metadata (%v)", p)
		}
	}()
	pr, err := file.NewParquetReader(f, file.WithReadProps(readProps(mem)))
	if err != nil {
		return nil, fmt.Errorf("not a readable Parquet file (truncated or corrupt footer?): %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			pr.Close()
		}
	}()
	if err := checkChunks(pr, f); err != nil {
		return nil, err
	}
	if v := pr.MetaData().KeyValueMetadata().FindValue("ARROW:schema"); v != nil {
		dec, err := base64.StdEncoding.DecodeString(*v)
		if err != nil || len(dec) == 0 {
			dec, err = base64.RawStdEncoding.DecodeString(*v)
		}
		if err != nil {
			return nil, fmt.Errorf("corrupt ARROW:schema footer metadata: %w", err)
		}
		if err := CheckIPCSchemaMessage(dec); err != nil {
			return nil, fmt.Errorf("ARROW:schema footer metadata: %w", err)
		}
	}
	fr, err := pqarrow.NewFileReader(pr, pqarrow.ArrowReadProperties{BatchSize: int64(batchSize)}, mem)
	if err != nil {
		return nil, fmt.Errorf("reading Parquet schema: %w", err)
	}
	full, err := fr.Schema()
	if err != nil {
		return nil, fmt.Errorf("reading Parquet schema: %w", err)
	}
	top, err := projection(full, columns)
	if err != nil {
		return nil, err
	}
	var leaves []int
	for _, i := range top {
		collectLeaves(&fr.Manifest.Fields[i], &leaves)
	}
	rows := pr.NumRows()
	if rowGroups != nil {
		rows = 0
		for _, g := range rowGroups {
			if g < 0 || g >= pr.NumRowGroups() {
				return nil, fmt.Errorf("row group %d out of range (the file has %d)", g, pr.NumRowGroups())
			}
			rows += pr.MetaData().RowGroup(g).NumRows()
		}
	}
	if rf, ok := f.(interface{ SetReadRanges([][2]int64) }); ok {
		rf.SetReadRanges(chunkRanges(pr, leaves, rowGroups))
	}
	rr, err := fr.GetRecordReader(context.Background(), leaves, rowGroups)
	if err != nil {
		return nil, fmt.Errorf("reading Parquet columns: %w", err)
	}
	sc := rr.Schema()
	kept, lost := keptLogicalTypes(pr.MetaData().Schema, fr.Manifest, sc, top)
	meta := map[string]string{}
	kv := pr.MetaData().KeyValueMetadata()
	for i, k := range kv.Keys() {
		meta[k] = kv.Values()[i]
	}
	schemaMeta(full.Metadata(), meta)
	ok = true
	return &parquetSource{f: f, path: path, pr: pr, rr: rr, schema: withKept(sc, kept), kept: kept, lost: lost, meta: meta, rows: rows}, nil
}

// readProps streams column chunks through a 1 MiB buffer instead of
// reading each whole chunk into memory (arrow-go's default): memory stays
// bounded by the batch size however large the row groups, and a corrupt
// chunk length cannot ask for a giant allocation.
func readProps(mem memory.Allocator) *parquet.ReaderProperties {
	p := parquet.NewReaderProperties(mem)
	p.BufferedStreamEnabled = true
	p.BufferSize = 1 << 20
	return p
}

// checkChunks rejects column chunks whose byte ranges lie outside the file
// before any reader trusts them.
func checkChunks(pr *file.Reader, f InputReader) error {
	size := f.Size()
	md := pr.MetaData()
	for g := 0; g < md.NumRowGroups(); g++ {
		rg := md.RowGroup(g)
		for c := 0; c < rg.NumColumns(); c++ {
			cc, err := rg.ColumnChunk(c)
			if err != nil {
				return fmt.Errorf("row group %d column %d: %w", g, c, err)
			}
			start := cc.DataPageOffset()
			if cc.HasDictionaryPage() && cc.DictionaryPageOffset() > 0 && cc.DictionaryPageOffset() < start {
				start = cc.DictionaryPageOffset()
			}
			n := cc.TotalCompressedSize()
			if start < 4 || n < 0 || start > size || n > size-start {
				return fmt.Errorf("row group %d column %d: chunk [%d, +%d) lies outside the %d-byte file (corrupt footer)", g, c, start, n, size)
			}
		}
	}
	return nil
}

// chunkRanges are the byte ranges of the column chunks of leaves in the
// row groups (nil: all) a reader will scan.
func chunkRanges(pr *file.Reader, leaves, rowGroups []int) [][2]int64 {
	md := pr.MetaData()
	if rowGroups == nil {
		for g := 0; g < md.NumRowGroups(); g++ {
			rowGroups = append(rowGroups, g)
		}
	}
	var out [][2]int64
	for _, g := range rowGroups {
		rg := md.RowGroup(g)
		for _, c := range leaves {
			cc, err := rg.ColumnChunk(c)
			if err != nil {
				continue
			}
			start := cc.DataPageOffset()
			if cc.HasDictionaryPage() && cc.DictionaryPageOffset() > 0 && cc.DictionaryPageOffset() < start {
				start = cc.DictionaryPageOffset()
			}
			out = append(out, [2]int64{start, start + cc.TotalCompressedSize()})
		}
	}
	return out
}

func collectLeaves(f *pqarrow.SchemaField, out *[]int) {
	if f.IsLeaf() {
		*out = append(*out, f.ColIndex)
		return
	}
	for i := range f.Children {
		collectLeaves(&f.Children[i], out)
	}
}

func (s *parquetSource) Path() string                { return s.path }
func (s *parquetSource) Format() string              { return "parquet" }
func (s *parquetSource) Schema() *arrow.Schema       { return s.schema }
func (s *parquetSource) Metadata() map[string]string { return s.meta }
func (s *parquetSource) NumRows() int64              { return s.rows }
func (s *parquetSource) Unkept() []string            { return s.lost }

func (s *parquetSource) Next() (rec arrow.RecordBatch, err error) {
	// arrow-go can panic on corrupt pages; a hostile input is an error, not a crash
	defer func() {
		if p := recover(); p != nil {
			rec, err = nil, fmt.Errorf("reading %s after row %d: corrupt data (%v)", s.path, s.read, p)
		}
		if err != nil && err != io.EOF {
			if se := storeFailure(s.f); se != nil {
				rec, err = nil, se
			}
		}
	}()
	if s.rr.Next() {
		rec := s.rr.RecordBatch()
		rec.Retain()
		s.read += rec.NumRows()
		return keepLogical(rec, s.schema, s.kept), nil
	}
	if err := s.rr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s after row %d: %w", s.path, s.read, err)
	}
	if s.read != s.rows {
		return nil, fmt.Errorf("reading %s: got %d rows, the footer promises %d", s.path, s.read, s.rows)
	}
	return nil, io.EOF
}

func (s *parquetSource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.rr.Release()
	return s.pr.Close() // closes the file too
}

// ---- Arrow IPC ----

// ipcSource adapts Arrow IPC readers; batches larger than batchSize are sliced.
type ipcSource struct {
	f       InputReader
	path    string
	format  string
	next    func() (arrow.RecordBatch, error) // the file's own batches
	cols    []int
	schema  *arrow.Schema
	meta    map[string]string
	rows    int64
	batch   int
	cur     arrow.RecordBatch
	off     int64
	release func()
	closed  bool
}

// ipcOptions bound what a hostile IPC file can make arrow-go allocate: the
// stream reader otherwise makes a buffer of any metadata length it reads
// (2 GiB from four corrupt bytes, found by TestFuzzSoak). A record batch
// body is one allocation, so it gets the same cap as any buffer.
func ipcOptions(mem memory.Allocator) []ipc.Option {
	return []ipc.Option{ipc.WithAllocator(mem), ipc.WithMetadataSizeLimit(64 << 20), ipc.WithBodySizeLimit(int64(MaxAllocation))}
}

func openArrowFile(f InputReader, path string, columns []string, batchSize int, mem memory.Allocator) (Source, error) {
	if err := checkArrowFooter(f); err != nil {
		return nil, err
	}
	r, err := ipc.NewFileReader(f, ipcOptions(mem)...)
	if err != nil {
		return nil, fmt.Errorf("not a readable Arrow IPC file: %w", err)
	}
	i := 0
	s := &ipcSource{f: f, path: path, format: "arrow-file", batch: batchSize, release: func() { r.Close() }}
	s.next = func() (arrow.RecordBatch, error) {
		if i >= r.NumRecords() {
			return nil, io.EOF
		}
		rec, err := r.RecordBatch(i)
		i++
		if err != nil {
			return nil, err
		}
		rec.Retain()
		return rec, nil
	}
	return s.init(r.Schema(), columns, -1)
}

func openArrowStream(f InputReader, path string, columns []string, batchSize int, mem memory.Allocator) (Source, error) {
	if err := checkArrowStreamSchema(f); err != nil {
		return nil, err
	}
	// NewReader drops the size limits on the message reader it builds
	// (arrow-go v18.8), so build that one ourselves.
	opts := ipcOptions(mem)
	r, err := ipc.NewReaderFromMessageReader(ipc.NewMessageReader(bufio.NewReaderSize(f, 1<<20), opts...), opts...)
	if err != nil {
		return nil, fmt.Errorf("not a readable Arrow IPC stream: %w", err)
	}
	s := &ipcSource{f: f, path: path, format: "arrow-stream", batch: batchSize, release: r.Release}
	s.next = func() (arrow.RecordBatch, error) {
		if r.Next() {
			rec := r.RecordBatch()
			rec.Retain()
			return rec, nil
		}
		if err := r.Err(); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, io.EOF
	}
	return s.init(r.Schema(), columns, -1)
}

// checkArrowFooter bounds-checks an Arrow IPC file's footer before arrow-go
// decodes it (see fbcheck.go).
func checkArrowFooter(f InputReader) error {
	st := f
	var tail [10]byte
	if st.Size() < 22 {
		return errors.New("Arrow IPC file too short")
	}
	if _, err := f.ReadAt(tail[:], st.Size()-10); err != nil {
		return err
	}
	n := int64(int32(binary.LittleEndian.Uint32(tail[:4])))
	if string(tail[4:]) != "ARROW1" || n <= 0 || n > st.Size()-18 {
		return errors.New("corrupt Arrow IPC file footer")
	}
	footer := make([]byte, n)
	if _, err := f.ReadAt(footer, st.Size()-10-n); err != nil {
		return err
	}
	if err := CheckIPCFileFooter(footer); err != nil {
		return fmt.Errorf("Arrow IPC file footer: %w", err)
	}
	return nil
}

// checkArrowStreamSchema bounds-checks the schema message that starts an
// Arrow IPC stream, then rewinds.
func checkArrowStreamSchema(f InputReader) error {
	defer f.Seek(0, io.SeekStart)
	st := f
	var hdr [8]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return errors.New("Arrow IPC stream too short")
	}
	n := int64(int32(binary.LittleEndian.Uint32(hdr[4:])))
	if n <= 0 || n > st.Size()-8 {
		return fmt.Errorf("corrupt Arrow IPC stream: schema message length %d", n)
	}
	msg := make([]byte, 8+n)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(f, msg[8:]); err != nil {
		return err
	}
	if err := CheckIPCSchemaMessage(msg); err != nil {
		return fmt.Errorf("Arrow IPC stream schema: %w", err)
	}
	return nil
}

func (s *ipcSource) init(full *arrow.Schema, columns []string, rows int64) (Source, error) {
	cols, err := projection(full, columns)
	if err != nil {
		s.release()
		return nil, err
	}
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = full.Field(c)
	}
	md := full.Metadata()
	s.cols, s.schema, s.rows = cols, arrow.NewSchema(fields, &md), rows
	s.meta = map[string]string{}
	schemaMeta(md, s.meta)
	return s, nil
}

func (s *ipcSource) Path() string                { return s.path }
func (s *ipcSource) Format() string              { return s.format }
func (s *ipcSource) Schema() *arrow.Schema       { return s.schema }
func (s *ipcSource) Metadata() map[string]string { return s.meta }
func (s *ipcSource) Unkept() []string            { return nil }
func (s *ipcSource) NumRows() int64              { return s.rows }

func (s *ipcSource) Next() (rec arrow.RecordBatch, err error) {
	defer func() {
		if p := recover(); p != nil {
			rec, err = nil, fmt.Errorf("reading %s: corrupt data (%v)", s.path, p)
		}
	}()
	for s.cur == nil || s.off >= s.cur.NumRows() {
		if s.cur != nil {
			s.cur.Release()
			s.cur = nil
		}
		rec, err := s.next()
		if err == io.EOF {
			return nil, io.EOF
		}
		if se := storeFailure(s.f); err != nil && se != nil {
			return nil, se
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", s.path, err)
		}
		cols := make([]arrow.Array, len(s.cols))
		for i, c := range s.cols {
			cols[i] = rec.Column(c)
		}
		s.cur = arrowNewRecord(s.schema, cols, rec.NumRows())
		rec.Release()
		s.off = 0
	}
	end := min(s.off+int64(s.batch), s.cur.NumRows())
	out := s.cur.NewSlice(s.off, end)
	s.off = end
	return out, nil
}

func (s *ipcSource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cur != nil {
		s.cur.Release()
	}
	s.release()
	return s.f.Close()
}

// RowGroupRows returns the row count of each row group of a Parquet file,
// or nil for an Arrow input.
func RowGroupRows(path string) ([]int64, error) {
	f, err := OpenInput(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var magic [4]byte
	if n, _ := io.ReadFull(f, magic[:]); n < 4 || string(magic[:]) != "PAR1" {
		return nil, nil
	}
	f.Seek(0, io.SeekStart)
	pr, err := file.NewParquetReader(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: not a readable Parquet file (truncated or corrupt footer?): %w", path, err)
	}
	defer pr.Close()
	out := make([]int64, pr.NumRowGroups())
	for i := range out {
		out[i] = pr.MetaData().RowGroup(i).NumRows()
	}
	return out, nil
}

// EachBatch calls fn with every remaining batch of src, releasing each
// after fn returns, and stops at the end of the input or the first error.
func EachBatch(src Source, fn func(arrow.RecordBatch) error) error {
	for {
		rec, err := src.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		err = fn(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
}

// ParquetRows reads the row count from a Parquet file's footer (an error
// when the file is not whole Parquet).
func ParquetRows(path string) (rows int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("corrupt Parquet footer (%v)", p)
		}
	}()
	f, err := OpenInput(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	pr, err := file.NewParquetReader(f)
	if err != nil {
		return 0, err
	}
	defer pr.Close()
	return pr.NumRows(), nil
}
