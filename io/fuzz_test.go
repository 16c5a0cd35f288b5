package nbio

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"golang.org/x/image/bmp"
)

// FuzzDecodeImage: arbitrary bytes decode or fail cleanly, in gray and
// RGB, through the whole preprocessing (resize, crop).
func FuzzDecodeImage(f *testing.F) {
	img := image.NewNRGBA(image.Rect(0, 0, 5, 3))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	var p, g, b bytes.Buffer
	png.Encode(&p, img)
	gif.Encode(&g, img, nil)
	bmp.Encode(&b, img)
	gray := image.NewGray(image.Rect(0, 0, 3, 2))
	gray.Set(1, 1, color.Gray{200})
	f.Add(p.Bytes())
	f.Add(g.Bytes())
	f.Add(b.Bytes())
	f.Add(jpegWithOrientation(f, gray, 6))
	f.Add([]byte("RIFF\x00\x00\x00\x00WEBPVP8 "))
	pre := []*Preprocess{
		{H: 4, W: 4, C: 1, Resize: "exact", Scale: 1},
		{H: 2, W: 3, C: 3, Resize: "shorter", ResizeTo: 4, Scale: 1},
	}
	MaxImagePixels = 1 << 20 // keep each execution fast; the limit itself is tested
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, pr := range pre {
			dst := make([]uint8, pr.Len())
			if err := pr.Image(dst, data); err == nil {
				continue
			}
		}
	})
}

// FuzzOpenInput: an arbitrary file is scored to the end or rejected with
// an error, never a panic: open, find the image column, read every batch
// and preprocess every row.
func FuzzOpenInput(f *testing.F) {
	for _, seed := range fuzzInputSeeds(f) {
		f.Add(seed)
	}
	MaxImagePixels, MaxAllocation = 1<<20, 64<<20 // fast executions; the limits themselves are what is exercised
	f.Fuzz(fuzzInputBody)
}

func fuzzInputBody(t *testing.T, data []byte) {
	pr := &Preprocess{H: 4, W: 5, C: 1, Resize: "exact", Scale: 1}
	path := filepath.Join(t.TempDir(), "in")
	os.WriteFile(path, data, 0o644)
	if d := os.Getenv("NINBATCH_FUZZ_LAST"); d != "" {
		os.WriteFile(d, data, 0o644)
	}
	// the training loader over the same bytes: an error or a pass, never a panic or a hang
	if ls, err := OpenLabeledStream([]string{path}, LabelOptions{Classes: 3, SkipBad: true, Workers: 2}, pr, memory.DefaultAllocator); err == nil {
		for _, ord := range []Order{{}, {Shuffle: true, Buffer: 2}} {
			if err := ls.Each(context.Background(), ord, 2, func([]uint8, []int32, int) error { return nil }); err != nil && err.Error() == "" {
				t.Fatal("empty error")
			}
		}
	}
	src, err := Open(path, nil, 7, memory.DefaultAllocator)
	if err != nil {
		return
	}
	defer src.Close()
	ic, err := FindImageColumn(src.Schema(), "")
	if err != nil {
		return
	}
	x, px := make([]float32, pr.Len()), make([]uint8, pr.Len())
	for {
		rec, err := src.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		ir, err := NewImageReader(rec.Column(ic.Index), ic.Kind)
		if err == nil {
			for i := 0; i < int(rec.NumRows()); i++ {
				pr.Input(x, px, ir.At(i), Shape{})
			}
		}
		rec.Release()
	}
}

// fuzzInputSeeds: small valid inputs in each layout and format.
func fuzzInputSeeds(tb testing.TB) [][]byte {
	dir := tb.TempDir()
	var seeds [][]byte
	p := filepath.Join(dir, "l.parquet")
	w, err := CreateLabeledImages(p, []string{"x"}, WriterOptions{RowGroupRows: 2}, memory.DefaultAllocator)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		b, _ := EncodePNG(make([]uint8, 20), 4, 5, 1)
		w.Append(b, "p.png", 0)
	}
	w.Commit()
	b, _ := os.ReadFile(p)
	seeds = append(seeds, b)
	// Arrow IPC file and stream with a raw uint8 tensor column
	sc := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "pixels", Type: arrow.ListOf(arrow.PrimitiveTypes.Uint8)}}, nil)
	rb := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer rb.Release()
	for i := 0; i < 3; i++ {
		rb.Field(0).(*array.Int64Builder).Append(int64(i))
		lb := rb.Field(1).(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Uint8Builder).AppendValues(make([]uint8, 20), nil)
	}
	rec := rb.NewRecordBatch()
	defer rec.Release()
	var fileBuf, streamBuf bytes.Buffer
	fw, err := ipc.NewFileWriter(&fileBuf, ipc.WithSchema(sc))
	if err != nil {
		tb.Fatal(err)
	}
	fw.Write(rec)
	fw.Close()
	sw := ipc.NewWriter(&streamBuf, ipc.WithSchema(sc))
	sw.Write(rec)
	sw.Close()
	return append(seeds, fileBuf.Bytes(), streamBuf.Bytes())
}
