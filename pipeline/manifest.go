package pipeline

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ManifestEntry records one finished unit of work (an input file, or a
// row-group range of a large one) in the output directory.
type ManifestEntry struct {
	Input       string  `json:"input"`
	RowGroups   []int   `json:"row_groups,omitempty"` // nil: the whole file
	Size        int64   `json:"size"`
	MTime       string  `json:"mtime"`
	Fingerprint string  `json:"fingerprint"`
	Output      string  `json:"output"` // base name in the output directory
	RowsIn      int64   `json:"rows_in"`
	RowsOut     int64   `json:"rows_out"`
	RowsError   int64   `json:"rows_error"`
	RowsSkipped int64   `json:"rows_skipped"`
	ModelID     string  `json:"model_id"`
	Version     string  `json:"ninbatch_version"`
	Finished    string  `json:"finished"`
	Shard       string  `json:"shard,omitempty"`
	Seconds     float64 `json:"seconds"`
}

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
	files, err := filepath.Glob(filepath.Join(dir, "_ninbatch_manifest*.jsonl"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	out := map[string]ManifestEntry{}
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var e ManifestEntry
			if json.Unmarshal(sc.Bytes(), &e) != nil || e.Output == "" {
				continue // torn or foreign line
			}
			if prev, ok := out[e.Output]; !ok || e.Finished >= prev.Finished {
				out[e.Output] = e
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading manifest %s: %w", p, err)
		}
	}
	return out, nil
}

// manifestWriter appends entries durably.
type manifestWriter struct{ f *os.File }

func openManifest(dir string, shard, shards int) (*manifestWriter, error) {
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
	return &manifestWriter{f}, nil
}

func (m *manifestWriter) append(e ManifestEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
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
