package nbio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ninbatch/ninbatch/internal/testutil"
	nbio "github.com/ninbatch/ninbatch/io"
)

// s3Env points the process's AWS SDK at s for the test's duration.
func s3Env(t *testing.T, s *testutil.S3) {
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// TestRemoteReadAt: reads of a stored object through the read-ahead
// blocks equal the bytes, over offsets and lengths that start, end and
// straddle block boundaries, at the end of the object, past it, and from
// goroutines at once.
func TestRemoteReadAt(t *testing.T) {
	s := testutil.NewS3(t, "ninbatch-readat")
	s3Env(t, s)
	const block = 2 << 20
	for _, size := range []int{0, 1, 777, block - 1, block, block + 1, 5*block + 12345} {
		data := make([]byte, size)
		r := rand.New(rand.NewPCG(uint64(size), 1))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		key := "obj-" + strings.Repeat("x", size%7)
		if _, err := s.Backend.PutObject("ninbatch-readat", key, map[string]string{}, bytes.NewReader(data), int64(size), nil); err != nil {
			t.Fatal(err)
		}
		f, err := nbio.OpenInput("s3://ninbatch-readat/" + key)
		if err != nil {
			t.Fatal(err)
		}
		if f.Size() != int64(size) {
			t.Fatalf("size %d, want %d", f.Size(), size)
		}
		check := func(off, n int) {
			buf := make([]byte, n)
			got, err := f.ReadAt(buf, int64(off))
			want := max(0, min(n, size-off))
			if got != want || !bytes.Equal(buf[:got], data[off:off+got]) {
				t.Errorf("size %d: ReadAt(%d, %d) = %d bytes (want %d), equal %v", size, off, n, got, want, bytes.Equal(buf[:got], data[off:off+got]))
			}
			if want < n && err != io.EOF {
				t.Errorf("size %d: ReadAt(%d, %d) short without io.EOF: %v", size, off, n, err)
			}
			if want == n && err != nil {
				t.Errorf("size %d: ReadAt(%d, %d): %v", size, off, n, err)
			}
		}
		for _, off := range []int{0, 1, block - 1, block, block + 1, size - 1, size, size + 5} {
			if off < 0 || off > size+5 {
				continue
			}
			for _, n := range []int{1, 10, block, block + 2, 3 * block} {
				if off < size {
					check(off, n)
				}
			}
		}
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(seed uint64) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, 2))
				for range 40 {
					if size == 0 {
						return
					}
					off := r.IntN(size)
					check(off, 1+r.IntN(3*block))
				}
			}(uint64(g))
		}
		wg.Wait()
		// sequential reads (Arrow streams) through Read and Seek
		f.Seek(0, io.SeekStart)
		all, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(all, data) {
			t.Errorf("size %d: ReadAll %d bytes, %v", size, len(all), err)
		}
		f.Close()
	}
}

// TestRemoteReadRetries: a range read cut off or answered 500 is retried;
// an object replaced while it is read fails the read instead of mixing
// two versions; a missing object is fs.ErrNotExist.
func TestRemoteReadRetries(t *testing.T) {
	s := testutil.NewS3(t, "ninbatch-retry")
	s3Env(t, s)
	data := bytes.Repeat([]byte("ninbatch"), 2<<20) // 16 MiB: eight blocks
	put := func(b []byte) {
		if _, err := s.Backend.PutObject("ninbatch-retry", "o", map[string]string{}, bytes.NewReader(b), int64(len(b)), nil); err != nil {
			t.Fatal(err)
		}
	}
	put(data)
	for _, how := range []string{"500", "close"} {
		f, err := nbio.OpenInput("s3://ninbatch-retry/o")
		if err != nil {
			t.Fatal(err)
		}
		s.Fail(12, how, testutil.RangeGets)
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s faults: %d bytes, %v", how, len(got), err)
		}
		if n := s.Pending(); n != 0 {
			t.Fatalf("%d %s faults never hit", n, how)
		}
	}

	f, err := nbio.OpenInput("s3://ninbatch-retry/o")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := f.ReadAt(buf, 0); err != nil { // blocks 0..3 are fetched
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	put(bytes.Repeat([]byte("replaced"), 2<<20))
	// block 7 was not read ahead: its GET meets the new ETag
	_, err = f.ReadAt(make([]byte, 1<<20), int64(len(data))-1<<20)
	f.Close()
	if err == nil || !strings.Contains(err.Error(), "changed while it was read") {
		t.Fatalf("object replaced while read: %v", err)
	}

	if _, err := nbio.OpenInput("s3://ninbatch-retry/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing object: %v", err)
	}
	if _, err := nbio.StatInput("s3://ninbatch-retry/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing object stat: %v", err)
	}
}

