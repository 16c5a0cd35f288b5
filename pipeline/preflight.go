package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	nbio "github.com/ninbatch/ninbatch/io"
)

// ShardOf assigns unit i of a run's ordered unit list to a shard: round
// robin, so every shard gets an even share and N shards cover each unit
// exactly once (all shards see the same input list).
func ShardOf(i, shards int) int { return i % shards }

// plan lists this run's units, reports outputs whose input is gone,
// leaves out finished units and preflights the rest.
func (s *run) plan(all []unit) ([]*prepared, error) {
	var mine []unit
	for i, u := range all {
		if s.cfg.Shards == 0 || ShardOf(i, s.cfg.Shards) == s.cfg.Shard {
			mine = append(mine, u)
		}
	}
	s.sum.Files = len(mine)
	s.view = newManifestView(s.cfg.OutDir)
	if err := s.view.refresh(); err != nil {
		return nil, err
	}
	if err := s.missingInputs(); err != nil {
		return nil, err
	}
	var todo []unit
	for _, u := range mine {
		s.removeStale(u)
		e, ok := s.view.latest[u.rel]
		if !s.cfg.Force {
			done, reason := finished(u, e, ok, s.Model.ID, s.cfg.columns())
			if done {
				s.sum.FilesSkip++
				continue
			}
			if reason != "" {
				s.sum.OutputsRedone++
				s.warn(reason + "; scoring it again")
			}
		}
		todo = append(todo, u)
	}
	files := s.preflight(todo)
	if s.cfg.OnError == "fail" {
		for _, f := range files {
			if f.fail != nil {
				return nil, f.fail // before anything is written
			}
		}
	}
	return files, nil
}

// missingInputs reports finished outputs whose input, below one of this
// run's input roots, no longer exists; with Prune it removes them.
func (s *run) missingInputs() error {
	roots := map[string]bool{}
	for _, in := range s.cfg.Inputs {
		roots[in.Root] = true
	}
	var rels []string
	for rel := range s.view.latest {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	for _, rel := range rels {
		e := s.view.latest[rel]
		if !e.Done() || !(filepath.IsAbs(e.Input) || nbio.IsURL(e.Input)) || !underRoot(e.Input, roots) {
			continue
		}
		if nbio.IsURL(e.Input) {
			if _, err := nbio.StatInput(e.Input); !errors.Is(err, os.ErrNotExist) {
				continue
			}
		} else if _, err := os.Lstat(e.Input); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		out := joinOut(s.cfg.OutDir, rel)
		if _, err := nbio.StatInput(out); err != nil {
			continue
		}
		m := MissingInput{Input: e.Input, Output: out}
		if s.cfg.Prune {
			if err := s.pruneOutput(rel, e); err != nil {
				return err
			}
			m.Pruned = true
		} else {
			s.warn(fmt.Sprintf("input %s is gone; its output %s stays (pass --prune to remove it)", e.Input, out))
		}
		s.sum.InputsMissing = append(s.sum.InputsMissing, m)
	}
	return nil
}

// pruneOutput removes an output whose input is gone, under its unit lock,
// and records the removal so no rerun counts it as finished.
func (s *run) pruneOutput(rel string, e ManifestEntry) error {
	if err := s.locks.wait(context.Background(), rel); err != nil {
		return err
	}
	defer s.locks.unlock(rel)
	out := joinOut(s.cfg.OutDir, rel)
	if err := removeOutput(out); err != nil {
		return fmt.Errorf("pruning %s: %w", out, err)
	}
	w, err := openManifest(s.cfg.OutDir, s.cfg.Shard, s.cfg.Shards)
	if err != nil {
		return err
	}
	defer w.close()
	e.Status, e.Error = "removed", "input gone: "+e.Input
	e.Finished = time.Now().UTC().Format(time.RFC3339Nano)
	e.Shard = s.label
	return w.append(e)
}

// removeStale removes a dead run's temporaries of u's output, unless a
// live run holds u (they are then its own).
func (s *run) removeStale(u unit) {
	if s.locks == nil {
		return // a new output directory: nothing to remove
	}
	if ok, err := s.locks.try(u.rel); err == nil && ok {
		s.removeTemps(u.out)
		s.locks.unlock(u.rel)
	}
}

// removeTemps removes the temporaries of out; the caller holds its lock,
// so they can only be a dead run's.
func (s *run) removeTemps(out string) {
	if nbio.IsURL(out) {
		s.abortUploads(out)
		return
	}
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(out), nbio.TempPrefix(out)+"*"))
	for _, t := range stale {
		if os.Remove(t) == nil {
			s.sum.StaleTemps++
		}
	}
}

