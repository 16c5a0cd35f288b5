package nbio

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// WriterOptions configure a Parquet output.
type WriterOptions struct {
	Compression   string            // "zstd" (default), "snappy" or "none"
	RowGroupRows  int               // start a new row group after this many rows (default 65536)
	RowGroupBytes int64             // ... or after this many buffered bytes (default 64 MiB)
	Metadata      map[string]string // file key/value metadata
}

// ParquetWriter writes one Parquet file under a temporary name in the
// destination directory; Commit makes it appear atomically (fsync, rename,
// fsync of the directory), Abort removes it. A crash leaves only a
// temporary file whose name starts with "." and contains ".tmp-".
type ParquetWriter struct {
	f       *os.File   // local: the temporary
	obj     ObjectSink // store: the conditional upload
	etag    string     // store: the committed object's ETag
	sink    *hashingWriter
	tmp     string
	final   string
	fw      *pqarrow.FileWriter
	mem     memory.Allocator
	opt     WriterOptions
	rgRows  int
	rgBytes int64
	done    bool
	rowsAll int64
}

// TempPrefix is how temporaries of path start (for cleaning stale ones).
func TempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// CreateParquet starts writing path.
func CreateParquet(path string, sc *arrow.Schema, opt WriterOptions, mem memory.Allocator) (*ParquetWriter, error) {
	if opt.RowGroupRows <= 0 {
		opt.RowGroupRows = 65536
	}
	if opt.RowGroupBytes <= 0 {
		opt.RowGroupBytes = 64 << 20
	}
	var codec compress.Compression
	switch opt.Compression {
	case "", "zstd":
		codec = compress.Codecs.Zstd
	case "snappy":
		codec = compress.Codecs.Snappy
	case "none":
		codec = compress.Codecs.Uncompressed
	default:
		return nil, fmt.Errorf("compression %q: want zstd, snappy or none", opt.Compression)
	}
	var f *os.File
	var obj ObjectSink
	var dst io.Writer
	var tmp string
	if IsURL(path) {
		u, err := ParseObjectURL(path)
		if err != nil {
			return nil, err
		}
		if obj, err = CreateObject(context.Background(), u, nil); err != nil {
			return nil, fmt.Errorf("creating output %s: %w", path, err)
		}
		dst = obj
	} else {
		var rnd [6]byte
		rand.Read(rnd[:])
		tmp = filepath.Join(filepath.Dir(path), TempPrefix(path)+hex.EncodeToString(rnd[:]))
		var err error
		if f, err = os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644); err != nil {
			return nil, fmt.Errorf("creating output for %s: %w", path, err)
		}
		dst = f
	}
	cleanup := func() {
		if f != nil {
			f.Close()
			os.Remove(tmp)
		}
		if obj != nil {
			obj.Abort()
		}
	}
	popts := []parquet.WriterProperty{parquet.WithCompression(codec), parquet.WithAllocator(mem),
		parquet.WithMaxRowGroupLength(int64(opt.RowGroupRows))}
	aprops := pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema(), pqarrow.WithAllocator(mem))
	noDict, err := floatLeaves(sc, aprops)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("creating Parquet writer for %s: %w", path, err)
	}
	for _, p := range noDict {
		popts = append(popts, parquet.WithDictionaryFor(p, false))
	}
	sink := &hashingWriter{f: dst, h: sha256.New()}
	fw, err := pqarrow.NewFileWriter(sc, sink, parquet.NewWriterProperties(popts...), aprops)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("creating Parquet writer for %s: %w", path, err)
	}
	for k, v := range opt.Metadata {
		if err := fw.AppendKeyValueMetadata(k, v); err != nil {
			fw.Close()
			cleanup()
			return nil, err
		}
	}
	return &ParquetWriter{f: f, obj: obj, sink: sink, tmp: tmp, final: path, fw: fw, mem: mem, opt: opt}, nil
}

// floatLeaves lists the dotted paths of the schema's float and double leaf
// columns. Those are written without dictionary encoding: scores are
// nearly all distinct, so a dictionary only makes the file bigger (a
// 20,000-row nin-cifar10 output shrank by 26% without it), and
// while a row group is buffered its hash table of every distinct value cost
// about 1.2 KB of heap per output row (16,384-row groups peaked at 27 MB of
// writer heap with dictionaries, 7 MB without).
func floatLeaves(sc *arrow.Schema, aprops pqarrow.ArrowWriterProperties) ([]string, error) {
	ps, err := pqarrow.ToParquet(sc, parquet.NewWriterProperties(), aprops)
	if err != nil {
		return nil, err
	}
	var out []string
	for i := 0; i < ps.NumColumns(); i++ {
		c := ps.Column(i)
		if t := c.PhysicalType(); t == parquet.Types.Float || t == parquet.Types.Double {
			out = append(out, c.Path())
		}
	}
	return out, nil
}

