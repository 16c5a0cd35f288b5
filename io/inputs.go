package nbio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// InputFile is one input and the path its output mirrors.
type InputFile struct {
	Path string // as found: the argument itself, or a file under a directory or glob argument
	Abs  string // absolute, symlinks resolved: the input's identity, whatever its spelling
	Rel  string // slash-separated path below its root: a directory argument, a glob's fixed prefix, a file's own directory
	Root string // that root, absolute with symlinks resolved
}

// ExpandOptions tune ExpandInputFiles.
type ExpandOptions struct {
	Recursive bool     // descend into subdirectories of directory arguments (partitioned layouts)
	Exclude   []string // directories never descended into (the output directory)
}

// Files wraps plain paths as inputs whose outputs are named by base name.
func Files(paths ...string) []InputFile {
	out := make([]InputFile, len(paths))
	for i, p := range paths {
		abs, err := Resolve(p)
		if err != nil {
			abs = p
		}
		root, _ := Resolve(filepath.Dir(p))
		out[i] = InputFile{Path: p, Abs: abs, Rel: filepath.Base(p), Root: root}
	}
	return out
}

// ExpandInputs is ExpandInputFiles without options, as paths.
func ExpandInputs(args []string) ([]string, error) {
	files, err := ExpandInputFiles(args, ExpandOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Path
	}
	return out, nil
}

// isDataFile: the extensions read from directories and globs. Names that
// start with "." (hidden, ninbatch's temporaries) or "_" (_SUCCESS,
// _common_metadata, ninbatch's manifests) are never inputs.
func isDataFile(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".parquet", ".arrow", ".arrows", ".ipc", ".feather":
		return true
	}
	return false
}

// ExpandInputFiles turns command-line inputs into a sorted list of files,
// one entry per file however it was spelled (data/, /abs/data and . are
// one input): a file as is, a directory as its data files (sorted; with
// Recursive, those of its subdirectories too, except hidden ones and
// "_"-prefixed ones), anything else as a glob.
func ExpandInputFiles(args []string, opt ExpandOptions) ([]InputFile, error) {
	var out []InputFile
	seen := map[string]bool{}
	exclude := map[string]bool{}
	for _, e := range opt.Exclude {
		if r, err := Resolve(e); err == nil {
			exclude[r] = true
		}
	}
	add := func(path, root string) error {
		abs, err := Resolve(path)
		if err != nil {
			return fmt.Errorf("input %s: %w", path, err)
		}
		if seen[abs] {
			return nil
		}
		seen[abs] = true
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			rel, root = filepath.Base(path), filepath.Dir(path)
		}
		rootAbs, err := Resolve(root)
		if err != nil {
			return fmt.Errorf("input %s: %w", root, err)
		}
		out = append(out, InputFile{Path: path, Abs: abs, Rel: filepath.ToSlash(rel), Root: rootAbs})
		return nil
	}
	addURL := func(p, rel, root string) error {
		if !seen[p] {
			seen[p] = true
			out = append(out, InputFile{Path: p, Abs: p, Rel: rel, Root: root})
		}
		return nil
	}
	for _, a := range args {
		a, err := LocalPath(a)
		if err != nil {
			return nil, err
		}
		if IsURL(a) {
			if err := expandURL(a, opt, addURL); err != nil {
				return nil, err
			}
			continue
		}
		st, err := os.Stat(a)
		switch {
		case err == nil && st.IsDir():
			files, subdirs, err := listDir(a, opt.Recursive, exclude)
			if err != nil {
				return nil, err
			}
			if len(files) == 0 {
				if subdirs && !opt.Recursive {
					return nil, fmt.Errorf("directory %s has no .parquet or .arrow files, only subdirectories (a partitioned dataset?): pass --recursive", a)
				}
				return nil, fmt.Errorf("directory %s has no .parquet or .arrow files", a)
			}
			for _, f := range files {
				if err := add(f, a); err != nil {
					return nil, err
				}
			}
		case err == nil:
			if err := add(a, filepath.Dir(a)); err != nil {
				return nil, err
			}
		default:
			matches, gerr := filepath.Glob(a)
			if gerr != nil || len(matches) == 0 {
				return nil, fmt.Errorf("input %s: %w", a, err)
			}
			sort.Strings(matches)
			root := globRoot(a)
			for _, m := range matches {
				if st, err := os.Stat(m); err != nil || st.IsDir() || strings.HasPrefix(filepath.Base(m), ".") {
					continue // directories, hidden files, our own temporaries
				}
				if err := add(m, root); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no input files")
	}
	return out, nil
}

// listDir lists dir's data files, sorted by path; subdirs reports whether
// it has subdirectories (searched only when recursive).
func listDir(dir string, recursive bool, exclude map[string]bool) (files []string, subdirs bool, err error) {
	// a trailing separator makes WalkDir follow a symlinked root
	root := strings.TrimSuffix(dir, string(filepath.Separator)) + string(filepath.Separator)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p == root {
				return nil
			}
			subdirs = true
			name := d.Name()
			if !recursive || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if r, err := Resolve(p); err == nil && exclude[r] {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0 {
			if isDataFile(d.Name()) {
				files = append(files, p)
			}
		}
		return nil
	})
	sort.Strings(files)
	return files, subdirs, err
}

// globRoot is the directory part of a glob before its first pattern
// character: outputs mirror the paths below it (data/k=*/x.parquet keeps
// the k=... folders).
func globRoot(pattern string) string {
	parts := strings.Split(filepath.ToSlash(pattern), "/")
	var fixed []string
	for _, p := range parts[:len(parts)-1] {
		if strings.ContainsAny(p, `*?[\`) {
			break
		}
		fixed = append(fixed, p)
	}
	root := strings.Join(fixed, "/")
	if root == "" {
		if strings.HasPrefix(pattern, "/") {
			return "/"
		}
		return "."
	}
	return filepath.FromSlash(root)
}

// Resolve is path made absolute with every symlink resolved; for a path
// that does not exist yet, its deepest existing ancestor is resolved and
// the rest appended, so an output path compares with the inputs' paths.
func Resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	var rest []string
	for p := abs; ; {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(append([]string{r}, rest...)...), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return abs, nil
		}
		rest = append([]string{filepath.Base(p)}, rest...)
		p = parent
	}
}
