package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	nbio "github.com/ninbatch/ninbatch/io"
)

// ManifestEntry records one unit of work (an input file, or a row-group
// range of a large one) in the output directory: finished, failed, or its
// output removed.
type ManifestEntry struct {
	Input        string  `json:"input"`                // absolute, symlinks resolved
	RowGroups    []int   `json:"row_groups,omitempty"` // nil: the whole file
	Size         int64   `json:"size"`
	MTime        string  `json:"mtime"`
	Fingerprint  string  `json:"fingerprint"`
	Output       string  `json:"output"` // path below the output directory, slash-separated
	OutputSize   int64   `json:"output_size,omitempty"`
	OutputSHA256 string  `json:"output_sha256,omitempty"`
	OutputETag   string  `json:"output_etag,omitempty"` // a store output's ETag when committed
	Status       string  `json:"status,omitempty"`      // "" (finished), "failed" or "removed"
	Error        string  `json:"error,omitempty"`       // why a failed unit failed
	RowsIn       int64   `json:"rows_in"`
	RowsOut      int64   `json:"rows_out"`
	RowsError    int64   `json:"rows_error"`
	RowsSkipped  int64   `json:"rows_skipped"`
	ModelID      string  `json:"model_id"`
	Columns      string  `json:"columns,omitempty"` // the output's score columns (RunConfig.columns)
	Version      string  `json:"ninbatch_version"`
	Finished     string  `json:"finished"`
	Shard        string  `json:"shard,omitempty"`
	Seconds      float64 `json:"seconds"`
}

// Done reports whether the entry records a committed output.
func (e ManifestEntry) Done() bool { return e.Status == "" }

// ManifestName is the manifest file a run appends to: one per shard, so
// concurrent shards never write the same file.
func ManifestName(shard, shards int) string {
	if shards == 0 {
		return "_ninbatch_manifest.jsonl"
	}
	return fmt.Sprintf("_ninbatch_manifest.shard-%d-of-%d.jsonl", shard, shards)
}

// ReadManifests reads every manifest in dir (all shards' too) and returns
// the latest entry per output. A torn last line (a crash mid-append) is
// ignored.
func ReadManifests(dir string) (map[string]ManifestEntry, error) {
	v := newManifestView(dir)
	if err := v.refresh(); err != nil {
		return nil, err
	}
	return v.latest, nil
}

// manifestView follows the manifests of an output directory as other runs
// append to them: refresh reads only what was added since the last call.
type manifestView struct {
	dir    string
	read   map[string]int64  // bytes of whole lines consumed, per manifest file
	etags  map[string]string // store: the version of each record read
	latest map[string]ManifestEntry
}

func newManifestView(dir string) *manifestView {
	return &manifestView{dir: dir, read: map[string]int64{}, etags: map[string]string{}, latest: map[string]ManifestEntry{}}
}

func (v *manifestView) refresh() error {
	if nbio.IsURL(v.dir) {
		return v.refreshStore()
	}
	files, err := filepath.Glob(filepath.Join(v.dir, "_ninbatch_manifest*.jsonl"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, p := range files {
		if err := v.readFrom(p); err != nil {
			return fmt.Errorf("reading manifest %s: %w", p, err)
		}
	}
	return nil
}

func (v *manifestView) readFrom(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(v.read[p], io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull { // an over-long line: read it whole
			rest, err2 := r.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), err2
		}
		if err == io.EOF {
			return nil // a torn last line waits for its newline
		}
		if err != nil {
			return err
		}
		v.read[p] += int64(len(line))
		var e ManifestEntry
		if json.Unmarshal(bytes.TrimSpace(line), &e) != nil || e.Output == "" {
			continue // torn or foreign line
		}
		if prev, ok := v.latest[e.Output]; !ok || e.Finished >= prev.Finished {
			v.latest[e.Output] = e
		}
	}
}

// On a store (no append) the manifest is one record per output,
// OUT/_ninbatch_manifest/<output>.json, replaced as the output's state
// changes; only the run that committed an output writes its record.
const storeManifestDir = "_ninbatch_manifest"

func storeRecord(dir, rel string) (nbio.ObjectURL, error) {
	u, err := nbio.ParseObjectURL(dir)
	if err != nil {
		return u, err
	}
	return u.Join(storeManifestDir + "/" + rel + ".json"), nil
}

// refreshStore lists the records and reads those new or changed since
// the last refresh.
func (v *manifestView) refreshStore() error {
	u, err := nbio.ParseObjectURL(v.dir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	b, err := nbio.OpenBucket(ctx, u)
	if err != nil {
		return err
	}
	root := u.Join(storeManifestDir)
	it := b.List(&blob.ListOptions{Prefix: root.Key + "/"})
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("listing the manifest %s: %w", root, err)
		}
		if o.IsDir || !strings.HasSuffix(o.Key, ".json") || v.etags[o.Key] == fmt.Sprint(o.MD5, o.ModTime, o.Size) {
			continue
		}
		data, err := b.ReadAll(ctx, o.Key)
		if err != nil {
			if gcerrors.Code(err) == gcerrors.NotFound {
				continue // removed since listed
			}
			return fmt.Errorf("reading manifest record %s: %w", o.Key, err)
		}
		v.etags[o.Key] = fmt.Sprint(o.MD5, o.ModTime, o.Size)
		var e ManifestEntry
		if json.Unmarshal(data, &e) != nil || e.Output == "" {
			continue
		}
		v.latest[e.Output] = e
	}
}

// manifestWriter appends entries durably (or writes a store's records).
type manifestWriter struct {
	f     *os.File
	store string // the output URL on a store
}

func openManifest(dir string, shard, shards int) (*manifestWriter, error) {
	if nbio.IsURL(dir) {
		return &manifestWriter{store: dir}, nil
	}
	p := filepath.Join(dir, ManifestName(shard, shards))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening manifest: %w", err)
	}
	// a torn last line from a crash: end it so the next entry starts clean
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		if b, err := os.ReadFile(p); err == nil && !strings.HasSuffix(string(b), "\n") {
			f.Write([]byte("\n"))
		}
	}
	return &manifestWriter{f: f}, nil
}

func (m *manifestWriter) append(e ManifestEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if m.store != "" {
		u, err := storeRecord(m.store, e.Output)
		if err != nil {
			return err
		}
		return nbio.PutObject(context.Background(), u, append(b, '\n'))
	}
	if _, err := m.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing manifest: %w", err)
	}
	if err := m.f.Sync(); err != nil {
		return fmt.Errorf("writing manifest: %w", err)
	}
	return nil
}

func (m *manifestWriter) close() {
	if m != nil && m.f != nil {
		m.f.Close()
	}
}
