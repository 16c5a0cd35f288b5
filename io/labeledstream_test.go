package nbio

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// streamFixture writes rows 0..n-1 as 2×3 gray PNGs whose first two pixels
// spell the row's global id, label id%5, in Parquet row groups of rg rows,
// and returns its path; badRow ≥ 0 gets undecodable image bytes.
func streamFixture(t *testing.T, dir, name string, first, n, rg, badRow int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	w, err := CreateLabeledImages(path, []string{"a", "b", "c", "d", "e"}, WriterOptions{RowGroupRows: rg}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		id := first + i
		b, _ := EncodePNG([]uint8{uint8(id), uint8(id >> 8), 7, 7, 7, 7}, 2, 3, 1)
		if i == badRow {
			b = []byte("not an image")
		}
		if err := w.Append(b, "x.png", int64(id%5)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return path
}

// arrowFixture writes rows first..first+n-1 as an Arrow IPC file of raw
// uint8 tensors in record batches of rb rows.
func arrowFixture(t *testing.T, dir, name string, first, n, rb int) string {
	t.Helper()
	sc := arrow.NewSchema([]arrow.Field{{Name: "pixels", Type: arrow.FixedSizeListOf(6, arrow.PrimitiveTypes.Uint8)},
		{Name: "label", Type: arrow.PrimitiveTypes.Int64}}, nil)
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ipc.NewFileWriter(f, ipc.WithSchema(sc))
	if err != nil {
		t.Fatal(err)
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	for i := 0; i < n; i++ {
		id := first + i
		lb := b.Field(0).(*array.FixedSizeListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Uint8Builder).AppendValues([]uint8{uint8(id), uint8(id >> 8), 7, 7, 7, 7}, nil)
		b.Field(1).(*array.Int64Builder).Append(int64(id % 5))
		if (i+1)%rb == 0 || i == n-1 {
			rec := b.NewRecordBatch()
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
			rec.Release()
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

var streamPrep = &Preprocess{H: 2, W: 3, C: 1, Resize: "none", Scale: 1}

// pass collects the ids and labels one pass visits.
func pass(t *testing.T, s interface {
	Each(context.Context, Order, int, func([]uint8, []int32, int) error) error
}, ord Order, batch int) (ids []int, labels []int32) {
	t.Helper()
	err := s.Each(context.Background(), ord, batch, func(pix []uint8, l []int32, n int) error {
		if n < 1 || n > batch {
			t.Fatalf("batch of %d (max %d)", n, batch)
		}
		for j := 0; j < n; j++ {
			ids = append(ids, int(pix[j*6])|int(pix[j*6+1])<<8)
			labels = append(labels, l[j])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids, labels
}

func seq(n int) []int {
	v := make([]int, n)
	for i := range v {
		v[i] = i
	}
	return v
}

// A stream in file order is exactly the set loaded into memory, over row
// groups, files of both formats and any batch size; labels follow images.
func TestLabeledStreamMatchesLoaded(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	files := []string{
		streamFixture(t, dir, "a.parquet", 0, 700, 300, -1), // row groups 300, 300, 100
		arrowFixture(t, dir, "b.arrow", 700, 301, 128),
		streamFixture(t, dir, "c.parquet", 1001, 1, 1, -1),
	}
	opt := LabelOptions{Classes: 5, Workers: 3}
	s, err := OpenLabeledStream(files, opt, streamPrep, mem)
	if err != nil {
		t.Fatal(err)
	}
	l, err := LoadLabeledWith(files, opt, streamPrep, mem)
	if err != nil {
		t.Fatal(err)
	}
	if s.N != 1002 || l.N != 1002 || s.Fingerprint != l.Fingerprint || !slices.Equal(s.Classes, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("stream %d rows %s, loaded %d rows %s, classes %v", s.N, s.Fingerprint, l.N, l.Fingerprint, s.Classes)
	}
	for _, batch := range []int{1, 7, 256, 2000} {
		ids, labels := pass(t, s, Order{}, batch)
		lids, llabels := pass(t, l, Order{}, batch)
		if !slices.Equal(ids, seq(1002)) || !slices.Equal(lids, ids) || !slices.Equal(labels, llabels) {
			t.Fatalf("batch %d: stream and loaded orders differ", batch)
		}
		for k, id := range ids {
			if labels[k] != int32(id%5) {
				t.Fatalf("batch %d: image %d has label %d", batch, id, labels[k])
			}
		}
	}
}

// A shuffled pass visits every row once with its label; the order is a
// function of (seed, epoch) alone, mixes row groups, and a buffer as large
// as the set mixes the whole set.
func TestLabeledStreamShuffle(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	files := []string{streamFixture(t, dir, "a.parquet", 0, 2000, 250, -1), arrowFixture(t, dir, "b.arrow", 2000, 500, 100)}
	s, err := OpenLabeledStream(files, LabelOptions{Classes: 5, Workers: 2}, streamPrep, mem)
	if err != nil {
		t.Fatal(err)
	}
	for _, buf := range []int{1, 64, 1000, 5000} {
		ord := Order{Shuffle: true, Seed: 9, Epoch: 3, Buffer: buf}
		ids, labels := pass(t, s, ord, 32)
		again, _ := pass(t, s, ord, 32)
		ord.Epoch = 4
		other, _ := pass(t, s, ord, 32)
		sorted := slices.Clone(ids)
		slices.Sort(sorted)
		if !slices.Equal(sorted, seq(2500)) {
			t.Fatalf("buffer %d: not a permutation of the rows", buf)
		}
		for k, id := range ids {
			if labels[k] != int32(id%5) {
				t.Fatalf("buffer %d: image %d has label %d", buf, id, labels[k])
			}
		}
		if !slices.Equal(ids, again) || slices.Equal(ids, other) || slices.Equal(ids, seq(2500)) {
			t.Fatalf("buffer %d: same (seed, epoch) must repeat, another epoch must differ", buf)
		}
		// the first batch draws from more than one row group (chunks interleave)
		groups := map[int]bool{}
		for _, id := range ids[:32] {
			groups[min(id, 2000)/250+id/2000] = true
		}
		if len(groups) < 2 {
			t.Errorf("buffer %d: the first batch comes from one chunk: %v", buf, ids[:32])
		}
	}
	// with the whole set buffered, the first batch reaches across the set
	ids, _ := pass(t, s, Order{Shuffle: true, Seed: 1, Buffer: 5000}, 100)
	if lo, hi := slices.Min(ids[:100]), slices.Max(ids[:100]); lo > 250 || hi < 2250 {
		t.Errorf("a full buffer's first batch spans only ids %d..%d", lo, hi)
	}
}

// Limit keeps the first rows in file order, cutting inside a row group,
// and fingerprints like Labeled.Truncate.
func TestLabeledStreamLimit(t *testing.T) {
	dir := t.TempDir()
	files := []string{streamFixture(t, dir, "a.parquet", 0, 100, 30, -1), streamFixture(t, dir, "b.parquet", 100, 100, 30, -1)}
	opt := LabelOptions{Classes: 5}
	for _, n := range []int{1, 29, 30, 45, 130, 199} {
		s, err := OpenLabeledStream(files, opt, streamPrep, memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		l, err := LoadLabeledWith(files, opt, streamPrep, memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		s.Limit(n)
		l.Truncate(n)
		ids, _ := pass(t, s, Order{}, 16)
		shuffled, _ := pass(t, s, Order{Shuffle: true, Seed: 2}, 16)
		slices.Sort(shuffled)
		if s.Rows() != n || !slices.Equal(ids, seq(n)) || !slices.Equal(shuffled, seq(n)) || s.Digest() != l.Digest() {
			t.Fatalf("limit %d: %d rows, ids %v, fingerprint %s vs %s", n, s.Rows(), ids, s.Digest(), l.Digest())
		}
	}
}

// A bad image in a later row group is an error naming the file, its row
// in the file and the column; with SkipBad it is left out and counted. A
// pass stopped by its callback or its context releases everything.
func TestLabeledStreamErrors(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	path := streamFixture(t, dir, "bad.parquet", 0, 100, 30, 67)
	s, err := OpenLabeledStream([]string{path}, LabelOptions{Classes: 5}, streamPrep, mem)
	if err != nil {
		t.Fatal(err)
	}
	for _, ord := range []Order{{}, {Shuffle: true, Seed: 3, Buffer: 10}} {
		err := s.Each(context.Background(), ord, 8, func([]uint8, []int32, int) error { return nil })
		if err == nil || !strings.Contains(err.Error(), path+" row 67 column image") {
			t.Fatalf("%+v: error %v", ord, err)
		}
	}
	var warned []string
	skip, err := OpenLabeledStream([]string{path}, LabelOptions{Classes: 5, SkipBad: true, Warn: func(m string) { warned = append(warned, m) }}, streamPrep, mem)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := pass(t, skip, Order{}, 8)
	if len(ids) != 99 || slices.Contains(ids, 67) || skip.Skipped != 1 || len(warned) != 1 {
		t.Fatalf("skip: %d rows, skipped %d, warnings %v", len(ids), skip.Skipped, warned)
	}
	// a label outside the model's classes
	few, _ := OpenLabeledStream([]string{path}, LabelOptions{Classes: 3}, streamPrep, mem)
	if err := few.Each(context.Background(), Order{}, 8, func([]uint8, []int32, int) error { return nil }); err == nil ||
		!strings.Contains(err.Error(), path+" row 3 column label: label 3 is not one of the model's 3 classes") {
		t.Fatalf("label error: %v", err)
	}
	good := streamFixture(t, dir, "good.parquet", 0, 3000, 500, -1)
	g, _ := OpenLabeledStream([]string{good}, LabelOptions{Classes: 5}, streamPrep, mem)
	stop := errors.New("stop")
	calls := 0
	if err := g.Each(context.Background(), Order{Shuffle: true, Buffer: 100}, 10, func([]uint8, []int32, int) error {
		if calls++; calls == 3 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("stopped pass: %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = g.Each(ctx, Order{}, 10, func([]uint8, []int32, int) error {
		if calls++; calls == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pass: %v", err)
	}
	if _, err := OpenLabeledStream(nil, LabelOptions{Classes: 5}, streamPrep, mem); err == nil {
		t.Fatal("no files accepted")
	}
	if _, err := OpenLabeledStream([]string{filepath.Join(dir, "none.parquet")}, LabelOptions{Classes: 5}, streamPrep, mem); err == nil {
		t.Fatal("a missing file accepted")
	}
}

// The shuffle buffer is bounded in bytes and by the set.
func TestShuffleRows(t *testing.T) {
	for _, c := range []struct{ rows, sz, n, want int }{
		{0, 784, 60000, DefaultShuffleRows},
		{0, 784, 2000, 2000},
		{100, 784, 60000, 100},
		{0, 224 * 224 * 3, 1 << 20, MaxShuffleBytes / (224 * 224 * 3)},
		{5, 1 << 30, 10, 1},
		{0, 10, 0, 1},
	} {
		if got := ShuffleRows(c.rows, c.sz, c.n); got != c.want {
			t.Errorf("ShuffleRows(%d, %d, %d) = %d, want %d", c.rows, c.sz, c.n, got, c.want)
		}
	}
}
