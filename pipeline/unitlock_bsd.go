//go:build unix && !linux

package pipeline

import "golang.org/x/sys/unix"

// setlk: POSIX record locks (per process) where OFD locks are missing;
// separate processes still exclude each other.
const setlk = unix.F_SETLK
