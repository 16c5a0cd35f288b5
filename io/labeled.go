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

// LoadLabeled reads every row of the files into memory, decoding and
// fitting images to the model size with up to workers goroutines. Any bad
// row is an error naming file, row and column: a training set is not
// silently thinned. classes bounds the label range.
func LoadLabeled(paths []string, imageCol, labelCol string, p *Preprocess, classes, workers int, mem memory.Allocator) (*Labeled, error) {
	out := &Labeled{H: p.H, W: p.W, C: p.C, Files: paths}
	h := sha256.New()
	for _, path := range paths {
		if err := hashFile(h, path); err != nil {
			return nil, err
		}
		if err := out.load(path, imageCol, labelCol, p, classes, workers, mem); err != nil {
			return nil, err
		}
	}
	out.Fingerprint = hex.EncodeToString(h.Sum(nil))
	return out, nil
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

func (l *Labeled) load(path, imageCol, labelCol string, p *Preprocess, classes, workers int, mem memory.Allocator) error {
	probe, err := Open(path, nil, 1, mem)
	if err != nil {
		return err
	}
	ic, err := FindImageColumn(probe.Schema(), imageCol)
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
		lr, err := LabelReader(rec.Column(1))
		if err != nil {
			return fmt.Errorf("%s column %s: %w", path, labelCol, err)
		}
		base := len(l.Labels)
		for i := 0; i < n; i++ {
			v, ok := lr(i)
			if !ok || v < 0 || int(v) >= classes {
				return fmt.Errorf("%s row %d column %s: label %d (null=%v) is not in 0..%d", path, row+i, labelCol, v, !ok, classes-1)
			}
			l.Labels = append(l.Labels, int32(v))
		}
		l.Pixels = append(l.Pixels, make([]uint8, n*sz)...)
		errs := make([]error, n)
		var wg sync.WaitGroup
		w := max(1, workers)
		for k := 0; k < w; k++ {
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				for i := k; i < n; i += w {
					errs[i] = p.Pixels(l.Pixels[(base+i)*sz:(base+i+1)*sz], ir.At(i), Shape{})
				}
			}(k)
		}
		wg.Wait()
		for i, e := range errs {
			if e != nil {
				return fmt.Errorf("%s row %d column %s: %w", path, row+i, ic.Name, e)
			}
		}
		row += n
		l.N += n
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
