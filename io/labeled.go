package nbio

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

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
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}

func (l *Labeled) load(path string, opt LabelOptions, p *Preprocess, mem memory.Allocator) error {
	probe, err := Open(path, nil, 1, mem)
	if err != nil {
		return err
	}
	ic, err := FindImageColumn(probe.Schema(), opt.ImageCol)
	labelCol := opt.LabelCol
	if err == nil {
		labelCol, err = FindLabelColumn(probe.Schema(), labelCol)
	}
	meta := probe.Metadata()
	probe.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if names := ClassNames(meta, labelCol); names != nil && l.Classes == nil {
		l.Classes = names
	}
	src, err := Open(path, []string{ic.Name, labelCol}, 1024, mem)
	if err != nil {
		return err
	}
	defer src.Close()
	row := 0
	sz := p.Len()
	return EachBatch(src, func(rec arrow.RecordBatch) error {
		n := int(rec.NumRows())
		ir, err := NewImageReader(rec.Column(0), ic.Kind)
		if err != nil {
			return fmt.Errorf("%s column %s: %w", path, ic.Name, err)
		}
		lab, err := labelsOf(rec.Column(1), opt)
		if err != nil {
			return fmt.Errorf("%s column %s: %w", path, labelCol, err)
		}
		base := l.N
		l.Pixels = append(l.Pixels, make([]uint8, n*sz)...)
		errs := make([]error, n)
		labels := make([]int32, n)
		for i := range labels {
			if labels[i], err = lab(i); err != nil {
				errs[i] = fmt.Errorf("%s row %d column %s: %w", path, row+i, labelCol, err)
			}
		}
		var wg sync.WaitGroup
		w := max(1, opt.Workers)
		for k := 0; k < w; k++ {
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				for i := k; i < n; i += w {
					if errs[i] != nil {
						continue
					}
					if e := p.Pixels(l.Pixels[(base+i)*sz:(base+i+1)*sz], ir.At(i), Shape{}); e != nil {
						errs[i] = fmt.Errorf("%s row %d column %s: %w", path, row+i, ic.Name, e)
					}
				}
			}(k)
		}
		wg.Wait()
		kept := 0 // compact the good rows to the front of this batch's pixels
		for i, e := range errs {
			if e != nil {
				if !opt.SkipBad {
					return e
				}
				l.Skipped++
				if opt.Warn != nil {
					opt.Warn(e.Error() + ": left out")
				}
				continue
			}
			if kept != i {
				copy(l.Pixels[(base+kept)*sz:(base+kept+1)*sz], l.Pixels[(base+i)*sz:(base+i+1)*sz])
			}
			l.Labels = append(l.Labels, labels[i])
			kept++
		}
		l.Pixels = l.Pixels[:(base+kept)*sz]
		row += n
		l.N += kept
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
