//go:build unix

package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// unitLocks are per-output locks: one byte of OUT/.ninbatch.units.lock per
// output, locked with an open-file-description lock while the unit is
// written and committed. They let any mix of runs share one output — shard
// counts that differ in a rollout, an unsharded rerun next to a sharded
// job — without two of them writing one unit or one removing a temporary
// that another is writing. The kernel drops them when the process dies.
type unitLocker interface {
	try(rel string) (bool, error)
	wait(ctx context.Context, rel string) error
	unlock(rel string)
	close()
}

// storeLocks: a store has no locks; the output's conditional create
// decides which of two runs commits a unit.
type storeLocks struct{}

func (storeLocks) try(string) (bool, error)           { return true, nil }
func (storeLocks) wait(context.Context, string) error { return nil }
func (storeLocks) unlock(string)                      {}
func (storeLocks) close()                             {}

type unitLocks struct {
	f *os.File
}

const unitLockName = ".ninbatch.units.lock"

func openUnitLocks(dir string) (*unitLocks, error) {
	f, err := os.OpenFile(filepath.Join(dir, unitLockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("unit locks in %s: %w", dir, err)
	}
	return &unitLocks{f}, nil
}

// offset is where output rel's byte lies: a hash, so every run finds the
// same byte for the same output (a collision only serialises two units).
func (l *unitLocks) offset(rel string) int64 {
	h := sha256.Sum256([]byte(rel))
	return int64(binary.LittleEndian.Uint64(h[:8]) >> 2)
}

// try locks rel's byte; false when another run holds it.
func (l *unitLocks) try(rel string) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: l.offset(rel), Len: 1}
	err := unix.FcntlFlock(l.f.Fd(), setlk, &lk)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("locking unit %s: %w", rel, err)
	}
	return true, nil
}

// wait locks rel's byte, waiting for the run that holds it.
func (l *unitLocks) wait(ctx context.Context, rel string) error {
	for {
		ok, err := l.try(rel)
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *unitLocks) unlock(rel string) {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: l.offset(rel), Len: 1}
	unix.FcntlFlock(l.f.Fd(), setlk, &lk)
}

func (l *unitLocks) close() {
	if l != nil && l.f != nil {
		l.f.Close() // drops every lock this run still holds
	}
}
