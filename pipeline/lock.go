//go:build unix

package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// LockedError reports an output directory (or shard of it) that another
// live run holds.
type LockedError struct {
	Dir, Holder string
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("output directory %s is in use by another run (%s); wait for it or use another --out", e.Dir, e.Holder)
}

// Lock is a held output-directory lock.
type Lock struct{ files []*os.File }

// Release drops the lock (also dropped by the kernel if the process dies,
// so a crashed run never blocks the next one).
func (l *Lock) Release() {
	for _, f := range l.files {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
	l.files = nil
}

// AcquireLock locks dir for one run. An unsharded run (shards == 0) holds
// the directory lock exclusively; a shard holds it shared plus its own
// shard lock exclusively, so shards of one job run side by side but never
// next to an unsharded run or a second copy of themselves.
func AcquireLock(dir string, shard, shards int) (*Lock, error) {
	l := &Lock{}
	main := filepath.Join(dir, ".ninbatch.lock")
	if shards == 0 {
		if err := l.take(dir, main, syscall.LOCK_EX, true); err != nil {
			return nil, err
		}
		return l, nil
	}
	if err := l.take(dir, main, syscall.LOCK_SH, false); err != nil {
		return nil, err
	}
	if err := l.take(dir, filepath.Join(dir, fmt.Sprintf(".ninbatch.shard-%d-of-%d.lock", shard, shards)), syscall.LOCK_EX, true); err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

func (l *Lock) take(dir, path string, how int, record bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("locking %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "holder unknown"
			if b, _ := os.ReadFile(path); len(strings.TrimSpace(string(b))) > 0 {
				holder = strings.TrimSpace(string(b))
			} else if how == syscall.LOCK_SH {
				holder = "an unsharded run holds it"
			} else if base := filepath.Base(path); base != ".ninbatch.lock" {
				holder = "the same shard, " + strings.TrimSuffix(strings.TrimPrefix(base, ".ninbatch."), ".lock")
			}
			return &LockedError{Dir: dir, Holder: holder}
		}
		return fmt.Errorf("locking %s: %w", dir, err)
	}
	if record {
		host, _ := os.Hostname()
		f.Truncate(0)
		f.WriteAt([]byte(fmt.Sprintf("pid %d on %s since %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))), 0)
	}
	l.files = append(l.files, f)
	return nil
}
