package nbio

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

func writeIDX(t *testing.T, path string, dims []int, data []byte, gz bool) {
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 8, byte(len(dims))})
	for _, d := range dims {
		binary.Write(&buf, binary.BigEndian, uint32(d))
	}
	buf.Write(data)
	b := buf.Bytes()
	if gz {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(b)
		w.Close()
		b = z.Bytes()
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestIDX(t *testing.T) {
	dir := t.TempDir()
	data := []byte{1, 2, 3, 4, 5, 6}
	writeIDX(t, filepath.Join(dir, "a"), []int{2, 3}, data, false)
	writeIDX(t, filepath.Join(dir, "b.gz"), []int{2, 3}, data, true)
	for _, n := range []string{"a", "b.gz"} {
		x, err := ReadIDXFile(filepath.Join(dir, n))
		if err != nil || !slices.Equal(x.Dims, []int{2, 3}) || !slices.Equal(x.Data, data) {
			t.Fatalf("%s: %v %v", n, x, err)
		}
	}
	for name, b := range map[string][]byte{
		"bad magic": {1, 2, 3, 4},
		"float":     {0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0},
		"huge":      {0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"truncated": {0, 0, 8, 1, 0, 0, 0, 9, 1, 2},
	} {
		if _, err := ReadIDX(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func testImage() *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, 4, 3))
	for y := 0; y < 3; y++ {
		for x := 0; x < 4; x++ {
			img.Set(x, y, color.NRGBA{uint8(60 * x), uint8(80 * y), uint8(10*x + 20*y), 255})
		}
	}
	return img
}

func TestDecodeFormats(t *testing.T) {
	img := testImage()
	var pngB, gifB, bmpB, tiffB bytes.Buffer
	png.Encode(&pngB, img)
	bmp.Encode(&bmpB, img)
	tiff.Encode(&tiffB, img, &tiff.Options{Compression: tiff.Deflate})
	gif.Encode(&gifB, img, &gif.Options{NumColors: 256})
	want, _, _ := toHWCExact(img)
	for name, b := range map[string][]byte{"png": pngB.Bytes(), "bmp": bmpB.Bytes(), "tiff": tiffB.Bytes()} {
		pix, h, w, err := DecodeImage(b, 3)
		if err != nil || h != 3 || w != 4 || !slices.Equal(pix, want) {
			t.Fatalf("%s: %v %dx%d %v", name, err, h, w, pix)
		}
	}
	if _, h, w, err := DecodeImage(gifB.Bytes(), 1); err != nil || h != 3 || w != 4 {
		t.Fatalf("gif: %v", err)
	}
	// gray conversion is ITU-R 601 luma
	pix, _, _, _ := DecodeImage(pngB.Bytes(), 1)
	r, g, b := uint32(60*2), uint32(80*1), uint32(10*2+20*1)
	if pix[1*4+2] != uint8((r*299+g*587+b*114+500)/1000) {
		t.Fatalf("luma %d", pix[6])
	}
	for name, b := range map[string][]byte{
		"empty": nil, "garbage": []byte("hello world, not an image"),
		"truncated png": pngB.Bytes()[:40],
	} {
		if _, _, _, err := DecodeImage(b, 3); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, _, _, err := DecodeImage([]byte("hello world"), 3); err != ErrUnsupported {
		t.Errorf("unsupported format error = %v", err)
	}
}

func toHWCExact(img *image.NRGBA) ([]uint8, int, int) { return toHWC(img, 3) }

// jpegWithOrientation inserts an EXIF APP1 segment after SOI.
func jpegWithOrientation(t testing.TB, img image.Image, o uint16) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	j := buf.Bytes()
	var tiff bytes.Buffer
	tiff.WriteString("MM\x00\x2a")
	binary.Write(&tiff, binary.BigEndian, uint32(8))
	binary.Write(&tiff, binary.BigEndian, uint16(1))
	binary.Write(&tiff, binary.BigEndian, []uint16{0x0112, 3})
	binary.Write(&tiff, binary.BigEndian, uint32(1))
	binary.Write(&tiff, binary.BigEndian, []uint16{o, 0})
	binary.Write(&tiff, binary.BigEndian, uint32(0))
	seg := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	app1 := append([]byte{0xFF, 0xE1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}, seg...)
	return append(append(append([]byte{}, j[:2]...), app1...), j[2:]...)
}

func TestEXIFOrientation(t *testing.T) {
	// a 2×3 gray image with distinct corners; orientation 6 means "rotate 90° clockwise to display"
	img := image.NewGray(image.Rect(0, 0, 3, 2))
	copy(img.Pix, []uint8{0, 50, 100, 150, 200, 250})
	plain, h, w, err := DecodeImage(jpegWithOrientation(t, img, 1), 1)
	if err != nil || h != 2 || w != 3 {
		t.Fatal(err, h, w)
	}
	rot, h2, w2, err := DecodeImage(jpegWithOrientation(t, img, 6), 1)
	if err != nil || h2 != 3 || w2 != 2 {
		t.Fatalf("orientation 6: %v %dx%d", err, h2, w2)
	}
	// top-left of the rotated image is the original bottom-left
	near := func(a, b uint8) bool { return int(a)-int(b) < 12 && int(b)-int(a) < 12 }
	if !near(rot[0], plain[1*3+0]) || !near(rot[1], plain[0]) {
		t.Fatalf("rotation wrong: plain %v rotated %v", plain, rot)
	}
	for o := 2; o <= 8; o++ {
		if _, _, _, err := DecodeImage(jpegWithOrientation(t, img, uint16(o)), 3); err != nil {
			t.Fatalf("orientation %d: %v", o, err)
		}
	}
}

func TestPreprocessFitNormalize(t *testing.T) {
	p := &Preprocess{H: 2, W: 2, C: 1, Resize: "exact", Scale: 1.0 / 255}
	// Golden values from PIL 9.4 Image.resize(..., BILINEAR) (antialiased), ±1 for rounding.
	src := []uint8{0, 0, 100, 100, 0, 0, 100, 100, 200, 200, 50, 50, 200, 200, 50, 50}
	dst := make([]uint8, 4)
	if err := p.Fit(dst, src, 4, 4); err != nil {
		t.Fatal(err)
	}
	closeU8(t, "4x4->2x2", dst, []uint8{38, 84, 155, 73})
	ramp := make([]uint8, 35)
	for i := range ramp {
		ramp[i] = uint8(i * 7)
	}
	small := make([]uint8, 6)
	(&Preprocess{H: 2, W: 3, C: 1, Resize: "exact"}).Fit(small, ramp, 5, 7)
	closeU8(t, "7x5->3x2", small, []uint8{55, 70, 85, 153, 168, 183})
	big := make([]uint8, 99)
	(&Preprocess{H: 9, W: 11, C: 1, Resize: "exact"}).Fit(big, ramp, 5, 7)
	closeU8(t, "7x5->11x9", big, []uint8{0, 3, 8, 12, 17, 21, 25, 30, 34, 39, 42, 16, 19, 24, 28, 33, 37, 41, 46, 50, 55, 58, 44, 47, 52, 56, 61, 65, 69, 74, 78, 83, 86, 71, 74, 79, 83, 88, 92, 96, 101, 105, 110, 113, 98, 101, 106, 110, 115, 119, 123, 128, 132, 137, 140, 125, 128, 133, 137, 142, 146, 150, 155, 159, 164, 167, 152, 155, 160, 164, 169, 173, 177, 182, 186, 191, 194, 180, 183, 188, 192, 197, 201, 205, 210, 214, 219, 222, 196, 199, 204, 208, 213, 217, 221, 226, 230, 235, 238})
	// upscale keeps a constant image constant
	up := make([]uint8, 25)
	p5 := &Preprocess{H: 5, W: 5, C: 1, Resize: "exact", Scale: 1}
	p5.Fit(up, []uint8{77, 77, 77, 77}, 2, 2)
	for _, v := range up {
		if v != 77 {
			t.Fatalf("upscale of a constant: %v", up)
		}
	}
	// shorter side + center crop
	ps := &Preprocess{H: 2, W: 2, C: 1, Resize: "shorter", ResizeTo: 2, Scale: 1}
	wide := []uint8{1, 1, 9, 9, 5, 5, 1, 1, 9, 9, 5, 5} // 2×6
	if err := ps.Fit(dst, wide, 2, 6); err != nil || !slices.Equal(dst, []uint8{9, 9, 9, 9}) {
		t.Fatalf("shorter+crop: %v %v", dst, err)
	}
	pn := &Preprocess{H: 2, W: 2, C: 1, Resize: "none"}
	if err := pn.Fit(dst, wide, 2, 6); err == nil {
		t.Fatal("resize none accepted a wrong size")
	}
	// normalize
	pr := &Preprocess{H: 1, W: 2, C: 3, Scale: 0.5, Mean: []float32{1, 2, 3}, Std: []float32{2, 4, 8}}
	out := make([]float32, 6)
	pr.Normalize(out, []uint8{10, 10, 10, 20, 20, 20})
	if !slices.Equal(out, []float32{2, 0.75, 0.25, 4.5, 2, 0.875}) {
		t.Fatalf("normalize = %v", out)
	}
}

func TestLabeledRoundTripAndSources(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "d.parquet")
	w, err := CreateLabeledImages(path, []string{"a", "b", "c"}, WriterOptions{RowGroupRows: 3}, mem)
	if err != nil {
		t.Fatal(err)
	}
	var want [][]uint8
	for i := 0; i < 10; i++ {
		pix := make([]uint8, 4*5)
		for j := range pix {
			pix[j] = uint8(i*10 + j)
		}
		want = append(want, pix)
		b, _ := EncodePNG(pix, 4, 5, 1)
		if err := w.Append(b, "x.png", int64(i%3)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftover temporaries: %v", ents)
	}
	p := &Preprocess{H: 4, W: 5, C: 1, Resize: "none", Scale: 1}
	l, err := LoadLabeled([]string{path}, "", "", p, 3, 2, mem)
	if err != nil {
		t.Fatal(err)
	}
	if l.N != 10 || !slices.Equal(l.Classes, []string{"a", "b", "c"}) || len(l.Fingerprint) != 64 {
		t.Fatalf("loaded %d rows, classes %v", l.N, l.Classes)
	}
	for i := range want {
		if !slices.Equal(l.Pixels[i*20:(i+1)*20], want[i]) || l.Labels[i] != int32(i%3) {
			t.Fatalf("row %d differs", i)
		}
	}
	// a label beyond the class count names file, row and column
	if _, err := LoadLabeled([]string{path}, "", "", p, 2, 1, mem); err == nil || !strings.Contains(err.Error(), "row 2 column label") {
		t.Fatalf("bad label error: %v", err)
	}
	// streaming in batches of 4 over 4 row groups
	src, err := Open(path, []string{"label"}, 4, mem)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	err = EachBatch(src, func(rec arrow.RecordBatch) error {
		sizes = append(sizes, rec.NumRows())
		if rec.NumCols() != 1 {
			t.Fatalf("projection gave %d columns", rec.NumCols())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	src.Close()
	if total := sum(sizes); total != 10 || slices.Max(sizes) > 4 {
		t.Fatalf("batches %v", sizes)
	}
}

func sum(v []int64) (s int64) {
	for _, x := range v {
		s += x
	}
	return
}

func TestArrowIPCSources(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "pixels", Type: arrow.FixedSizeListOf(6, arrow.PrimitiveTypes.Uint8)},
	}, nil)
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	for i := 0; i < 7; i++ {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		lb := b.Field(1).(*array.FixedSizeListBuilder)
		lb.Append(true)
		for j := 0; j < 6; j++ {
			lb.ValueBuilder().(*array.Uint8Builder).Append(uint8(i + j))
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	for _, kind := range []string{"file", "stream"} {
		path := filepath.Join(dir, "x."+kind)
		f, _ := os.Create(path)
		if kind == "file" {
			w, _ := ipc.NewFileWriter(f, ipc.WithSchema(sc), ipc.WithAllocator(mem))
			w.Write(rec)
			w.Close()
		} else {
			w := ipc.NewWriter(f, ipc.WithSchema(sc), ipc.WithAllocator(mem))
			w.Write(rec)
			w.Close()
		}
		f.Close()
		src, err := Open(path, nil, 3, mem)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		ic, err := FindImageColumn(src.Schema(), "")
		if err != nil || ic.Name != "pixels" || ic.Kind != ImageRawU8 {
			t.Fatalf("%s: image column %+v %v", kind, ic, err)
		}
		rows := 0
		p := &Preprocess{H: 2, W: 3, C: 1, Resize: "none", Scale: 1}
		px := make([]uint8, 6)
		for {
			r, err := src.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			ir, err := NewImageReader(r.Column(1), ic.Kind)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < int(r.NumRows()); i++ {
				if err := p.Pixels(px, ir.At(i), Shape{}); err != nil || px[0] != uint8(rows) {
					t.Fatalf("%s row %d: %v %v", kind, rows, px, err)
				}
				rows++
			}
			r.Release()
		}
		src.Close()
		if rows != 7 {
			t.Fatalf("%s: %d rows", kind, rows)
		}
	}
}

func TestOpenRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "g.parquet")
	w, _ := CreateLabeledImages(good, nil, WriterOptions{}, memory.DefaultAllocator)
	w.Append([]byte{1}, "", 0)
	w.Commit()
	b, _ := os.ReadFile(good)
	cases := map[string][]byte{
		"text":             []byte("id,image\n1,2\n"),
		"empty":            {},
		"truncated footer": b[:len(b)-9],
		"only magic":       []byte("PAR1"),
	}
	for name, data := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, data, 0o644)
		if _, err := Open(p, nil, 10, memory.DefaultAllocator); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestFindImageColumn(t *testing.T) {
	bin := arrow.BinaryTypes.Binary
	mk := func(fs ...arrow.Field) *arrow.Schema { return arrow.NewSchema(fs, nil) }
	if c, err := FindImageColumn(mk(arrow.Field{Name: "id", Type: arrow.PrimitiveTypes.Int64}, arrow.Field{Name: "jpg", Type: bin}), ""); err != nil || c.Name != "jpg" {
		t.Fatal(c, err)
	}
	if c, err := FindImageColumn(mk(arrow.Field{Name: "thumb", Type: bin}, arrow.Field{Name: "image", Type: bin}), ""); err != nil || c.Name != "image" {
		t.Fatal(c, err)
	}
	if _, err := FindImageColumn(mk(arrow.Field{Name: "a", Type: bin}, arrow.Field{Name: "b", Type: bin}), ""); err == nil || !strings.Contains(err.Error(), "--image-col") {
		t.Fatal(err)
	}
	if _, err := FindImageColumn(mk(arrow.Field{Name: "id", Type: arrow.PrimitiveTypes.Int64}), ""); err == nil {
		t.Fatal("no image column accepted")
	}
	if _, err := FindImageColumn(mk(arrow.Field{Name: "id", Type: arrow.PrimitiveTypes.Int64}), "id"); err == nil {
		t.Fatal("int column accepted as images")
	}
}

func TestExpandInputs(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.parquet", "a.parquet", "c.arrow", "notes.txt", ".hidden.parquet"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	got, err := ExpandInputs([]string{dir})
	want := []string{filepath.Join(dir, "a.parquet"), filepath.Join(dir, "b.parquet"), filepath.Join(dir, "c.arrow")}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("dir: %v %v", got, err)
	}
	got, _ = ExpandInputs([]string{filepath.Join(dir, "*.parquet"), filepath.Join(dir, "a.parquet")})
	if len(got) != 2 {
		t.Fatalf("glob: %v", got)
	}
	if _, err := ExpandInputs([]string{filepath.Join(dir, "missing.parquet")}); err == nil {
		t.Fatal("missing input accepted")
	}
}

func closeU8(t *testing.T, name string, got, want []uint8) {
	t.Helper()
	for i := range want {
		if d := int(got[i]) - int(want[i]); d > 1 || d < -1 {
			t.Fatalf("%s: [%d] = %d, PIL gives %d\n got %v\nwant %v", name, i, got[i], want[i], got, want)
		}
	}
}

// TestWriteSlicedFixedSizeList guards the workaround for pqarrow writing a
// sliced fixed_size_list from its first row instead of its offset.
func TestWriteSlicedFixedSizeList(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	sc := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Int32)}}, nil)
	b := array.NewRecordBuilder(mem, sc)
	lb := b.Field(0).(*array.FixedSizeListBuilder)
	for i := 0; i < 6; i++ {
		lb.Append(true)
		lb.ValueBuilder().(*array.Int32Builder).AppendValues([]int32{int32(10 * i), int32(10*i + 1)}, nil)
	}
	rec := b.NewRecordBatch()
	b.Release()
	path := filepath.Join(t.TempDir(), "s.parquet")
	w, err := CreateParquet(path, sc, WriterOptions{}, mem)
	if err != nil {
		t.Fatal(err)
	}
	s := rec.NewSlice(3, 6)
	if err := w.Write(s); err != nil {
		t.Fatal(err)
	}
	s.Release()
	rec.Release()
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	src, _ := Open(path, nil, 10, mem)
	defer src.Close()
	got, err := src.Next()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	l := got.Column(0).(*array.FixedSizeList)
	vals := l.ListValues().(*array.Int32).Int32Values()
	if b, _ := l.ValueOffsets(0); vals[b] != 30 {
		t.Fatalf("first written row starts with %d, want 30", vals[b])
	}
}

