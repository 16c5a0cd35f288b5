package nbio

import (
	"io"
	"sync"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/klauspost/compress/zstd"
)

// Parquet pages are compressed one at a time with zstd's EncodeAll, and a
// page is about 1 MiB (the writer's data page size). arrow-go's codec
// builds its encoders with zstd's default 8 MiB window, so each pooled
// encoder allocates a 16 MiB history buffer, and a row-group flush, which
// compresses every column's pages, put a 16-30 MiB spike on the heap
// (measured with a heap profile at a flush). A window of 1 MiB covers a
// whole page, so the output is the same size or within a byte or two, and
// the encoder history shrinks to about 1.1 MiB.
//
// ninbatch therefore registers this codec for zstd at init. Decoding and
// the streaming API go to arrow-go's own codec unchanged.

const zstdWindow = 1 << 20

type pageZstd struct {
	base  compress.Codec
	mu    sync.Mutex
	pools map[zstd.EncoderLevel]*sync.Pool
}

func init() {
	base, err := compress.GetCodec(compress.Codecs.Zstd)
	_, streams := base.(compress.StreamingCodec)
	if err != nil || !streams { // arrow-go's zstd codec streams; keep it as it is if not
		return
	}
	compress.RegisterCodec(compress.Codecs.Zstd, &pageZstd{base: base, pools: map[zstd.EncoderLevel]*sync.Pool{}})
}

func (z *pageZstd) pool(level zstd.EncoderLevel) *sync.Pool {
	z.mu.Lock()
	defer z.mu.Unlock()
	p, ok := z.pools[level]
	if !ok {
		p = &sync.Pool{New: func() any {
			enc, err := zstd.NewWriter(nil, zstd.WithZeroFrames(true), zstd.WithEncoderLevel(level),
				zstd.WithEncoderConcurrency(1), zstd.WithAllLitEntropyCompression(true),
				zstd.WithWindowSize(zstdWindow))
			if err != nil { // only on invalid options, which are constants here
				return nil
			}
			return enc
		}}
		z.pools[level] = p
	}
	return p
}

func (z *pageZstd) Encode(dst, src []byte) []byte {
	return z.EncodeLevel(dst, src, compress.DefaultCompressionLevel)
}

func (z *pageZstd) EncodeLevel(dst, src []byte, level int) []byte {
	lv := zstd.SpeedDefault
	if level != compress.DefaultCompressionLevel {
		lv = zstd.EncoderLevelFromZstd(level)
	}
	p := z.pool(lv)
	enc, _ := p.Get().(*zstd.Encoder)
	if enc == nil {
		return z.base.EncodeLevel(dst, src, level)
	}
	out := enc.EncodeAll(src, dst[:0])
	p.Put(enc)
	return out
}

func (z *pageZstd) CompressBound(n int64) int64 { return z.base.CompressBound(n) }

func (z *pageZstd) Decode(dst, src []byte) []byte { return z.base.Decode(dst, src) }

func (z *pageZstd) DecodeWithError(dst, src []byte) ([]byte, error) {
	return compress.Decode(z.base, dst, src)
}

func (z *pageZstd) NewReader(r io.Reader) io.ReadCloser {
	return z.base.(compress.StreamingCodec).NewReader(r)
}

func (z *pageZstd) NewWriter(w io.Writer) io.WriteCloser {
	return z.base.(compress.StreamingCodec).NewWriter(w)
}

func (z *pageZstd) NewWriterLevel(w io.Writer, level int) (io.WriteCloser, error) {
	return z.base.(compress.StreamingCodec).NewWriterLevel(w, level)
}