// preflight opens every unit's input and checks it can be scored, before
// any output is written. A unit that cannot be scored keeps its reason in
// fail and is recorded when its turn comes.
func (s *run) preflight(units []unit) []*prepared {
	out := make([]*prepared, 0, len(units))
	for _, u := range units {
		p := &prepared{unit: u}
		p.fail = u.planErr
		if p.fail == nil {
			p.fail = s.check(p)
		}
		if p.fail == nil && p.rows > 0 {
			s.total += p.rows
		}
		out = append(out, p)
	}
	return out
}

func (s *run) check(p *prepared) error {
	src, err := nbio.OpenRowGroups(p.in.Path, nil, 1, p.rowGroups, s.Mem)
	if err != nil {
		return &InputError{p.in.Path, err}
	}
	p.schema, p.meta, p.rows = src.Schema(), src.Metadata(), src.NumRows()
	unkept := src.Unkept()
	src.Close()
	if p.image, err = nbio.FindImageColumn(p.schema, s.cfg.ImageCol); err != nil {
		return &InputError{p.in.Path, fmt.Errorf("%s: %w", p.in.Path, err)}
	}
	if p.fp, p.size, p.mtime, err = Fingerprint(p.in.Path); err != nil {
		return &InputError{p.in.Path, err}
	}
	p.classNames = s.classNamesFor(p.meta)
	p.labels = -1
	if s.cfg.Maps == MapsLabel {
		name, err := nbio.FindLabelColumn(p.schema, s.cfg.MapLabelCol)
		if err != nil {
			return &InputError{p.in.Path, fmt.Errorf("%s: --maps label: %w", p.in.Path, err)}
		}
		p.labels = p.schema.FieldIndices(name)[0]
		empty := array.MakeArrayOfNull(s.Mem, p.schema.Field(p.labels).Type, 0)
		_, err = nbio.LabelsOf(empty, s.Net.Classes(), p.classNames)
		empty.Release()
		if err != nil {
			return &InputError{p.in.Path, fmt.Errorf("%s: --maps label: column %s: %w", p.in.Path, name, err)}
		}
	}
	for _, u := range unkept {
		s.warn(fmt.Sprintf("%s: passthrough column %s", p.in.Path, u))
	}
	if err := s.outputSchema(p); err != nil {
		return err
	}
	if len(p.replaced) > 0 {
		s.warn(fmt.Sprintf("%s holds scores from an earlier run; its columns %v are replaced by this run's (pass --prefix to keep both)", p.in.Path, p.replaced))
	}
	return nil
}

// abortUploads aborts a dead run's unfinished multipart uploads of a store
// output (one listing of the output prefix per run, then one abort per
// upload found): the caller owns the unit, so no live run is writing it.
func (s *run) abortUploads(out string) {
	u, err := nbio.ParseObjectURL(out)
	if err != nil {
		return
	}
	if s.uploads == nil {
		root, err := nbio.ParseObjectURL(s.cfg.OutDir)
		if err != nil {
			return
		}
		s.uploads = map[string]bool{}
		keys, err := nbio.ListUploads(context.Background(), root)
		if err != nil {
			s.warn(err.Error())
			return
		}
		for _, k := range keys {
			s.uploads[k] = true
		}
	}
	if !s.uploads[u.Key] {
		return
	}
	n, err := nbio.AbortUploads(context.Background(), u)
	if err != nil {
		s.warn(err.Error())
		return
	}
	delete(s.uploads, u.Key)
	s.sum.StaleTemps += n
}
