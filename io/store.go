package nbio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // az://
	_ "gocloud.dev/blob/gcsblob"   // gs://
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"
)

// Object-store paths are URLs: s3://bucket/key, gs://bucket/key and
// az://container/key, all through gocloud.dev/blob, so one code path
// serves every store. file:///abs/path is a local path (LocalPath): it
// keeps the local semantics of rename and flock. S3 credentials, region and
// endpoint come from the AWS SDK's standard chain (AWS_* variables,
// ~/.aws profiles, web identity / IRSA, instance roles); an S3-compatible
// store is reached through AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL and
// then addressed path-style (MinIO, Ceph RGW, SeaweedFS, R2 all take it).

// IsURL reports whether p names an object in a store rather than a local path.
func IsURL(p string) bool {
	for _, s := range []string{"s3://", "gs://", "az://"} {
		if strings.HasPrefix(p, s) {
			return true
		}
	}
	return false
}

// LocalPath turns a file:// URL into the local path it names; anything
// else is returned as is.
func LocalPath(p string) (string, error) {
	if !strings.HasPrefix(p, "file://") {
		return p, nil
	}
	u, err := url.Parse(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	if (u.Host != "" && u.Host != "localhost") || u.Path == "" {
		return "", fmt.Errorf("%s: a file URL names a local absolute path (file:///dir/file)", p)
	}
	return u.Path, nil
}

// ObjectURL is a parsed store URL: the bucket's URL (scheme, bucket and
// any query options) and the key inside it.
type ObjectURL struct {
	Bucket string // e.g. s3://my-bucket (with ?options when given)
	Key    string // slash-separated, no leading slash ("" = the bucket's root)
}

func (u ObjectURL) String() string {
	b, q, _ := strings.Cut(u.Bucket, "?")
	s := b + "/" + u.Key
	if q != "" {
		s += "?" + q
	}
	return s
}

// Join is the URL of key below u (u a prefix).
func (u ObjectURL) Join(rel string) ObjectURL {
	k := strings.TrimSuffix(u.Key, "/")
	if k != "" {
		k += "/"
	}
	return ObjectURL{Bucket: u.Bucket, Key: k + strings.TrimPrefix(rel, "/")}
}

// ParseObjectURL splits a store URL into bucket and key.
func ParseObjectURL(s string) (ObjectURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return ObjectURL{}, fmt.Errorf("%s: %w", s, err)
	}
	switch u.Scheme {
	case "s3", "gs", "az":
		if u.Host == "" {
			return ObjectURL{}, fmt.Errorf("%s: no bucket name (want %s://bucket/key)", s, u.Scheme)
		}
		b := u.Scheme + "://" + u.Host
		if u.RawQuery != "" {
			b += "?" + u.RawQuery
		}
		return ObjectURL{Bucket: b, Key: strings.TrimPrefix(u.Path, "/")}, nil
	}
	return ObjectURL{}, fmt.Errorf("%s: unsupported URL scheme %q (want s3, gs or az)", s, u.Scheme)
}

var buckets struct {
	sync.Mutex
	open map[string]*blob.Bucket
	s3   map[string]*s3.Client // the clients of s3:// buckets, for multipart uploads
}

// s3Client is the client of an opened s3:// bucket, or nil.
func s3Client(bucketURL string) *s3.Client {
	buckets.Lock()
	defer buckets.Unlock()
	return buckets.s3[bucketURL]
}

