package nbio

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Order says how a labelled set's rows are visited in one pass.
type Order struct {
	Shuffle bool
	Seed    uint64 // with Epoch, the whole order: the same values give the same order
	Epoch   int
	// Buffer is the shuffle buffer in images (0 = DefaultShuffleRows);
	// rows further apart in the files than this rarely share a batch.
	Buffer int
}

// DefaultShuffleRows is the shuffle buffer when Order.Buffer is 0, capped
// at MaxShuffleBytes of pixels.
const (
	DefaultShuffleRows = 8192
	MaxShuffleBytes    = 64 << 20
	streamBlockRows    = 256 // rows read and decoded together
	streamInterleave   = 2   // chunks read at once, so neighbouring row groups mix; each holds ~3 MB of page buffers
)

// LabeledStream is a labelled image set read from its files on every pass,
// a block at a time: memory is the shuffle buffer and a few blocks, not
// the set. Chunks are Parquet row groups, or whole Arrow files.
type LabeledStream struct {
	N           int      // rows visited by a pass (after Limit)
	Classes     []string // from the first file's Hugging Face metadata, if any
	Files       []string
	Fingerprint string // sha256 over the input files' bytes, in order (the same as Labeled's)
	Skipped     int    // bad rows left out by the last pass (LabelOptions.SkipBad)

	opt    LabelOptions
	prep   *Preprocess
	mem    memory.Allocator
	cols   []fileCols
	chunks []chunk
}

type fileCols struct {
	image ImageColumn
	label string
}

// chunk is rows [first, first+rows) of one file, in one row group (or the
// whole Arrow file when group is -1).
type chunk struct {
	file, group int
	first, rows int64
}

// OpenLabeledStream checks every file's columns, counts its rows (from the
// Parquet footer; an Arrow file is read once) and fingerprints the bytes.
// Nothing is decoded: a bad image or label is reported by the pass that
// meets it, naming file, row and column.
func OpenLabeledStream(paths []string, opt LabelOptions, p *Preprocess, mem memory.Allocator) (*LabeledStream, error) {
	if len(paths) == 0 {
		return nil, errors.New("no labelled input files")
	}
	s := &LabeledStream{Files: paths, opt: opt, prep: p, mem: mem}
	h := sha256.New()
	for fi, path := range paths {
		if err := hashFile(h, path); err != nil {
			return nil, err
		}
		cols, names, err := labeledColumns(path, opt, mem)
		if err != nil {
			return nil, err
		}
		if s.Classes == nil {
			s.Classes = names
		}
		s.cols = append(s.cols, cols)
		groups, err := RowGroupRows(path)
		if err != nil {
			return nil, err
		}
		whole := groups == nil // an Arrow file is one chunk
		if whole {
			n, err := countRows(path, cols.counted(), mem)
			if err != nil {
				return nil, err
			}
			groups = []int64{n}
		}
		var first int64
		for g, n := range groups {
			if whole {
				g = -1
			}
			if n > 0 {
				s.chunks = append(s.chunks, chunk{file: fi, group: g, first: first, rows: n})
			}
			first += n
			s.N += int(n)
		}
	}
	s.Fingerprint = hex.EncodeToString(h.Sum(nil))
	return s, nil
}

