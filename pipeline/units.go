package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	nbio "github.com/ninbatch/ninbatch/io"
)

// unit is one piece of work: an input file or a row-group range of it.
type unit struct {
	in        nbio.InputFile
	rowGroups []int  // nil: the whole file
	rel       string // output path below the output directory, slash-separated
	out       string // the output's path
	planErr   error  // the input could not be planned (its footer is unreadable)
}

// OutputRel is the output of an input at rel (slash-separated, below its
// root): the same path with a .parquet extension, or for part k (1-based)
// of parts, with .part-000k-of-000n before it.
func OutputRel(rel string, k, parts int) string {
	base := strings.TrimSuffix(rel, path.Ext(rel))
	if parts > 0 {
		base += fmt.Sprintf(".part-%04d-of-%04d", k, parts)
	}
	return base + ".parquet"
}

// OutputPath is the output file for an input named by its base name.
func OutputPath(outDir, input string) string {
	return filepath.Join(outDir, OutputRel(filepath.Base(input), 0, 0))
}

// planUnits lists the units of every input in order: whole files, or for
// Parquet inputs above splitRows rows consecutive row groups of at least
// splitRows rows each.
func planUnits(inputs []nbio.InputFile, outDir string, splitRows int64) ([]unit, error) {
	var units []unit
	add := func(in nbio.InputFile, rg []int, k, parts int) {
		rel := OutputRel(in.Rel, k, parts)
		units = append(units, unit{in: in, rowGroups: rg, rel: rel, out: joinOut(outDir, rel)})
	}
	for _, in := range inputs {
		var rg []int64
		if splitRows > 0 {
			var err error
			if rg, err = nbio.RowGroupRows(in.Path); err != nil {
				add(in, nil, 0, 0)
				units[len(units)-1].planErr = &InputError{in.Path, err}
				continue
			}
		}
		var total int64
		for _, n := range rg {
			total += n
		}
		if len(rg) < 2 || total <= splitRows {
			add(in, nil, 0, 0)
			continue
		}
		var groups [][]int
		var cur []int
		var rows int64
		for g, n := range rg {
			cur = append(cur, g)
			rows += n
			if rows >= splitRows {
				groups, cur, rows = append(groups, cur), nil, 0
			}
		}
		if len(cur) > 0 {
			groups = append(groups, cur)
		}
		for k, g := range groups {
			add(in, g, k+1, len(groups))
		}
	}
	return units, nil
}

// ConfigError is a run that must not start as configured (exit 2).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// checkOutputs refuses a plan in which an output would replace an input
// (the same path through any spelling, symlink or hard link) or two inputs
// would write one output.
func checkOutputs(units []unit, inputs []nbio.InputFile) error {
	byAbs := map[string]string{}
	var stats []os.FileInfo
	var statPaths []string
	for _, in := range inputs {
		byAbs[in.Abs] = in.Path
		if st, err := os.Stat(in.Path); err == nil {
			stats, statPaths = append(stats, st), append(statPaths, in.Path)
		}
	}
	writer := map[string]string{}
	for _, u := range units {
		res, err := u.out, error(nil)
		if !nbio.IsURL(u.out) {
			res, err = nbio.Resolve(u.out)
		}
		if err != nil {
			return &ConfigError{fmt.Errorf("output %s: %w", u.out, err)}
		}
		if in, ok := byAbs[res]; ok {
			return &ConfigError{fmt.Errorf("output %s would overwrite input %s: choose an --out outside the inputs' directories", u.out, in)}
		}
		if st, err := os.Stat(u.out); err == nil {
			for i, ist := range stats {
				if os.SameFile(st, ist) {
					return &ConfigError{fmt.Errorf("output %s is the same file as input %s (a link): choose another --out", u.out, statPaths[i])}
				}
			}
		}
		if prev, ok := writer[res]; ok && prev != u.in.Path {
			return &ConfigError{fmt.Errorf("inputs %s and %s would both write %s: rename one, or give their common parent directory", prev, u.in.Path, u.out)}
		}
		writer[res] = u.in.Path
	}
	return nil
}

