package nbio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif"  // register GIF
	_ "image/jpeg" // register JPEG
	_ "image/png"  // register PNG

	_ "golang.org/x/image/bmp"  // register BMP
	_ "golang.org/x/image/tiff" // register TIFF
	_ "golang.org/x/image/webp" // register WebP
)

// MaxImagePixels bounds the decoded size of one image (a decompression
// bomb gets an error, not 40 GB of RAM): 100 megapixels by default.
var MaxImagePixels int64 = 100 << 20

// ErrUnsupported marks bytes that are not an image format ninbatch reads.
var ErrUnsupported = errors.New("unsupported image format (want PNG, JPEG, GIF, BMP, TIFF or WebP)")

// DecodeImage decodes PNG, JPEG, GIF, BMP, TIFF or WebP bytes into HWC uint8
// pixels with c channels (1: luma, 3: RGB), applying the EXIF orientation
// of a JPEG. It checks the declared size before decoding.
func DecodeImage(b []byte, c int) (pix []uint8, h, w int, err error) {
	pix, h, w, pc, err := decodeImage(b, c)
	if err != nil || pc == c {
		return pix, h, w, err
	}
	rgb := make([]uint8, 3*len(pix))
	copy(rgb, pix)
	expandGray(rgb)
	return rgb, h, w, nil
}

// decodeImage is DecodeImage, except that a gray image asked for as RGB
// comes back with one channel (pc = 1, else pc = c): resizing it once
// instead of three times gives the same pixels, and the caller expands it
// at the end (expandGray, or Preprocess.normalizeGray).
func decodeImage(b []byte, c int) (pix []uint8, h, w, pc int, err error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return nil, 0, 0, 0, ErrUnsupported
		}
		return nil, 0, 0, 0, fmt.Errorf("corrupt image header: %w", err)
	}
	if cfg.Width < 1 || cfg.Height < 1 || int64(cfg.Width)*int64(cfg.Height) > MaxImagePixels {
		return nil, 0, 0, 0, fmt.Errorf("%s image of %dx%d pixels is empty or larger than the %d pixel limit", format, cfg.Width, cfg.Height, MaxImagePixels)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, 0, 0, 0, fmt.Errorf("corrupt %s image: %w", format, err)
	}
	pc = c
	if _, gray := img.(*image.Gray); gray {
		pc = 1
	}
	pix, h, w = toHWC(img, pc)
	if format == "jpeg" {
		if o := jpegOrientation(b); o > 1 {
			pix, h, w = orient(pix, h, w, pc, o)
		}
	}
	return pix, h, w, pc, nil
}

// toHWC converts any image to HWC uint8 with c = 1 (ITU-R 601 luma, as
// PIL's convert("L")) or 3 (RGB, alpha dropped without compositing, as
// PIL's convert("RGB")).
func toHWC(img image.Image, c int) ([]uint8, int, int) {
	b := img.Bounds()
	h, w := b.Dy(), b.Dx()
	pix := make([]uint8, h*w*c)
	luma := func(r, g, bl uint32) uint8 { return uint8((r*299 + g*587 + bl*114 + 500) / 1000) }
	switch im := img.(type) {
	case *image.Gray:
		if c == 1 { // decodeImage leaves gray images gray
			for y := 0; y < h; y++ {
				copy(pix[y*w:], im.Pix[y*im.Stride:y*im.Stride+w])
			}
			return pix, h, w
		}
	case *image.YCbCr:
		if c == 1 { // the Y plane is the luma
			for y := 0; y < h; y++ {
				copy(pix[y*w:], im.Y[y*im.YStride:y*im.YStride+w])
			}
			return pix, h, w
		}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			n := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
			if c == 1 {
				pix[y*w+x] = luma(uint32(n.R), uint32(n.G), uint32(n.B))
			} else {
				i := (y*w + x) * 3
				pix[i], pix[i+1], pix[i+2] = n.R, n.G, n.B
			}
		}
	}
	return pix, h, w
}

// jpegOrientation returns the EXIF Orientation (1..8) of a JPEG, or 0.
func jpegOrientation(b []byte) int {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 0
	}
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xFF {
			return 0
		}
		marker := b[i+1]
		if marker == 0xDA || marker == 0xD9 { // start of scan / end: no EXIF before the data
			return 0
		}
		n := int(binary.BigEndian.Uint16(b[i+2:]))
		if n < 2 || i+2+n > len(b) {
			return 0
		}
		seg := b[i+4 : i+2+n]
		if marker == 0xE1 && len(seg) > 14 && string(seg[:6]) == "Exif\x00\x00" {
			return exifOrientation(seg[6:])
		}
		i += 2 + n
	}
	return 0
}

func exifOrientation(t []byte) int {
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	off := int(bo.Uint32(t[4:]))
	if off < 8 || off+2 > len(t) {
		return 0
	}
	n := int(bo.Uint16(t[off:]))
	for k := 0; k < n; k++ {
		e := off + 2 + 12*k
		if e+12 > len(t) {
			return 0
		}
		if bo.Uint16(t[e:]) == 0x0112 {
			v := int(bo.Uint16(t[e+8:]))
			if v >= 1 && v <= 8 {
				return v
			}
			return 0
		}
	}
	return 0
}

// orient applies an EXIF orientation (2..8) to HWC pixels.
func orient(pix []uint8, h, w, c, o int) ([]uint8, int, int) {
	oh, ow := h, w
	if o >= 5 {
		oh, ow = w, h
	}
	out := make([]uint8, len(pix))
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			var sy, sx int // source pixel of output (y, x)
			switch o {
			case 2:
				sy, sx = y, w-1-x
			case 3:
				sy, sx = h-1-y, w-1-x
			case 4:
				sy, sx = h-1-y, x
			case 5:
				sy, sx = x, y
			case 6:
				sy, sx = h-1-x, y
			case 7:
				sy, sx = h-1-x, w-1-y
			case 8:
				sy, sx = x, w-1-y
			default:
				sy, sx = y, x
			}
			copy(out[(y*ow+x)*c:(y*ow+x+1)*c], pix[(sy*w+sx)*c:(sy*w+sx+1)*c])
		}
	}
	return out, oh, ow
}
