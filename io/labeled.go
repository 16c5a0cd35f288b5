package nbio

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Labeled is a labelled image set held in memory at model size, for
// training and evaluation (uint8 pixels: 47 MB for MNIST's 60,000 images).
type Labeled struct {
	N, H, W, C  int
	Pixels      []uint8 // (N, H, W, C)
	Labels      []int32 // (N)
	Classes     []string
	Files       []string
	Fingerprint string // sha256 over the input files' bytes, in order
	Skipped     int    // bad rows left out (LabelOptions.SkipBad)
}

// LabelReader reads integer labels from a column of any integer type.
func LabelReader(col arrow.Array) (func(i int) (int64, bool), error) {
	switch a := col.(type) {
	case *array.Int8:
		return func(i int) (int64, bool) { return int64(a.Value(i)), a.IsValid(i) }, nil
	case *array.Int16:
		return func(i int) (int64, bool) { return int64(a.Value(i)), a.IsValid(i) }, nil
	case *array.Int32:
		return func(i int) (int64, bool) { return int64(a.Value(i)), a.IsValid(i) }, nil
	case *array.Int64:
		return func(i int) (int64, bool) { return a.Value(i), a.IsValid(i) }, nil
	case *array.Uint8:
		return func(i int) (int64, bool) { return int64(a.Value(i)), a.IsValid(i) }, nil
	case *array.Uint16:
		return func(i int) (int64, bool) { return int64(a.Value(i)), a.IsValid(i) }, nil
	case *array.Uint32:
		return func(i int) (int64, bool) { return int64(a.Value(i)), a.IsValid(i) }, nil
	}
	return nil, fmt.Errorf("label column has type %s: want an integer type", col.DataType())
}

// FindLabelColumn returns the named label column, or "label"/"labels".
func FindLabelColumn(sc *arrow.Schema, name string) (string, error) {
	if name != "" {
		if len(sc.FieldIndices(name)) == 0 {
			return "", fmt.Errorf("no label column %q", name)
		}
		return name, nil
	}
	for _, n := range []string{"label", "labels"} {
		if len(sc.FieldIndices(n)) > 0 {
			return n, nil
		}
	}
	return "", errors.New("no label column (want \"label\" or --label-col)")
}

// LabelOptions say how LoadLabeledWith reads a labelled set.
type LabelOptions struct {
	ImageCol, LabelCol string   // "" = auto-detect
	Classes            int      // labels must be in 0..Classes-1
	ClassNames         []string // string labels are mapped through these (the model's class names)
	Workers            int      // decoding goroutines
	SkipBad            bool     // leave out bad rows (counted in Skipped) instead of failing
	Warn               func(string)
	// Unlabeled reads the images only (OpenLabeledStream): no label column
	// is looked for and every label is 0 (int8 calibration).
	Unlabeled bool
}

// LoadLabeled reads every row of the files into memory, decoding and
// fitting images to the model size with up to workers goroutines. Any bad
// row is an error naming file, row and column: a training set is not
// silently thinned. classes bounds the label range.
func LoadLabeled(paths []string, imageCol, labelCol string, p *Preprocess, classes, workers int, mem memory.Allocator) (*Labeled, error) {
	return LoadLabeledWith(paths, LabelOptions{ImageCol: imageCol, LabelCol: labelCol, Classes: classes, Workers: workers}, p, mem)
}

// LoadLabeledWith is LoadLabeled with string labels and skipping.
func LoadLabeledWith(paths []string, opt LabelOptions, p *Preprocess, mem memory.Allocator) (*Labeled, error) {
	out := &Labeled{H: p.H, W: p.W, C: p.C, Files: paths}
	h := sha256.New()
	for _, path := range paths {
		if err := hashFile(h, path); err != nil {
			return nil, err
		}
		if err := out.load(path, opt, p, mem); err != nil {
			return nil, err
		}
	}
	out.Fingerprint = hex.EncodeToString(h.Sum(nil))
	return out, nil
}

