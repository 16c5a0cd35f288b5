package nbio

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// IDX is a decoded MNIST idx file: unsigned bytes with a shape.
type IDX struct {
	Dims []int
	Data []byte
}

// maxIDXBytes bounds what a (possibly hostile) idx header may ask for.
const maxIDXBytes = 1 << 31

// ReadIDXFile reads an idx file (raw or gzip-compressed, detected from its
// magic bytes) holding unsigned bytes (type 0x08).
func ReadIDXFile(path string) (*IDX, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	idx, err := ReadIDX(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return idx, nil
}

// ReadIDX decodes an uncompressed idx stream of unsigned bytes.
func ReadIDX(r io.Reader) (*IDX, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading idx magic: %w", err)
	}
	if hdr[0] != 0 || hdr[1] != 0 {
		return nil, fmt.Errorf("not an idx file (magic % x)", hdr)
	}
	if hdr[2] != 0x08 {
		return nil, fmt.Errorf("idx element type 0x%02x: only unsigned bytes (0x08) are supported", hdr[2])
	}
	nd := int(hdr[3])
	if nd < 1 || nd > 4 {
		return nil, fmt.Errorf("idx has %d dimensions: want 1..4", nd)
	}
	dims := make([]int, nd)
	total := 1
	for i := range dims {
		var d uint32
		if err := binary.Read(r, binary.BigEndian, &d); err != nil {
			return nil, fmt.Errorf("reading idx dimensions: %w", err)
		}
		dims[i] = int(d)
		if d == 0 || total > maxIDXBytes/int(d) {
			return nil, fmt.Errorf("idx dimensions %v are empty or too large", dims[:i+1])
		}
		total *= int(d)
	}
	data := make([]byte, total)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("idx data: expected %d bytes: %w", total, err)
	}
	return &IDX{Dims: dims, Data: data}, nil
}
