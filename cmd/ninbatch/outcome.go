package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"github.com/rs/zerolog"
)

// Exit codes beyond design.md's 0-3: the shell's 128+signal for a run
// stopped by a signal, sysexits' EX_SOFTWARE for a bug in ninbatch, and its
// EX_TEMPFAIL for an output another live run holds. design.md counts the
// last as a configuration error (2), but schedulers treat 2 as "do not
// retry" (a Kubernetes FailIndex rule, a cron wrapper), while a held lock
// clears when the other run ends: retrying later is the right response.
const (
	exitInterrupted = 130 // SIGINT
	exitTerminated  = 143 // SIGTERM
	exitInternal    = 70  // a panic: never a usage error (2)
	exitBusy        = 75  // the output (or shard) is locked by another running ninbatch
)

// The final log line's status, by exit code.
const (
	statusSucceeded   = "succeeded"
	statusFailed      = "failed"
	statusPartial     = "partial"     // finished, but some rows or files could not be scored
	statusInterrupted = "interrupted" // stopped by SIGINT or SIGTERM
	statusBusy        = "busy"        // another run holds the output: nothing was done
)

func statusOf(code int) string {
	switch code {
	case exitOK:
		return statusSucceeded
	case exitRowsErrors:
		return statusPartial
	case exitInterrupted, exitTerminated:
		return statusInterrupted
	case exitBusy:
		return statusBusy
	}
	return statusFailed
}

// finalFields, when a command sets it, adds its counts to the final line.
var finalFields func(*zerolog.Event)

// logFinal writes the command's last log line: its status, exit code and
// error, at a level a log pipeline can alert on.
func logFinal(code int, err error) {
	st := statusOf(code)
	ev := logger.Info()
	switch st {
	case statusPartial, statusInterrupted:
		ev = logger.Warn()
	case statusFailed:
		ev = logger.Error()
	}
	ev = ev.Str("status", st).Int("exit_code", code)
	if err != nil {
		ev = ev.Str("error", err.Error())
	}
	if finalFields != nil {
		finalFields(ev)
	}
	ev.Msg(st)
}

// signalContext is cancelled by SIGINT or SIGTERM; code reports the exit
// code the signal calls for (0 while none came).
func signalContext() (ctx context.Context, stop func(), code func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	var got atomic.Int32
	go func() {
		select {
		case s := <-ch:
			if s == syscall.SIGTERM {
				got.Store(exitTerminated)
			} else {
				got.Store(exitInterrupted)
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	stop = func() { signal.Stop(ch); cancel() }
	return ctx, stop, func() int { return int(got.Load()) }
}

// recoverInternal turns a panic in the command's goroutine into exit 70
// with the stack in the log.
func recoverInternal(code *int) {
	if r := recover(); r != nil {
		logger.Error().Str("panic", fmt.Sprint(r)).Str("stack", string(debug.Stack())).Msg("internal error")
		*code = exitInternal
		logFinal(*code, fmt.Errorf("internal error: %v (please report it with the log)", r))
	}
}

// checkWritable fails now, before any work, if a file cannot be created
// at path: a summary that cannot be written must not be noticed at the end.
func checkWritable(path, what string) error {
	dir := filepath.Dir(path)
	for { // the nearest ancestor that exists: the rest is created when written
		st, err := os.Stat(dir)
		if err == nil && !st.IsDir() {
			return usageErr("%s %s cannot be written: %s is not a directory", what, path, dir)
		}
		if !os.IsNotExist(err) || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".check-*")
	if err != nil {
		return usageErr("%s %s cannot be written: %v", what, path, err)
	}
	f.Close()
	os.Remove(f.Name())
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return usageErr("%s %s is a directory", what, path)
	}
	return nil
}

// writeAtomic writes b to path atomically: a temporary file in the same
// directory, fsynced, then renamed over path.
func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone after the rename; removes a failed write
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