// OpenBucket returns the (shared, cached) bucket of u.
func OpenBucket(ctx context.Context, u ObjectURL) (*blob.Bucket, error) {
	buckets.Lock()
	defer buckets.Unlock()
	if b := buckets.open[u.Bucket]; b != nil {
		return b, nil
	}
	var b *blob.Bucket
	var err error
	if strings.HasPrefix(u.Bucket, "s3://") {
		var c *s3.Client
		b, c, err = openS3(ctx, u.Bucket)
		if err == nil {
			if buckets.s3 == nil {
				buckets.s3 = map[string]*s3.Client{}
			}
			buckets.s3[u.Bucket] = c
		}
	} else {
		b, err = blob.OpenBucket(ctx, u.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", u.Bucket, err)
	}
	if buckets.open == nil {
		buckets.open = map[string]*blob.Bucket{}
	}
	buckets.open[u.Bucket] = b
	return b, nil
}

// S3Endpoint is an S3-compatible endpoint set by a flag; it overrides
// AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL.
var S3Endpoint string

// openS3 builds the S3 client from the SDK's default chain: more retries
// than the SDK's 3 (a nightly job should ride out a store's bad minute),
// path-style addressing and only required checksums on custom endpoints.
func openS3(ctx context.Context, bucketURL string) (*blob.Bucket, *s3.Client, error) {
	u, err := url.Parse(bucketURL)
	if err != nil {
		return nil, nil, err
	}
	endpoint := S3Endpoint
	for _, v := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		if endpoint == "" {
			endpoint = os.Getenv(v)
		}
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 8
				o.MaxBackoff = 20 * time.Second
			})
		}),
	}
	if endpoint != "" {
		opts = append(opts,
			config.WithBaseEndpoint(endpoint),
			config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
			config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired))
	}
	if r := u.Query().Get("region"); r != "" {
		opts = append(opts, config.WithRegion(r))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // S3-compatible stores ignore it; the signature needs one
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = endpoint != "" || u.Query().Get("use_path_style") == "true"
	})
	b, err := s3blob.OpenBucketV2(ctx, client, u.Host, &s3blob.Options{RequestChecksumCalculation: cfg.RequestChecksumCalculation})
	return b, client, err
}

// StoreError is a store that stayed unreachable or refused through every
// retry: the run stops (exit 1, rerun later) instead of recording the
// input as bad.
type StoreError struct{ Err error }

func (e *StoreError) Error() string {
	return e.Err.Error() + " (the store failed; rerun when it is back)"
}
func (e *StoreError) Unwrap() error { return e.Err }

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Size    int64
	ModTime time.Time
	ETag    string // "" where the store has none (local files)
}

// StatInput describes an input, local or in a store; a missing one gives
// an error satisfying errors.Is(err, fs.ErrNotExist).
func StatInput(p string) (ObjectInfo, error) {
	if !IsURL(p) {
		st, err := os.Stat(p)
		if err != nil {
			return ObjectInfo{}, err
		}
		return ObjectInfo{Size: st.Size(), ModTime: st.ModTime()}, nil
	}
	ctx := context.Background()
	u, err := ParseObjectURL(p)
	if err != nil {
		return ObjectInfo{}, err
	}
	b, err := OpenBucket(ctx, u)
	if err != nil {
		return ObjectInfo{}, err
	}
	a, err := b.Attributes(ctx, u.Key)
	if err != nil {
		return ObjectInfo{}, storeErr(p, err)
	}
	return ObjectInfo{Size: a.Size, ModTime: a.ModTime, ETag: a.ETag}, nil
}

// storeErr maps a store's not-found to fs.ErrNotExist and names the object.
func storeErr(p string, err error) error {
	if gcerrors.Code(err) == gcerrors.NotFound {
		return &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	return &StoreError{fmt.Errorf("%s: %w", p, err)}
}

// InputReader is an opened input: random access for Parquet footers and
// column chunks, sequential reads for Arrow streams.
type InputReader interface {
	io.ReaderAt
	io.ReadSeeker
	io.Closer
	Size() int64
}

type localInput struct{ *os.File }

func (f localInput) Size() int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// OpenInput opens a local file or a stored object for reading.
func OpenInput(p string) (InputReader, error) {
	if !IsURL(p) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		if st, err := f.Stat(); err == nil && st.IsDir() {
			f.Close()
			return nil, fmt.Errorf("%s is a directory", p)
		}
		return localInput{f}, nil
	}
	ctx := context.Background()
	u, err := ParseObjectURL(p)
	if err != nil {
		return nil, err
	}
	b, err := OpenBucket(ctx, u)
	if err != nil {
		return nil, err
	}
	a, err := b.Attributes(ctx, u.Key)
	if err != nil {
		return nil, storeErr(p, err)
	}
	return newRemoteFile(b, u.Key, p, a.Size, a.ETag), nil
}