// labeledColumns finds a file's image and label columns and its class names.
func labeledColumns(path string, opt LabelOptions, mem memory.Allocator) (fileCols, []string, error) {
	probe, err := Open(path, nil, 1, mem)
	if err != nil {
		return fileCols{}, nil, err
	}
	defer probe.Close()
	ic, err := FindImageColumn(probe.Schema(), opt.ImageCol)
	label := opt.LabelCol
	if err == nil && !opt.Unlabeled {
		label, err = FindLabelColumn(probe.Schema(), label)
	}
	if opt.Unlabeled {
		label = ""
	}
	if err != nil {
		return fileCols{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	return fileCols{image: ic, label: label}, ClassNames(probe.Metadata(), label), nil
}

// read is the columns a pass reads: image and label, or the image alone.
func (c fileCols) read() []string {
	if c.label == "" {
		return []string{c.image.Name}
	}
	return []string{c.image.Name, c.label}
}

// counted is the column whose length is the row count.
func (c fileCols) counted() string { return c.read()[len(c.read())-1] }

// countRows counts an Arrow input's rows by reading one column.
func countRows(path, label string, mem memory.Allocator) (int64, error) {
	src, err := Open(path, []string{label}, 1<<16, mem)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	var n int64
	err = EachBatch(src, func(rec arrow.RecordBatch) error { n += rec.NumRows(); return nil })
	return n, err
}

// Rows is the number of rows a pass visits.
func (s *LabeledStream) Rows() int { return s.N }

// Digest identifies the set's content (and any Limit).
func (s *LabeledStream) Digest() string { return s.Fingerprint }

// Limit keeps the first n rows in file order, without reading any; the
// fingerprint records the cut as Labeled.Truncate does.
func (s *LabeledStream) Limit(n int) {
	if n < 0 || n >= s.N {
		return
	}
	left := int64(n)
	for i, c := range s.chunks {
		if c.rows >= left {
			s.chunks[i].rows = left
			s.chunks = s.chunks[:i+1]
			break
		}
		left -= c.rows
	}
	if n == 0 {
		s.chunks = nil
	}
	s.N = n
	h := sha256.Sum256([]byte(fmt.Sprintf("%s first %d", s.Fingerprint, n)))
	s.Fingerprint = hex.EncodeToString(h[:])
}

// block is decoded rows of one chunk, in file order.
type block struct {
	pix    []uint8
	labels []int32
	n      int
}

// Each calls fn with batches of up to batch images (HWC uint8 at the
// model size, pix[:n*Len]) and their labels, in ord's order; the slices
// are reused after fn returns. Reading and decoding run ahead in the
// background. A shuffled pass visits the chunks in an order drawn from
// (Seed, Epoch), reads streamInterleave of them at once and draws each
// image from a buffer of ord.Buffer; a buffer as large as the set gives a
// uniform permutation.
func (s *LabeledStream) Each(parent context.Context, ord Order, batch int, fn func(pix []uint8, labels []int32, n int) error) error {
	if batch < 1 {
		return fmt.Errorf("batch %d must be positive", batch)
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	blocks := make(chan block, 4)
	free := make(chan block, 6) // decoded blocks come back for reuse
	var readErr error           // written before blocks is closed
	var wg sync.WaitGroup
	wg.Add(1)
	s.Skipped = 0
	go func() {
		defer wg.Done()
		defer close(blocks)
		readErr = s.produce(ctx, ord, blocks, free)
	}()
	err := s.consume(ord, batch, blocks, free, func() bool { return readErr != nil }, fn)
	cancel()
	for range blocks { // let the reader see the cancellation and stop
	}
	wg.Wait()
	if readErr != nil && !errors.Is(readErr, context.Canceled) {
		return readErr
	}
	if err != nil {
		return err
	}
	return parent.Err()
}

// cursor reads one chunk.
type cursor struct {
	c    chunk
	src  Source
	next int64 // rows of the chunk already read
}

// produce reads and decodes the chunks in ord's order into blocks.
func (s *LabeledStream) produce(ctx context.Context, ord Order, out chan<- block, free chan block) error {
	order := make([]int, len(s.chunks))
	for i := range order {
		order[i] = i
	}
	var rng *rand.Rand
	width := 1
	if ord.Shuffle {
		rng = rand.New(rand.NewPCG(ord.Seed, 0x63686e6b^uint64(ord.Epoch))) // "chnk"
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		width = streamInterleave
	}
	var open []*cursor
	defer func() {
		for _, c := range open {
			c.src.Close()
		}
	}()
	sz := s.prep.Len()
	for next := 0; next < len(order) || len(open) > 0; {
		for len(open) < width && next < len(order) {
			c, err := s.openChunk(s.chunks[order[next]])
			if err != nil {
				return err
			}
			open = append(open, c)
			next++
		}
		k := 0
		if rng != nil && len(open) > 1 {
			k = rng.IntN(len(open))
		}
		cur := open[k]
		var b block
		select {
		case b = <-free:
		default:
			b = block{pix: make([]uint8, streamBlockRows*sz), labels: make([]int32, streamBlockRows)}
		}
		done, err := s.readBlock(cur, &b)
		if err != nil {
			return err
		}
		if done {
			cur.src.Close()
			open = append(open[:k], open[k+1:]...)
		}
		if b.n == 0 {
			select {
			case free <- b:
			default:
			}
			continue
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (s *LabeledStream) openChunk(c chunk) (*cursor, error) {
	path, cols := s.Files[c.file], s.cols[c.file]
	var groups []int
	if c.group >= 0 {
		groups = []int{c.group}
	}
	src, err := OpenRowGroups(path, cols.read(), streamBlockRows, groups, s.mem)
	if err != nil {
		return nil, err
	}
	if got := src.Schema(); got.NumFields() != len(cols.read()) {
		src.Close()
		return nil, fmt.Errorf("%s: want columns %v, found %d columns", path, cols.read(), got.NumFields())
	}
	return &cursor{c: c, src: src}, nil
}

// readBlock decodes the cursor's next record batch into b; done when the
// chunk (or its Limit) is used up.
func (s *LabeledStream) readBlock(cur *cursor, b *block) (done bool, err error) {
	b.n = 0
	rec, err := cur.src.Next()
	if err == io.EOF {
		if cur.next < cur.c.rows {
			return true, fmt.Errorf("%s: ended after %d of the %d rows its footer promised", cur.src.Path(), cur.c.first+cur.next, cur.c.first+cur.c.rows)
		}
		return true, nil
	}
	if err != nil {
		return true, err
	}
	defer rec.Release()
	n := min(rec.NumRows(), cur.c.rows-cur.next)
	if n < rec.NumRows() {
		r := rec.NewSlice(0, n)
		defer r.Release()
		rec = r
	}
	cols := s.cols[cur.c.file]
	kept, skipped, err := decodeLabeled(rec, cols, s.opt, s.prep, cur.src.Path(), int(cur.c.first+cur.next), b.pix, b.labels)
	if err != nil {
		return true, err
	}
	s.Skipped += skipped
	b.n = kept
	cur.next += n
	return cur.next >= cur.c.rows, nil
}

// consume turns blocks into batches, through the shuffle buffer when ord
// shuffles.
// A failed read ends the pass without the buffered rest.
func (s *LabeledStream) consume(ord Order, batch int, blocks <-chan block, free chan<- block, failed func() bool, fn func([]uint8, []int32, int) error) error {
	sz := s.prep.Len()
	pix := make([]uint8, batch*sz)
	labels := make([]int32, batch)
	n := 0
	emit := func(p []uint8, l int32) error {
		copy(pix[n*sz:(n+1)*sz], p)
		labels[n] = l
		if n++; n == batch {
			n = 0
			return fn(pix, labels, batch)
		}
		return nil
	}
	recycle := func(b block) {
		select {
		case free <- b:
		default:
		}
	}
	if !ord.Shuffle {
		for b := range blocks {
			for j := 0; j < b.n; j++ {
				if err := emit(b.pix[j*sz:(j+1)*sz], b.labels[j]); err != nil {
					return err
				}
			}
			recycle(b)
		}
	} else {
		size := ShuffleRows(ord.Buffer, sz, s.N)
		buf := make([]uint8, size*sz)
		bl := make([]int32, size)
		have := 0
		rng := rand.New(rand.NewPCG(ord.Seed, 0x62756666^uint64(ord.Epoch))) // "buff"
		// images come from streamInterleave blocks at once, picked at random,
		// so even a small buffer mixes the chunks the blocks came from
		var pending []block
		var used []int
		open := true
		for {
			for open && len(pending) < streamInterleave {
				b, ok := <-blocks
				if !ok {
					open = false
					break
				}
				pending, used = append(pending, b), append(used, 0)
			}
			if len(pending) == 0 {
				break
			}
			k := rng.IntN(len(pending))
			b := pending[k]
			p, l := b.pix[used[k]*sz:(used[k]+1)*sz], b.labels[used[k]]
			if have < size {
				copy(buf[have*sz:], p)
				bl[have] = l
				have++
			} else {
				r := rng.IntN(size) // emit a random buffered image, keep the new one in its place
				if err := emit(buf[r*sz:(r+1)*sz], bl[r]); err != nil {
					return err
				}
				copy(buf[r*sz:(r+1)*sz], p)
				bl[r] = l
			}
			if used[k]++; used[k] == b.n {
				recycle(b)
				pending, used = slices.Delete(pending, k, k+1), slices.Delete(used, k, k+1)
			}
		}
		if failed() {
			return nil
		}
		for ; have > 0; have-- { // drain in random order
			k := rng.IntN(have)
			if err := emit(buf[k*sz:(k+1)*sz], bl[k]); err != nil {
				return err
			}
			last := have - 1
			copy(buf[k*sz:(k+1)*sz], buf[last*sz:(last+1)*sz])
			bl[k] = bl[last]
		}
	}
	if n > 0 && !failed() {
		return fn(pix, labels, n)
	}
	return nil
}

// ShuffleRows is the shuffle buffer used for a request of rows (0 =
// DefaultShuffleRows) of sz-byte images from a set of n: at most
// MaxShuffleBytes, at least one image, never more than the set.
func ShuffleRows(rows, sz, n int) int {
	if rows <= 0 {
		rows = DefaultShuffleRows
	}
	return min(rows, max(1, MaxShuffleBytes/max(1, sz)), max(1, n))
}

// decodeLabeled decodes a record of (image, label) columns whose first
// row is row0 of path into pix and labels, compacting the good rows to the
// front; a bad row is an error naming file, row and column, or with
// SkipBad is left out, warned about and counted.
func decodeLabeled(rec arrow.RecordBatch, cols fileCols, opt LabelOptions, p *Preprocess, path string, row0 int, pix []uint8, labels []int32) (kept, skipped int, err error) {
	n := int(rec.NumRows())
	sz := p.Len()
	ir, err := NewImageReader(rec.Column(0), cols.image.Kind)
	if err != nil {
		return 0, 0, fmt.Errorf("%s column %s: %w", path, cols.image.Name, err)
	}
	errs := make([]error, n)
	if cols.label == "" {
		clear(labels[:n])
	} else {
		lab, err := labelsOf(rec.Column(1), opt)
		if err != nil {
			return 0, 0, fmt.Errorf("%s column %s: %w", path, cols.label, err)
		}
		for i := 0; i < n; i++ {
			if labels[i], err = lab(i); err != nil {
				errs[i] = fmt.Errorf("%s row %d column %s: %w", path, row0+i, cols.label, err)
			}
		}
	}
	var wg sync.WaitGroup
	w := min(max(1, opt.Workers), n)
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for i := k; i < n; i += w {
				if errs[i] != nil {
					continue
				}
				if e := p.Pixels(pix[i*sz:(i+1)*sz], ir.At(i), Shape{}); e != nil {
					errs[i] = fmt.Errorf("%s row %d column %s: %w", path, row0+i, cols.image.Name, e)
				}
			}
		}(k)
	}
	wg.Wait()
	for i, e := range errs {
		if e != nil {
			if !opt.SkipBad {
				return 0, 0, e
			}
			skipped++
			if opt.Warn != nil {
				opt.Warn(e.Error() + ": left out")
			}
			continue
		}
		if kept != i {
			copy(pix[kept*sz:(kept+1)*sz], pix[i*sz:(i+1)*sz])
			labels[kept] = labels[i]
		}
		kept++
	}
	return kept, skipped, nil
}
