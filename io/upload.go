package nbio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// ErrObjectExists is a conditional create that found the object there
// already: another run committed it first.
var ErrObjectExists = errors.New("the object exists already (another run committed it)")

// ObjectSink streams one object to a store; nothing is visible until
// Commit, and Abort (or a failed Commit) leaves nothing behind: no object,
// no unfinished multipart upload.
type ObjectSink interface {
	io.Writer
	// Commit creates the object only if none exists (If-None-Match: *),
	// returning its ETag, or ErrObjectExists.
	Commit() (etag string, err error)
	Abort()
}

// UploadPartBytes is the multipart part size for S3 outputs (default 8
// MiB; NINBATCH_S3_PART_BYTES overrides; AWS wants ≥ 5 MiB except the
// last). Two parts are in memory per output: one filling, one in flight.
func UploadPartBytes() int {
	if v, err := strconv.Atoi(os.Getenv("NINBATCH_S3_PART_BYTES")); err == nil && v >= 1<<10 {
		return v
	}
	return 8 << 20
}

// CreateObject starts a conditional upload of the object at u.
func CreateObject(ctx context.Context, u ObjectURL, meta map[string]string) (ObjectSink, error) {
	b, err := OpenBucket(ctx, u)
	if err != nil {
		return nil, err
	}
	if c := s3Client(u.Bucket); c != nil {
		host, _, _ := strings.Cut(strings.TrimPrefix(u.Bucket, "s3://"), "?")
		return newS3Upload(ctx, c, host, u.Key, meta), nil
	}
	ctx, cancel := context.WithCancel(ctx)
	w, err := b.NewWriter(ctx, u.Key, &blob.WriterOptions{IfNotExist: true, Metadata: meta, ContentType: "application/vnd.apache.parquet"})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("creating %s: %w", u, err)
	}
	return &blobSink{w: w, b: b, key: u.Key, cancel: cancel, name: u.String()}, nil
}

// blobSink is gocloud's writer (GCS, Azure): a cancelled context aborts it.
type blobSink struct {
	w      *blob.Writer
	b      *blob.Bucket
	key    string
	name   string
	cancel context.CancelFunc
}

func (s *blobSink) Write(p []byte) (int, error) { return s.w.Write(p) }

func (s *blobSink) Commit() (string, error) {
	defer s.cancel()
	if err := s.w.Close(); err != nil {
		if gcerrors.Code(err) == gcerrors.FailedPrecondition {
			return "", ErrObjectExists
		}
		return "", fmt.Errorf("uploading %s: %w", s.name, err)
	}
	a, err := s.b.Attributes(context.Background(), s.key)
	if err != nil {
		return "", fmt.Errorf("uploading %s: %w", s.name, err)
	}
	return a.ETag, nil
}

func (s *blobSink) Abort() {
	s.cancel()
	s.w.Close()
}

// s3Upload is a multipart upload with one part in flight while the next
// fills; an object smaller than a part goes up as one PutObject. Both
// carry If-None-Match: * (S3 honours it on PutObject and on
// CompleteMultipartUpload).
type s3Upload struct {
	ctx    context.Context
	c      *s3.Client
	bucket string
	key    string
	meta   map[string]string
	part   int

	buf      []byte
	id       string // upload id once started
	parts    []types.CompletedPart
	inflight sync.WaitGroup
	sent     int32   // parts sent; the last may be in flight
	etag     *string // of the part in flight, once it is up
	err      error   // of the part in flight
	done     bool
}

func newS3Upload(ctx context.Context, c *s3.Client, bucket, key string, meta map[string]string) *s3Upload {
	return &s3Upload{ctx: ctx, c: c, bucket: bucket, key: key, meta: meta, part: UploadPartBytes()}
}

func (u *s3Upload) name() string { return "s3://" + u.bucket + "/" + u.key }

func (u *s3Upload) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if u.buf == nil {
			u.buf = make([]byte, 0, u.part)
		}
		k := min(len(p), u.part-len(u.buf))
		u.buf = append(u.buf, p[:k]...)
		p = p[k:]
		if len(u.buf) == u.part {
			if err := u.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// flush sends the full buffer as the next part, after the previous one.
func (u *s3Upload) flush() error {
	if err := u.settle(); err != nil {
		return err
	}
	if u.id == "" {
		out, err := u.c.CreateMultipartUpload(u.ctx, &s3.CreateMultipartUploadInput{Bucket: &u.bucket, Key: &u.key,
			Metadata: u.meta, ContentType: aws.String("application/vnd.apache.parquet")})
		if err != nil {
			return fmt.Errorf("uploading %s: %w", u.name(), err)
		}
		u.id = *out.UploadId
	}
	u.sent++
	body, num := u.buf, u.sent
	u.buf = nil
	u.inflight.Add(1)
	go func() {
		defer u.inflight.Done()
		out, err := u.c.UploadPart(u.ctx, &s3.UploadPartInput{Bucket: &u.bucket, Key: &u.key, UploadId: &u.id,
			PartNumber: aws.Int32(num), Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))})
		if err != nil {
			u.err = fmt.Errorf("uploading %s part %d: %w", u.name(), num, err)
			return
		}
		u.etag = out.ETag
	}()
	return nil
}

// settle waits for the part in flight and records it.
func (u *s3Upload) settle() error {
	u.inflight.Wait()
	if u.err != nil {
		return u.err
	}
	if int32(len(u.parts)) < u.sent {
		u.parts = append(u.parts, types.CompletedPart{PartNumber: aws.Int32(u.sent), ETag: u.etag})
	}
	return nil
}