// ReadObject reads a whole (small) object or local file: a model, a spec.
func ReadObject(p string, limit int64) ([]byte, error) {
	r, err := OpenInput(p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", p, r.Size(), limit)
	}
	return io.ReadAll(io.LimitReader(r, limit+1))
}

// ListObjects lists the objects below prefix u (recursive: every level;
// otherwise only direct children), sorted by key, as full URLs; subdirs
// reports common prefixes skipped by a non-recursive listing.
func ListObjects(ctx context.Context, u ObjectURL, recursive bool) (keys []string, subdirs bool, err error) {
	b, err := OpenBucket(ctx, u)
	if err != nil {
		return nil, false, err
	}
	prefix := strings.TrimSuffix(u.Key, "/")
	if prefix != "" {
		prefix += "/"
	}
	opt := &blob.ListOptions{Prefix: prefix}
	if !recursive {
		opt.Delimiter = "/"
	}
	it := b.List(opt)
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("listing %s: %w", u, err)
		}
		if o.IsDir {
			subdirs = true
			continue
		}
		keys = append(keys, o.Key)
	}
	return keys, subdirs, nil
}

// expandURL expands one store argument: an object, a prefix (its data
// files) or a glob over keys (a pattern in the last segments).
func expandURL(a string, opt ExpandOptions, add func(p, rel, root string) error) error {
	ctx := context.Background()
	u, err := ParseObjectURL(a)
	if err != nil {
		return err
	}
	if strings.ContainsAny(u.Key, "*?[") {
		fixed := globRoot(u.Key)
		if fixed == "." {
			fixed = ""
		}
		root := ObjectURL{Bucket: u.Bucket, Key: fixed}
		keys, _, err := ListObjects(ctx, root, true)
		if err != nil {
			return err
		}
		n := 0
		for _, k := range keys {
			if ok, _ := path.Match(u.Key, k); !ok || strings.HasPrefix(path.Base(k), ".") {
				continue
			}
			n++
			if err := add(ObjectURL{Bucket: u.Bucket, Key: k}.String(), relKey(k, fixed), root.String()); err != nil {
				return err
			}
		}
		if n == 0 {
			return fmt.Errorf("input %s: no objects match", a)
		}
		return nil
	}
	if u.Key != "" && !strings.HasSuffix(u.Key, "/") {
		b, err := OpenBucket(ctx, u)
		if err != nil {
			return err
		}
		if ok, err := b.Exists(ctx, u.Key); err != nil {
			return storeErr(a, err)
		} else if ok {
			return add(a, path.Base(u.Key), ObjectURL{Bucket: u.Bucket, Key: path.Dir(u.Key)}.String())
		}
	}
	keys, subdirs, err := ListObjects(ctx, u, opt.Recursive)
	if err != nil {
		return err
	}
	fixed := strings.TrimSuffix(u.Key, "/")
	n := 0
	for _, k := range keys {
		if !isDataFile(path.Base(k)) || hiddenBelow(k, fixed) || excluded(u.Bucket, k, opt.Exclude) {
			continue
		}
		n++
		if err := add(ObjectURL{Bucket: u.Bucket, Key: k}.String(), relKey(k, fixed), ObjectURL{Bucket: u.Bucket, Key: fixed}.String()); err != nil {
			return err
		}
	}
	if n == 0 {
		if len(keys) == 0 && !subdirs {
			return &fs.PathError{Op: "input", Path: a, Err: fs.ErrNotExist}
		}
		if subdirs && !opt.Recursive {
			return fmt.Errorf("prefix %s has no .parquet or .arrow objects, only sub-prefixes (a partitioned dataset?): pass --recursive", a)
		}
		return fmt.Errorf("prefix %s has no .parquet or .arrow objects", a)
	}
	return nil
}

func relKey(k, root string) string {
	if root == "" {
		return k
	}
	return strings.TrimPrefix(k, root+"/")
}