// Write appends a batch, starting a new row group when the current one
// reaches the row or byte bound.
func (w *ParquetWriter) Write(rec arrow.RecordBatch) (err error) {
	defer func() { // arrow-go panics on some malformed arrays (from a corrupt input)
		if p := recover(); p != nil {
			err = fmt.Errorf("writing %s: malformed data (%v)", w.final, p)
		}
	}()
	if w.done {
		return errors.New("write after commit or abort")
	}
	// Buffered row groups stay in memory until closed, and pqarrow reports
	// no bytes for them until then: bound them by our own count of the
	// Arrow bytes appended.
	size := recordBytes(rec)
	if w.rgRows > 0 && (w.rgRows+int(rec.NumRows()) > w.opt.RowGroupRows || w.rgBytes+size > w.opt.RowGroupBytes) {
		w.fw.NewBufferedRowGroup()
		w.rgRows, w.rgBytes = 0, 0
	}
	w.rgBytes += size
	m, err := w.materialize(rec)
	if err != nil {
		return fmt.Errorf("writing %s: %w", w.final, err)
	}
	defer m.Release()
	if err := w.fw.WriteBuffered(m); err != nil {
		return fmt.Errorf("writing %s: %w", w.final, err)
	}
	w.rgRows += int(rec.NumRows())
	w.rowsAll += rec.NumRows()
	return nil
}

// materialize works around pqarrow (arrow-go v18.8) ignoring the offset of a
// sliced fixed_size_list when writing (it writes the first rows' values
// again): columns of nested type that are slices are copied to offset 0.
// The caller's record is not changed; the result must be released.
func (w *ParquetWriter) materialize(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	var cols []arrow.Array
	changed := false
	for i := 0; i < int(rec.NumCols()); i++ {
		c := rec.Column(i)
		if _, nested := c.DataType().(arrow.NestedType); nested && c.Data().Offset() != 0 {
			cp, err := array.Concatenate([]arrow.Array{c}, w.mem)
			if err != nil {
				for _, x := range cols {
					x.Release()
				}
				return nil, err
			}
			cols = append(cols, cp)
			changed = true
			continue
		}
		c.Retain()
		cols = append(cols, c)
	}
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	if !changed {
		rec.Retain()
		return rec, nil
	}
	return array.NewRecordBatch(rec.Schema(), cols, rec.NumRows()), nil
}

// Rows is the number of rows written so far.
func (w *ParquetWriter) Rows() int64 { return w.rowsAll }

// SetMetadata adds a file key/value pair (before Commit).
func (w *ParquetWriter) SetMetadata(k, v string) error { return w.fw.AppendKeyValueMetadata(k, v) }

// Commit finishes the file and atomically moves it into place.
func (w *ParquetWriter) Commit() error {
	if w.done {
		return errors.New("commit after commit or abort")
	}
	w.done = true
	err := w.fw.Close() // writes the footer
	if w.obj != nil {
		if err != nil {
			w.obj.Abort()
			return fmt.Errorf("finishing %s: %w", w.final, err)
		}
		if w.etag, err = w.obj.Commit(); err != nil {
			if errors.Is(err, ErrObjectExists) {
				return fmt.Errorf("finishing %s: %w", w.final, err)
			}
			return fmt.Errorf("finishing %s: %w", w.final, err)
		}
		return nil
	}
	w.f.Close() // (pqarrow may already have closed it)
	if err == nil {
		err = syncPath(w.tmp)
	}
	if err == nil {
		err = os.Rename(w.tmp, w.final)
	}
	if err == nil {
		err = syncPath(filepath.Dir(w.final))
	}
	if err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("finishing %s: %w", w.final, err)
	}
	return nil
}

// Checksum is the committed file's size and sha256 (hex), computed as it
// was written: the manifest records them so a rerun can verify the output.
func (w *ParquetWriter) Checksum() (size int64, sha string) {
	return w.sink.n, hex.EncodeToString(w.sink.h.Sum(nil))
}

// ETag is a committed store output's ETag ("" for local files).
func (w *ParquetWriter) ETag() string { return w.etag }

// hashingWriter hashes and counts what goes to the file.
type hashingWriter struct {
	f io.Writer
	h hash.Hash
	n int64
}

func (s *hashingWriter) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	return n, err
}

// FileChecksum is the size and sha256 (hex) of a file, to compare with a
// ParquetWriter's Checksum.
func FileChecksum(path string) (size int64, sha string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// Abort discards the temporary file. Safe after Commit (no-op).
func (w *ParquetWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.fw.Close()
	if w.obj != nil {
		w.obj.Abort()
		return
	}
	w.f.Close()
	os.Remove(w.tmp)
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// recordBytes is the size of a batch's Arrow buffers (an upper bound for
// slices, which share their parent's buffers).
func recordBytes(rec arrow.RecordBatch) int64 {
	var n int64
	for _, c := range rec.Columns() {
		n += dataBytes(c.Data())
	}
	return n
}

func dataBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}