func (u *s3Upload) Commit() (etag string, err error) {
	if u.done {
		return "", errors.New("commit after commit or abort")
	}
	defer func() {
		if err != nil && !errors.Is(err, ErrObjectExists) {
			u.abort()
		}
		u.done = true
	}()
	if u.id == "" { // small: one request
		out, err := u.c.PutObject(u.ctx, &s3.PutObjectInput{Bucket: &u.bucket, Key: &u.key, Body: bytes.NewReader(u.buf),
			ContentLength: aws.Int64(int64(len(u.buf))), Metadata: u.meta, IfNoneMatch: aws.String("*"),
			ContentType: aws.String("application/vnd.apache.parquet")})
		if err != nil {
			return "", u.condErr(err)
		}
		return aws.ToString(out.ETag), nil
	}
	if len(u.buf) > 0 {
		if err := u.flush(); err != nil {
			return "", err
		}
	}
	if err := u.settle(); err != nil {
		return "", err
	}
	out, err := u.c.CompleteMultipartUpload(u.ctx, &s3.CompleteMultipartUploadInput{Bucket: &u.bucket, Key: &u.key,
		UploadId: &u.id, IfNoneMatch: aws.String("*"), MultipartUpload: &types.CompletedMultipartUpload{Parts: u.parts}})
	if err != nil {
		if err = u.condErr(err); errors.Is(err, ErrObjectExists) {
			u.abort() // S3 keeps the upload after a failed precondition
		}
		return "", err
	}
	// record the ETag a HEAD reports, which later checks compare with
	// (some S3-compatible stores answer Complete with another form)
	if h, err := u.c.HeadObject(u.ctx, &s3.HeadObjectInput{Bucket: &u.bucket, Key: &u.key}); err == nil {
		return aws.ToString(h.ETag), nil
	}
	return aws.ToString(out.ETag), nil
}

// noUploads: some S3-compatible stores answer an empty upload listing
// with NoSuchUpload.
func noUploads(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload"
}

// condErr maps a failed If-None-Match to ErrObjectExists.
func (u *s3Upload) condErr(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "PreconditionFailed" || ae.ErrorCode() == "ConditionalRequestConflict") {
		return ErrObjectExists
	}
	return fmt.Errorf("uploading %s: %w", u.name(), err)
}

func (u *s3Upload) Abort() {
	if u.done {
		return
	}
	u.done = true
	u.abort()
}

func (u *s3Upload) abort() {
	u.inflight.Wait()
	if u.id != "" {
		// a fresh context: the run's may be the one that was cancelled
		u.c.AbortMultipartUpload(context.Background(), &s3.AbortMultipartUploadInput{Bucket: &u.bucket, Key: &u.key, UploadId: &u.id})
		u.id = ""
	}
	u.buf = nil
}

// AbortUploads aborts the unfinished multipart uploads of exactly the key
// u (a killed run's), returning how many; stores other than S3 keep no
// visible partial uploads.
func AbortUploads(ctx context.Context, u ObjectURL) (int, error) {
	if _, err := OpenBucket(ctx, u); err != nil {
		return 0, err
	}
	c := s3Client(u.Bucket)
	if c == nil {
		return 0, nil
	}
	host, _, _ := strings.Cut(strings.TrimPrefix(u.Bucket, "s3://"), "?")
	n := 0
	in := &s3.ListMultipartUploadsInput{Bucket: &host, Prefix: &u.Key}
	for {
		out, err := c.ListMultipartUploads(ctx, in)
		if noUploads(err) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("listing unfinished uploads of %s: %w", u, err)
		}
		for _, up := range out.Uploads {
			if aws.ToString(up.Key) != u.Key {
				continue
			}
			if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &host, Key: up.Key, UploadId: up.UploadId}); err != nil {
				return n, fmt.Errorf("aborting an unfinished upload of %s: %w", u, err)
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// ListUploads lists the keys below prefix u with unfinished multipart
// uploads (S3 only).
func ListUploads(ctx context.Context, u ObjectURL) ([]string, error) {
	if _, err := OpenBucket(ctx, u); err != nil {
		return nil, err
	}
	c := s3Client(u.Bucket)
	if c == nil {
		return nil, nil
	}
	host, _, _ := strings.Cut(strings.TrimPrefix(u.Bucket, "s3://"), "?")
	var keys []string
	in := &s3.ListMultipartUploadsInput{Bucket: &host, Prefix: &u.Key}
	for {
		out, err := c.ListMultipartUploads(ctx, in)
		if noUploads(err) {
			return keys, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing unfinished uploads of %s: %w", u, err)
		}
		for _, up := range out.Uploads {
			keys = append(keys, aws.ToString(up.Key))
		}
		if !aws.ToBool(out.IsTruncated) {
			return keys, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// PutObject writes a small object (a manifest record) unconditionally.
func PutObject(ctx context.Context, u ObjectURL, b []byte) error {
	bk, err := OpenBucket(ctx, u)
	if err != nil {
		return err
	}
	if err := bk.WriteAll(ctx, u.Key, b, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("writing %s: %w", u, err)
	}
	return nil
}

// DeleteObject removes an object; a missing one is no error.
func DeleteObject(ctx context.Context, u ObjectURL) error {
	bk, err := OpenBucket(ctx, u)
	if err != nil {
		return err
	}
	if err := bk.Delete(ctx, u.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("removing %s: %w", u, err)
	}
	return nil
}