// labelsOf reads a label column: integers as they are, strings through
// the class names; each row's label or why it has none.
func labelsOf(col arrow.Array, opt LabelOptions) (func(i int) (int32, error), error) {
	check := func(v int64) (int32, error) {
		if v < 0 || v >= int64(opt.Classes) {
			return 0, fmt.Errorf("label %d is not one of the model's %d classes (0..%d)", v, opt.Classes, opt.Classes-1)
		}
		return int32(v), nil
	}
	var str func(i int) string
	switch a := col.(type) {
	case *array.String:
		str = a.Value
	case *array.LargeString:
		str = a.Value
	default:
		lr, err := LabelReader(col)
		if err != nil {
			return nil, fmt.Errorf("%w or a string type (class names)", err)
		}
		return func(i int) (int32, error) {
			v, ok := lr(i)
			if !ok {
				return 0, errors.New("the label is null")
			}
			return check(v)
		}, nil
	}
	if len(opt.ClassNames) == 0 {
		return nil, errors.New("string labels need the model's class names, and the model has none")
	}
	byName := make(map[string]int32, len(opt.ClassNames))
	for k, n := range opt.ClassNames {
		byName[n] = int32(k)
	}
	return func(i int) (int32, error) {
		if col.IsNull(i) {
			return 0, errors.New("the label is null")
		}
		k, ok := byName[str(i)]
		if !ok {
			return 0, fmt.Errorf("label %q is not one of the model's class names", str(i))
		}
		return k, nil
	}, nil
}

func hashFile(h io.Writer, path string) error {
	f, err := OpenInput(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}

func (l *Labeled) load(path string, opt LabelOptions, p *Preprocess, mem memory.Allocator) error {
	cols, names, err := labeledColumns(path, opt, mem)
	if err != nil {
		return err
	}
	if names != nil && l.Classes == nil {
		l.Classes = names
	}
	src, err := Open(path, []string{cols.image.Name, cols.label}, 1024, mem)
	if err != nil {
		return err
	}
	defer src.Close()
	row := 0
	sz := p.Len()
	return EachBatch(src, func(rec arrow.RecordBatch) error {
		n := int(rec.NumRows())
		base := l.N
		l.Pixels = append(l.Pixels, make([]uint8, n*sz)...)
		l.Labels = append(l.Labels, make([]int32, n)...)
		kept, skipped, err := decodeLabeled(rec, cols, opt, p, path, row, l.Pixels[base*sz:], l.Labels[base:])
		if err != nil {
			return err
		}
		l.Skipped += skipped
		l.N += kept
		l.Pixels, l.Labels = l.Pixels[:l.N*sz], l.Labels[:l.N]
		row += n
		return nil
	})
}

// Truncate keeps the first n images (the fingerprint records the cut).
func (l *Labeled) Truncate(n int) {
	if n >= l.N || n < 0 {
		return
	}
	sz := l.H * l.W * l.C
	l.N, l.Pixels, l.Labels = n, l.Pixels[:n*sz], l.Labels[:n]
	h := sha256.Sum256([]byte(fmt.Sprintf("%s first %d", l.Fingerprint, n)))
	l.Fingerprint = hex.EncodeToString(h[:])
}

// Rows is the number of images.
func (l *Labeled) Rows() int { return l.N }

// Digest identifies the set's content (and any Truncate).
func (l *Labeled) Digest() string { return l.Fingerprint }

// Each is LabeledStream.Each over the images in memory; a shuffled pass
// is a uniform permutation drawn from (Seed, Epoch).
func (l *Labeled) Each(ctx context.Context, ord Order, batch int, fn func(pix []uint8, labels []int32, n int) error) error {
	if batch < 1 {
		return fmt.Errorf("batch %d must be positive", batch)
	}
	sz := l.H * l.W * l.C
	pix := make([]uint8, batch*sz)
	labels := make([]int32, batch)
	var perm []int
	if ord.Shuffle {
		perm = rand.New(rand.NewPCG(ord.Seed, 0x73687566^uint64(ord.Epoch))).Perm(l.N) // "shuf"
	}
	for b0 := 0; b0 < l.N; b0 += batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(batch, l.N-b0)
		for j := 0; j < n; j++ {
			i := b0 + j
			if perm != nil {
				i = perm[i]
			}
			copy(pix[j*sz:(j+1)*sz], l.Pixels[i*sz:(i+1)*sz])
			labels[j] = l.Labels[i]
		}
		if err := fn(pix, labels, n); err != nil {
			return err
		}
	}
	return nil
}

// LabelsOf reads a label column as training and evaluation do: integers in
// 0..classes-1, or strings among names; each row's label or why it has none.
func LabelsOf(col arrow.Array, classes int, names []string) (func(i int) (int32, error), error) {
	return labelsOf(col, LabelOptions{Classes: classes, ClassNames: names})
}