// TestCheckIPCSchema: a valid schema passes; the same schema with one
// vector length blown up (what made arrow-go allocate until the process
// died) is rejected, wherever the corruption lands.
func TestCheckIPCSchema(t *testing.T) {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "img", Type: arrow.StructOf(arrow.Field{Name: "bytes", Type: arrow.BinaryTypes.Binary})},
	}, func() *arrow.Metadata { m := arrow.NewMetadata([]string{"k"}, []string{"v"}); return &m }())
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(sc))
	w.Close()
	msg := buf.Bytes()
	if err := CheckIPCSchemaMessage(msg); err != nil {
		t.Fatalf("valid schema rejected: %v", err)
	}
	rejected := 0
	for p := 8; p+4 <= len(msg); p += 4 {
		bad := slices.Clone(msg)
		binary.LittleEndian.PutUint32(bad[p:], 0x7fffffff)
		if CheckIPCSchemaMessage(bad) != nil {
			rejected++
			continue
		}
		// accepted: arrow-go must then be able to read it without a huge allocation
		r, err := ipc.NewReader(bytes.NewReader(bad), ipc.WithAllocator(limited(memory.NewGoAllocator())))
		if err == nil {
			r.Release()
		}
	}
	if rejected == 0 {
		t.Fatal("no corruption was detected")
	}
}