// hiddenBelow: a key under a "."- or "_"-prefixed folder below root
// (ninbatch's own state, _temporary) is never an input.
func hiddenBelow(k, root string) bool {
	for _, seg := range strings.Split(path.Dir(relKey(k, root)), "/") {
		if seg != "." && (strings.HasPrefix(seg, ".") || strings.HasPrefix(seg, "_")) {
			return true
		}
	}
	return false
}

// excluded: keys below an excluded URL prefix (the output).
func excluded(bucket, k string, exclude []string) bool {
	for _, e := range exclude {
		if !IsURL(e) {
			continue
		}
		if eu, err := ParseObjectURL(e); err == nil && eu.Bucket == bucket {
			p := strings.TrimSuffix(eu.Key, "/")
			if p == "" || k == p || strings.HasPrefix(k, p+"/") {
				return true
			}
		}
	}
	return false
}

// ---- reading stored objects ----

// Read-ahead for stored inputs: reads are served from blocks of
// remoteBlock bytes fetched by range GETs; after a read, the next
// remoteAhead blocks are fetched in the background, so a sequential scan
// of a column chunk never waits on the network once started. Blocks are
// cached per file by index (LRU of remoteCache), so the two or three
// column chunks a projection reads at once each keep their own window.
const (
	remoteBlock = 2 << 20
	remoteAhead = 3
	remoteCache = 8 // blocks: bounds each open object's memory (16 MiB)
)

type rblock struct {
	done chan struct{}
	data []byte
	err  error
	used int64 // LRU clock
}

type remoteFile struct {
	b    *blob.Bucket
	key  string
	name string
	size int64
	etag string

	mu      sync.Mutex
	failed  error // the first StoreError, whatever a reader made of it
	blocks  map[int64]*rblock
	clock   int64
	lastEnd int64      // where the last read ended (-1: none yet)
	ranges  [][2]int64 // declared scan ranges; nil: read ahead anywhere
	pos     int64
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newRemoteFile(b *blob.Bucket, key, name string, size int64, etag string) *remoteFile {
	ctx, cancel := context.WithCancel(context.Background())
	return &remoteFile{b: b, key: key, name: name, size: size, etag: etag, blocks: map[int64]*rblock{}, ctx: ctx, cancel: cancel, lastEnd: -1}
}

func (f *remoteFile) Size() int64 { return f.size }

// block returns block i, starting its fetch if needed; mu must be held.
func (f *remoteFile) block(i int64) *rblock {
	f.clock++
	if b := f.blocks[i]; b != nil {
		b.used = f.clock
		return b
	}
	for len(f.blocks) >= remoteCache { // evict the least recently used finished block
		var old int64 = -1
		for j, b := range f.blocks {
			select {
			case <-b.done:
			default:
				continue
			}
			if old < 0 || b.used < f.blocks[old].used {
				old = j
			}
		}
		if old < 0 {
			break // all in flight: go over the bound by one rather than wait under the lock
		}
		delete(f.blocks, old)
	}
	b := &rblock{done: make(chan struct{}), used: f.clock}
	f.blocks[i] = b
	off := i * remoteBlock
	n := min(int64(remoteBlock), f.size-off)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer close(b.done)
		b.data, b.err = f.fetch(off, n)
	}()
	return b
}

