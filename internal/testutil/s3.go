package testutil

import (
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// S3 is an S3-protocol server on 127.0.0.1 (gofakes3 over HTTP, objects in
// memory) that can be told to misbehave.
type S3 struct {
	URL     string
	Backend *s3mem.Backend
	srv     *httptest.Server

	mu       sync.Mutex
	faults   []fault
	commitMu sync.Mutex

	Requests atomic.Int64 // requests served (faults included)
	Bytes    atomic.Int64 // response body bytes served
}

type fault struct {
	match func(*http.Request) bool
	left  int    // requests still to fail
	how   string // "500" or "close"
}

// NewS3 starts the server with the given buckets; it stops with t.
func NewS3(t testing.TB, buckets ...string) *S3 {
	t.Helper()
	s := &S3{Backend: s3mem.New()}
	for _, b := range buckets {
		if err := s.Backend.CreateBucket(b); err != nil {
			t.Fatal(err)
		}
	}
	fake := gofakes3.New(s.Backend, gofakes3.WithIntegrityCheck(true), gofakes3.WithLogger(gofakes3.DiscardLog()))
	h := fake.Server()
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Requests.Add(1)
		if how := s.take(r); how != "" {
			if how == "close" {
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						c.(*net.TCPConn).SetLinger(0) // a reset, as from a dying proxy
						c.Close()
						return
					}
				}
			}
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>`))
			return
		}
		if m := r.Header.Get("If-Match"); m != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			// S3 answers 412 to a read whose If-Match names another version
			bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			if obj, err := s.Backend.HeadObject(bucket, key); err == nil && `"`+hex.EncodeToString(obj.Hash)+`"` != m {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusPreconditionFailed)
				w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`))
				return
			}
		}
		if r.Header.Get("If-None-Match") == "*" && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
			// S3 honours If-None-Match on CompleteMultipartUpload too;
			// gofakes3 only on PutObject: check here, one commit at a time
			s.commitMu.Lock()
			defer s.commitMu.Unlock()
			bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			if r.Method == http.MethodPost && r.URL.Query().Has("uploadId") {
				if _, err := s.Backend.HeadObject(bucket, key); err == nil {
					w.Header().Set("Content-Type", "application/xml")
					w.WriteHeader(http.StatusPreconditionFailed)
					w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`))
					return
				}
			}
		}
		h.ServeHTTP(countingWriter{w, &s.Bytes}, r)
	}))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// Fail makes the next n requests that match fail ("500": an InternalError
// answer; "close": the connection reset before any answer).
func (s *S3) Fail(n int, how string, match func(*http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, fault{match: match, left: n, how: how})
}

// Clear drops every injected failure not yet served.
func (s *S3) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Pending is the number of injected failures not yet served.
func (s *S3) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.faults {
		n += f.left
	}
	return n
}

func (s *S3) take(r *http.Request) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.faults {
		f := &s.faults[i]
		if f.left > 0 && f.match(r) {
			f.left--
			return f.how
		}
	}
	return ""
}

// RangeGets matches reads of part of an object (Parquet's footer and
// column chunks).
func RangeGets(r *http.Request) bool {
	return r.Method == http.MethodGet && r.Header.Get("Range") != ""
}

// KeyHas matches requests for keys containing sub.
func KeyHas(sub string) func(*http.Request) bool {
	return func(r *http.Request) bool { return strings.Contains(r.URL.Path, sub) }
}

// Env is the environment that points the AWS SDK at the server, with
// throwaway credentials and no profile or instance metadata lookups.
func (s *S3) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + s.URL,
		"AWS_ACCESS_KEY_ID=ninbatch-test",
		"AWS_SECRET_ACCESS_KEY=ninbatch-test-secret",
		"AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Download copies every object below prefix in bucket into dir (keys
// relative to prefix), for checks that read local files.
func (s *S3) Download(t testing.TB, bucket, prefix, dir string) []string {
	t.Helper()
	list, err := s.Backend.ListBucket(bucket, &gofakes3.Prefix{HasPrefix: true, Prefix: prefix}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range list.Contents {
		obj, err := s.Backend.GetObject(bucket, c.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(obj.Contents)
		obj.Contents.Close()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(c.Key, prefix)))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, c.Key)
	}
	return keys
}

// Uploads counts the unfinished multipart uploads in bucket (through the
// S3 API, as a lifecycle rule would see them).
func (s *S3) Uploads(t testing.TB, bucket string) int {
	t.Helper()
	resp, err := http.Get(s.URL + "/" + bucket + "?uploads")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("listing uploads: %d %v %s", resp.StatusCode, err, b)
	}
	return strings.Count(string(b), "<UploadId>")
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}