// TestRowGroupByteBound: row groups close at the byte bound, not only at
// the row bound (buffered row groups would otherwise grow without limit).
func TestRowGroupByteBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.parquet")
	w, err := CreateLabeledImages(path, nil, WriterOptions{RowGroupRows: 1 << 20, RowGroupBytes: 2500 << 10}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 1000)
	for i := 0; i < 8192; i++ { // 8 batches of 1024 rows, ~1 MB each
		blob[0] = byte(i)
		w.Append(blob, "", 0)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	rg, err := RowGroupRows(path)
	if err != nil || len(rg) < 3 {
		t.Fatalf("%d row groups (%v) for 8 MB at a 2.5 MB bound", len(rg), err)
	}
}

// resizePixelLoop is resize as it was written first, one output value at a
// time, kept as the reference of the row-wise version.
func resizePixelLoop(dst, src []uint8, h, w, oh, ow, c int) {
	tmp := make([]float32, h*ow*c)
	xs := filterTaps(w, ow, 0, ow)
	for y := 0; y < h; y++ {
		for x, t := range xs {
			for ch := 0; ch < c; ch++ {
				var s float32
				for k, wt := range t.w {
					s += wt * float32(src[(y*w+t.start+k)*c+ch])
				}
				tmp[(y*ow+x)*c+ch] = s
			}
		}
	}
	for y, t := range filterTaps(h, oh, 0, oh) {
		for x := 0; x < ow; x++ {
			for ch := 0; ch < c; ch++ {
				var s float32
				for k, wt := range t.w {
					s += wt * tmp[((t.start+k)*ow+x)*c+ch]
				}
				dst[(y*ow+x)*c+ch] = uint8(min(255, max(0, math.Round(float64(s)))))
			}
		}
	}
}