// fetch reads [off, off+n) with retries: the SDK retries failed requests,
// this retries a body cut off mid-transfer. The object must keep the ETag
// it had when opened (an input replaced while read fails, never mixes).
func (f *remoteFile) fetch(off, n int64) ([]byte, error) {
	buf := make([]byte, n)
	var err error
	wait := 200 * time.Millisecond
	for attempt := 0; attempt < 6; attempt++ {
		if attempt > 0 {
			select {
			case <-f.ctx.Done():
				return nil, f.ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
		var r *blob.Reader
		r, err = f.b.NewRangeReader(f.ctx, f.key, off, n, &blob.ReaderOptions{BeforeRead: f.ifMatch})
		if err != nil {
			if c := gcerrors.Code(err); c == gcerrors.NotFound || c == gcerrors.FailedPrecondition || c == gcerrors.PermissionDenied || f.ctx.Err() != nil {
				break
			}
			continue
		}
		_, err = io.ReadFull(r, buf)
		r.Close()
		if err == nil {
			return buf, nil
		}
		if f.ctx.Err() != nil {
			break
		}
	}
	if gcerrors.Code(err) == gcerrors.FailedPrecondition {
		return nil, fmt.Errorf("%s changed while it was read (its ETag is no longer %s)", f.name, f.etag)
	}
	err = fmt.Errorf("reading %s bytes %d..%d: %w", f.name, off, off+n, err)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, err // the input is gone: that unit fails, not the run
	}
	return nil, &StoreError{err}
}

func (f *remoteFile) ifMatch(as func(any) bool) error {
	var in *s3.GetObjectInput
	if f.etag != "" && as(&in) {
		in.IfMatch = aws.String(f.etag)
	}
	return nil
}

func (f *remoteFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), f.size-off)
	f.mu.Lock()
	scan := want >= 64<<10 || off == f.lastEnd
	_, cached := f.blocks[off/remoteBlock]
	f.lastEnd = off + want
	f.mu.Unlock()
	if !scan && !cached && (off+want-1)/remoteBlock == off/remoteBlock {
		// a probe (magic bytes, footer, a small chunk): just those bytes
		data, err := f.fetch(off, want)
		if err != nil {
			f.noteFailure(err)
			return 0, err
		}
		copy(p, data)
	} else if err := f.readBlocks(p[:want], off, scan); err != nil {
		return 0, err
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// readBlocks serves p from the blocks it spans, reading ahead on scans
// (within the ranges the reader declared, if it did).
func (f *remoteFile) readBlocks(p []byte, off int64, scan bool) error {
	want, done := int64(len(p)), int64(0)
	for done < want {
		i := (off + done) / remoteBlock
		f.mu.Lock()
		b := f.block(i)
		last := (off + want - 1) / remoteBlock
		if scan {
			last += remoteAhead
		}
		for j := i + 1; j <= min(last, (f.size-1)/remoteBlock); j++ {
			if f.wanted(j) {
				f.block(j)
			}
		}
		f.mu.Unlock()
		<-b.done
		if b.err != nil {
			f.noteFailure(b.err)
			f.mu.Lock()
			if f.blocks[i] == b {
				delete(f.blocks, i) // a later read tries again
			}
			f.mu.Unlock()
			return b.err
		}
		done += int64(copy(p[done:], b.data[off+done-i*remoteBlock:]))
	}
	return nil
}

// wanted reports whether block j overlaps a declared read range (all do
// when none were declared); mu must be held.
func (f *remoteFile) wanted(j int64) bool {
	if f.ranges == nil {
		return true
	}
	lo, hi := j*remoteBlock, (j+1)*remoteBlock
	for _, r := range f.ranges {
		if r[0] < hi && r[1] > lo {
			return true
		}
	}
	return false
}

// SetReadRanges declares the byte ranges [start, end) a reader will scan
// (a unit's column chunks), so read-ahead stops at their ends.
func (f *remoteFile) SetReadRanges(r [][2]int64) {
	f.mu.Lock()
	f.ranges = r
	f.mu.Unlock()
}

func (f *remoteFile) noteFailure(err error) {
	var se *StoreError
	f.mu.Lock()
	if f.failed == nil && errors.As(err, &se) {
		f.failed = err
	}
	f.mu.Unlock()
}

func (f *remoteFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.pos)
	f.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *remoteFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += f.pos
	case io.SeekEnd:
		off += f.size
	default:
		return 0, errors.New("bad whence")
	}
	if off < 0 {
		return 0, errors.New("negative position")
	}
	f.pos = off
	return off, nil
}

func (f *remoteFile) Close() error {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	f.blocks = map[int64]*rblock{}
	f.mu.Unlock()
	return nil
}

// storeFailure is the store error behind a read failure of r, if any:
// Parquet and Arrow readers may report it as corrupt data.
func storeFailure(r any) error {
	f, ok := r.(*remoteFile)
	if !ok {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}
