package pipeline

import "golang.org/x/sys/unix"

// setlk: open-file-description locks, owned by the run's descriptor, so
// two runs in one process exclude each other too.
const setlk = unix.F_OFD_SETLK