// TestResizeMatchesPixelLoop: the row-wise resize is bit-identical to the
// pixel loop, shrinking and enlarging, 1 and 3 channels, on random pixels
// and on flat 255s (the clamp), twice per size (the cached taps and pooled
// scratch are reused).
func TestResizeMatchesPixelLoop(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, sz := range [][4]int{{28, 28, 224, 224}, {5, 7, 2, 3}, {5, 7, 9, 11}, {32, 32, 32, 17}, {1, 1, 3, 4}, {40, 30, 13, 60}} {
		for _, c := range []int{1, 3} {
			for rep := 0; rep < 2; rep++ {
				h, w, oh, ow := sz[0], sz[1], sz[2], sz[3]
				src := make([]uint8, h*w*c)
				for i := range src {
					src[i] = uint8(r.IntN(256))
					if rep == 1 {
						src[i] = 255
					}
				}
				want, got := make([]uint8, oh*ow*c), make([]uint8, oh*ow*c)
				resizePixelLoop(want, src, h, w, oh, ow, c)
				resize(got, src, h, w, oh, ow, c)
				if !slices.Equal(got, want) {
					t.Fatalf("%dx%d -> %dx%d c%d rep %d: row-wise resize differs", h, w, oh, ow, c, rep)
				}
			}
		}
	}
}