// Fingerprint identifies an input's content cheaply: sha256 over its size,
// modification time and its first and last 64 KiB (where Parquet keeps the
// footer and Arrow the schema and footer).
//
// A stored object is identified by its ETag (the store's content tag),
// size and modification time: no bytes are read.
func Fingerprint(path string) (fp string, size int64, mtime string, err error) {
	if nbio.IsURL(path) {
		st, err := nbio.StatInput(path)
		if err != nil {
			return "", 0, "", err
		}
		size, mtime = st.Size, st.ModTime.UTC().Format(time.RFC3339Nano)
		h := sha256.Sum256([]byte(fmt.Sprintf("object %s %d %s\n", st.ETag, st.Size, mtime)))
		return hex.EncodeToString(h[:]), size, mtime, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, "", err
	}
	size, mtime = st.Size(), st.ModTime().UTC().Format(time.RFC3339Nano)
	h := sha256.New()
	fmt.Fprintf(h, "%d %d\n", st.Size(), st.ModTime().UnixNano())
	const chunk = 64 << 10
	if _, err := io.CopyN(h, f, chunk); err != nil && err != io.EOF {
		return "", 0, "", err
	}
	if st.Size() > 2*chunk {
		if _, err := f.Seek(-chunk, io.SeekEnd); err != nil {
			return "", 0, "", err
		}
		if _, err := io.Copy(h, f); err != nil {
			return "", 0, "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), size, mtime, nil
}

// finished reports whether the manifest entry e shows u done with this
// model on the input as it is now, and its output intact; reason says why
// not when an output exists but fails the check.
func finished(u unit, e ManifestEntry, ok bool, modelID, columns string) (done bool, reason string) {
	if !ok || !e.Done() || e.ModelID != modelID || (e.Columns != "" && e.Columns != columns) {
		return false, "" // another model, or other score columns asked for (entries before they were recorded: any)
	}
	if fp, _, _, err := Fingerprint(u.in.Path); err != nil || fp != e.Fingerprint {
		return false, ""
	}
	if err := verifyOutput(u.out, e); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// verifyOutput checks a committed output against its manifest entry: the
// size and sha256 recorded when it was written (entries written before
// they were recorded: a readable Parquet footer with the recorded rows).
func verifyOutput(out string, e ManifestEntry) error {
	if nbio.IsURL(out) {
		st, err := nbio.StatInput(out)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("output %s is gone", out)
		case err != nil:
			return err
		case st.Size != e.OutputSize || (e.OutputETag != "" && st.ETag != e.OutputETag):
			return fmt.Errorf("output %s (%d bytes, ETag %s) is not the object the manifest records (%d bytes, ETag %s)", out, st.Size, st.ETag, e.OutputSize, e.OutputETag)
		}
		return nil
	}
	st, err := os.Stat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("output %s is gone", out)
	}
	if err != nil {
		return err
	}
	if e.OutputSHA256 == "" {
		rows, err := nbio.ParquetRows(out)
		if err != nil || rows != e.RowsOut {
			return fmt.Errorf("output %s is not the file the manifest records (%d rows, %v)", out, rows, err)
		}
		return nil
	}
	if st.Size() != e.OutputSize {
		return fmt.Errorf("output %s is %d bytes, the manifest records %d (truncated or replaced)", out, st.Size(), e.OutputSize)
	}
	_, sum, err := nbio.FileChecksum(out)
	if err != nil {
		return err
	}
	if sum != e.OutputSHA256 {
		return fmt.Errorf("output %s does not match the checksum the manifest records (corrupt or replaced)", out)
	}
	return nil
}

// underRoot reports whether abs lies below one of the roots.
func underRoot(abs string, roots map[string]bool) bool {
	if nbio.IsURL(abs) {
		for r := range roots {
			if nbio.IsURL(r) && strings.HasPrefix(abs, strings.TrimSuffix(r, "/")+"/") {
				return true
			}
		}
		return false
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if roots[d] {
			return true
		}
		if d == filepath.Dir(d) {
			return false
		}
	}
}

// joinOut is output rel's path (or URL) below the output directory.
func joinOut(outDir, rel string) string {
	if nbio.IsURL(outDir) {
		if u, err := nbio.ParseObjectURL(outDir); err == nil {
			return u.Join(rel).String()
		}
	}
	return filepath.Join(outDir, filepath.FromSlash(rel))
}

// removeOutput deletes an output file or object; a missing one is fine.
func removeOutput(out string) error {
	if nbio.IsURL(out) {
		u, err := nbio.ParseObjectURL(out)
		if err != nil {
			return err
		}
		return nbio.DeleteObject(context.Background(), u)
	}
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