// TestS3Upload: uploads of every size around the part size arrive whole;
// a second conditional create of a key fails with ErrObjectExists and
// leaves the first; an aborted upload leaves neither object nor upload.
func TestS3Upload(t *testing.T) {
	s := testutil.NewS3(t, "ninbatch-up")
	s3Env(t, s)
	t.Setenv("NINBATCH_S3_PART_BYTES", "4096")
	ctx := context.Background()
	for _, size := range []int{0, 1, 4095, 4096, 4097, 3*4096 + 7} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		u, _ := nbio.ParseObjectURL(fmt.Sprintf("s3://ninbatch-up/o-%d", size))
		w, err := nbio.CreateObject(ctx, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < size; off += 1000 { // writes that straddle parts
			w.Write(data[off:min(size, off+1000)])
		}
		etag, err := w.Commit()
		if err != nil || etag == "" {
			t.Fatalf("size %d: commit %q %v", size, etag, err)
		}
		obj, err := s.Backend.GetObject("ninbatch-up", u.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(obj.Contents)
		if !bytes.Equal(got, data) {
			t.Fatalf("size %d: stored %d bytes, differ", size, len(got))
		}
		if st, err := nbio.StatInput(u.String()); err != nil || st.ETag != etag {
			t.Fatalf("size %d: stat ETag %q, commit gave %q (%v)", size, st.ETag, etag, err)
		}
		w2, _ := nbio.CreateObject(ctx, u, nil)
		w2.Write(bytes.Repeat([]byte("x"), size+5000))
		if _, err := w2.Commit(); !errors.Is(err, nbio.ErrObjectExists) {
			t.Fatalf("size %d: second create: %v", size, err)
		}
		obj, _ = s.Backend.GetObject("ninbatch-up", u.Key, nil)
		if got, _ := io.ReadAll(obj.Contents); !bytes.Equal(got, data) {
			t.Fatalf("size %d: the losing create changed the object", size)
		}
	}
	u, _ := nbio.ParseObjectURL("s3://ninbatch-up/aborted")
	w, _ := nbio.CreateObject(ctx, u, nil)
	w.Write(make([]byte, 5*4096))
	if n := s.Uploads(t, "ninbatch-up"); n != 1 {
		t.Fatalf("%d unfinished uploads while writing, want 1", n)
	}
	w.Abort()
	if _, err := nbio.StatInput(u.String()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("aborted object: %v", err)
	}
	if n := s.Uploads(t, "ninbatch-up"); n != 0 {
		t.Fatalf("%d unfinished uploads", n)
	}
}

// TestRemoteRowGroupsOnly: a unit of one row group of a 40 MB Parquet
// object fetches that row group's chunks, the footer and a bounded
// read-ahead, not the object.
func TestRemoteRowGroupsOnly(t *testing.T) {
	s := testutil.NewS3(t, "ninbatch-rg")
	s3Env(t, s)
	sc := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}, {Name: "blob", Type: arrow.BinaryTypes.Binary}}, nil)
	path := t.TempDir() + "/big.parquet"
	w, err := nbio.CreateParquet(path, sc, nbio.WriterOptions{Compression: "none", RowGroupRows: 100}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	payload := make([]byte, 20000)
	for g := 0; g < 20; g++ {
		for i := 0; i < 100; i++ {
			for j := range payload {
				payload[j] = byte(r.Uint32())
			}
			b.Field(0).(*array.Int64Builder).Append(int64(g*100 + i))
			b.Field(1).(*array.BinaryBuilder).Append(payload)
		}
		rec := b.NewRecordBatch()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	b.Release()
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if _, err := s.Backend.PutObject("ninbatch-rg", "big.parquet", map[string]string{}, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	before := s.Bytes.Load()
	src, err := nbio.OpenRowGroups("s3://ninbatch-rg/big.parquet", nil, 64, []int{13}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	if err := nbio.EachBatch(src, func(rec arrow.RecordBatch) error {
		ids = append(ids, rec.Column(0).(*array.Int64).Int64Values()...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	src.Close()
	fetched := s.Bytes.Load() - before
	t.Logf("object %d bytes, one row group ~%d; fetched %d", len(data), len(data)/20, fetched)
	if len(ids) != 100 || ids[0] != 1300 || ids[99] != 1399 {
		t.Fatalf("read ids %v", ids)
	}
	if bound := int64(len(data)/20 + 2*(2<<20) + 1<<20); fetched > bound { // the chunks, two partly used blocks, probes
		t.Fatalf("fetched %d bytes for one row group of %d, more than %d", fetched, len(data)/20, bound)
	}
}