func BenchmarkResizeMNISTToImageNet(b *testing.B) {
	src := make([]uint8, 28*28*3)
	for i := range src {
		src[i] = uint8(i * 7)
	}
	dst := make([]uint8, 224*224*3)
	for b.Loop() {
		resize(dst, src, 28, 28, 224, 224, 3)
	}
}

// TestGrayIntoRGBModel: a gray PNG or JPEG for a 3-channel model is resized
// once, as gray, and expanded at the end; Input and Pixels must give what
// the plain path gives (every pixel as three equal bytes, resized as RGB
// by the reference pixel loop, then (v·Scale − Mean[c]) / Std[c]), for
// every resize mode, same size included, and a colour image is untouched.
func TestGrayIntoRGBModel(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	gray := image.NewGray(image.Rect(0, 0, 13, 9))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(r.IntN(256))
	}
	var pngBuf, jpgBuf bytes.Buffer
	if err := png.Encode(&pngBuf, gray); err != nil {
		t.Fatal(err)
	}
	if err := jpeg.Encode(&jpgBuf, gray, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	rgba := image.NewNRGBA(image.Rect(0, 0, 13, 9))
	for i := range rgba.Pix {
		rgba.Pix[i] = uint8(r.IntN(256))
		if i%4 == 3 {
			rgba.Pix[i] = 255
		}
	}
	var colBuf bytes.Buffer
	if err := png.Encode(&colBuf, rgba); err != nil {
		t.Fatal(err)
	}
	for _, enc := range []struct {
		name string
		b    []byte
	}{{"png", pngBuf.Bytes()}, {"jpeg", jpgBuf.Bytes()}, {"colour png", colBuf.Bytes()}} {
		img, _, err := image.Decode(bytes.NewReader(enc.b))
		if err != nil {
			t.Fatal(err)
		}
		if _, isGray := img.(*image.Gray); isGray == (enc.name == "colour png") {
			t.Fatalf("%s decodes to %T", enc.name, img)
		}
		h, w := img.Bounds().Dy(), img.Bounds().Dx()
		rgb := make([]uint8, 0, h*w*3) // the decoded image as RGB bytes
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
				rgb = append(rgb, c.R, c.G, c.B)
			}
		}
		for _, p := range []*Preprocess{
			{H: 31, W: 17, C: 3, Resize: "exact", Scale: 1.0 / 255, Mean: []float32{0.4, 0.5, 0.6}, Std: []float32{0.2, 0.3, 0.25}},
			{H: 5, W: 6, C: 3, Resize: "exact", Scale: 1},
			{H: 7, W: 7, C: 3, Resize: "shorter", ResizeTo: 8, Scale: 2, Mean: []float32{1, 2, 3}},
			{H: 9, W: 13, C: 3, Resize: "none", Scale: 1, Std: []float32{3, 5, 7}},
		} {
			name := fmt.Sprintf("%s %dx%d %s", enc.name, p.W, p.H, p.Resize)
			want := make([]uint8, p.Len())
			switch p.Resize {
			case "shorter": // 9×13 to 8×11 (shorter side 8, 11 = ⌊13·8/9⌋ as torchvision), then the center 7×7
				tmp := make([]uint8, 8*11*3)
				resizePixelLoop(tmp, rgb, h, w, 8, 11, 3)
				for y := 0; y < 7; y++ {
					copy(want[y*7*3:(y+1)*7*3], tmp[((y)*11+2)*3:])
				}
			case "none":
				copy(want, rgb)
			default:
				resizePixelLoop(want, rgb, h, w, p.H, p.W, 3)
			}
			got := make([]uint8, p.Len())
			if err := p.Pixels(got, ImageValue{Encoded: enc.b}, Shape{}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s: Pixels differ from the RGB path", name)
			}
			in := make([]float32, p.Len())
			if err := p.Input(in, make([]uint8, p.Len()), ImageValue{Encoded: enc.b}, Shape{}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for i, v := range want {
				c := i % 3
				mean, std := float32(0), float32(1)
				if p.Mean != nil {
					mean = p.Mean[c]
				}
				if p.Std != nil {
					std = p.Std[c]
				}
				if wv := float32(v)*(p.Scale/std) + (-mean / std); in[i] != wv {
					t.Fatalf("%s: input[%d] = %g, want %g", name, i, in[i], wv)
				}
			}
		}
	}
}

// BenchmarkInputMNISTToImageNet: one MNIST-sized gray PNG to
// nin-imagenet's float input (decode, resize, normalize), as run does it.
func BenchmarkInputMNISTToImageNet(b *testing.B) {
	g := image.NewGray(image.Rect(0, 0, 28, 28))
	for i := range g.Pix {
		g.Pix[i] = uint8(i * 7)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, g); err != nil {
		b.Fatal(err)
	}
	p := &Preprocess{H: 224, W: 224, C: 3, Resize: "exact", Scale: 1.0 / 255, Mean: []float32{0.485, 0.456, 0.406}, Std: []float32{0.229, 0.224, 0.225}}
	dst, scratch := make([]float32, p.Len()), make([]uint8, p.Len())
	for b.Loop() {
		if err := p.Input(dst, scratch, ImageValue{Encoded: buf.Bytes()}, Shape{}); err != nil {
			b.Fatal(err)
		}
	}
}
