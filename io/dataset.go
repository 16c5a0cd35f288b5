package nbio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// LabeledImageWriter writes a Hugging Face–style image classification
// dataset: image struct<bytes: binary, path: string>, label int64, with
// the class names in the "huggingface" metadata.
type LabeledImageWriter struct {
	pw     *ParquetWriter
	schema *arrow.Schema
	b      *array.RecordBuilder
	n      int
}

// LabeledImageSchema is the schema of LabeledImageWriter's files.
func LabeledImageSchema(classNames []string) *arrow.Schema {
	md := arrow.NewMetadata([]string{"huggingface"}, []string{HFMetadata("image", "label", classNames)})
	return arrow.NewSchema([]arrow.Field{
		{Name: "image", Type: arrow.StructOf(
			arrow.Field{Name: "bytes", Type: arrow.BinaryTypes.Binary, Nullable: true},
			arrow.Field{Name: "path", Type: arrow.BinaryTypes.String, Nullable: true}), Nullable: true},
		{Name: "label", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}, &md)
}

// DatasetRowGroupRows is the converted datasets' row group: small enough
// that a reader (or a --split-rows unit) holds a few MB, large enough that
// the footer stays small.
const DatasetRowGroupRows = 8192

// CreateLabeledImages starts a dataset file.
func CreateLabeledImages(path string, classNames []string, opt WriterOptions, mem memory.Allocator) (*LabeledImageWriter, error) {
	sc := LabeledImageSchema(classNames)
	if opt.Metadata == nil {
		opt.Metadata = map[string]string{}
	}
	opt.Metadata["huggingface"] = HFMetadata("image", "label", classNames)
	pw, err := CreateParquet(path, sc, opt, mem)
	if err != nil {
		return nil, err
	}
	return &LabeledImageWriter{pw: pw, schema: sc, b: array.NewRecordBuilder(mem, sc)}, nil
}

// Append adds one row.
func (w *LabeledImageWriter) Append(encoded []byte, name string, label int64) error {
	sb := w.b.Field(0).(*array.StructBuilder)
	sb.Append(true)
	sb.FieldBuilder(0).(*array.BinaryBuilder).Append(encoded)
	sb.FieldBuilder(1).(*array.StringBuilder).Append(name)
	w.b.Field(1).(*array.Int64Builder).Append(label)
	w.n++
	if w.n == 1024 {
		return w.flush()
	}
	return nil
}

func (w *LabeledImageWriter) flush() error {
	if w.n == 0 {
		return nil
	}
	rec := w.b.NewRecordBatch()
	defer rec.Release()
	w.n = 0
	return w.pw.Write(rec)
}

// Commit flushes and atomically publishes the file.
func (w *LabeledImageWriter) Commit() error {
	defer w.b.Release()
	if err := w.flush(); err != nil {
		w.pw.Abort()
		return err
	}
	return w.pw.Commit()
}

// Abort discards the file.
func (w *LabeledImageWriter) Abort() {
	w.b.Release()
	w.pw.Abort()
}

// EncodePNG encodes HWC uint8 pixels (c = 1 or 3) as PNG.
func EncodePNG(pix []uint8, h, w, c int) ([]byte, error) {
	var img image.Image
	switch c {
	case 1:
		img = &image.Gray{Pix: pix[:h*w], Stride: w, Rect: image.Rect(0, 0, w, h)}
	case 3:
		rgba := image.NewNRGBA(image.Rect(0, 0, w, h))
		for i := 0; i < h*w; i++ {
			copy(rgba.Pix[4*i:4*i+3], pix[3*i:3*i+3])
			rgba.Pix[4*i+3] = 255
		}
		img = rgba
	default:
		return nil, fmt.Errorf("cannot encode %d channels as PNG", c)
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// MNISTClasses are the digit names.
var MNISTClasses = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

// ConvertMNIST converts the four MNIST idx files found in dir (raw or
// .gz, names as distributed: train-images-idx3-ubyte, ...) into
// outDir/train.parquet and outDir/test.parquet.
func ConvertMNIST(dir, outDir string, mem memory.Allocator) ([]string, error) {
	var outs []string
	for _, split := range []struct{ name, prefix string }{{"train", "train"}, {"test", "t10k"}} {
		imgs, err := readIDXAny(dir, split.prefix+"-images-idx3-ubyte", split.prefix+"-images.idx3-ubyte")
		if err != nil {
			return nil, err
		}
		labs, err := readIDXAny(dir, split.prefix+"-labels-idx1-ubyte", split.prefix+"-labels.idx1-ubyte")
		if err != nil {
			return nil, err
		}
		if len(imgs.Dims) != 3 || len(labs.Dims) != 1 || imgs.Dims[0] != labs.Dims[0] {
			return nil, fmt.Errorf("MNIST %s: images %v and labels %v do not match", split.name, imgs.Dims, labs.Dims)
		}
		n, h, w := imgs.Dims[0], imgs.Dims[1], imgs.Dims[2]
		out := filepath.Join(outDir, split.name+".parquet")
		lw, err := CreateLabeledImages(out, MNISTClasses, WriterOptions{RowGroupRows: DatasetRowGroupRows}, mem)
		if err != nil {
			return nil, err
		}
		for i := 0; i < n; i++ {
			if labs.Data[i] > 9 {
				lw.Abort()
				return nil, fmt.Errorf("MNIST %s label %d of image %d is not a digit", split.name, labs.Data[i], i)
			}
			b, err := EncodePNG(imgs.Data[i*h*w:(i+1)*h*w], h, w, 1)
			if err == nil {
				err = lw.Append(b, fmt.Sprintf("%s/%05d.png", split.name, i), int64(labs.Data[i]))
			}
			if err != nil {
				lw.Abort()
				return nil, err
			}
		}
		if err := lw.Commit(); err != nil {
			return nil, err
		}
		outs = append(outs, out)
	}
	return outs, nil
}

func readIDXAny(dir string, names ...string) (*IDX, error) {
	for _, n := range names {
		for _, suffix := range []string{"", ".gz"} {
			p := filepath.Join(dir, n+suffix)
			if _, err := os.Stat(p); err == nil {
				return ReadIDXFile(p)
			}
		}
	}
	return nil, fmt.Errorf("no %s[.gz] in %s", names[0], dir)
}

// CIFAR10Classes are the CIFAR-10 class names (batches.meta.txt order).
var CIFAR10Classes = []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

// ConvertCIFAR10 converts the CIFAR-10 binary version (data_batch_1..5.bin,
// test_batch.bin: records of 1 label byte + 3072 bytes of R, G and B planes
// of 32×32) into outDir/train.parquet and outDir/test.parquet.
func ConvertCIFAR10(dir, outDir string, mem memory.Allocator) ([]string, error) {
	classes := CIFAR10Classes
	if b, err := os.ReadFile(filepath.Join(dir, "batches.meta.txt")); err == nil {
		var names []string
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				names = append(names, l)
			}
		}
		if len(names) == 10 {
			classes = names
		}
	}
	var outs []string
	for _, split := range []struct {
		name  string
		files []string
	}{
		{"train", []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}},
		{"test", []string{"test_batch.bin"}},
	} {
		out := filepath.Join(outDir, split.name+".parquet")
		lw, err := CreateLabeledImages(out, classes, WriterOptions{RowGroupRows: DatasetRowGroupRows}, mem)
		if err != nil {
			return nil, err
		}
		fail := func(err error) ([]string, error) { lw.Abort(); return nil, err }
		pix := make([]uint8, 32*32*3)
		for _, fn := range split.files {
			p := filepath.Join(dir, fn)
			data, err := os.ReadFile(p)
			if err != nil {
				return fail(err)
			}
			const rec = 1 + 3072
			if len(data) == 0 || len(data)%rec != 0 {
				return fail(fmt.Errorf("%s: %d bytes is not a whole number of %d-byte CIFAR-10 records", p, len(data), rec))
			}
			for i := 0; i < len(data)/rec; i++ {
				r := data[i*rec : (i+1)*rec]
				if r[0] > 9 {
					return fail(fmt.Errorf("%s record %d: label %d out of range", p, i, r[0]))
				}
				for j := 0; j < 1024; j++ { // planar RGB → HWC
					pix[3*j], pix[3*j+1], pix[3*j+2] = r[1+j], r[1+1024+j], r[1+2048+j]
				}
				b, err := EncodePNG(pix, 32, 32, 3)
				if err == nil {
					err = lw.Append(b, fmt.Sprintf("%s/%d.png", strings.TrimSuffix(fn, ".bin"), i), int64(r[0]))
				}
				if err != nil {
					return fail(err)
				}
			}
		}
		if err := lw.Commit(); err != nil {
			return nil, err
		}
		outs = append(outs, out)
	}
	if len(outs) == 0 {
		return nil, errors.New("nothing converted")
	}
	return outs, nil
}
