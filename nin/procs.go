package nin

import (
	"runtime"
	"sync"
)

// procsMu serialises the check-and-raise of GOMAXPROCS across nets.
var procsMu sync.Mutex

// reserveProcs raises GOMAXPROCS to threads+2 when a net or trainer runs
// streams (each of threads goroutines drains micro-batches through long
// cgo calls). A goroutine leaving a cgo call, or one a worker wakes, needs a
// free P; at GOMAXPROCS = threads both Ps are usually held by threads in cgo
// calls until sysmon takes one back, tens of µs later. At batch 64 on 2
// threads (2 vCPUs, GOMAXPROCS 2 against 4, alternated) this cost nin-imagenet
// 25% (150–169 against 201–208 img/s), nin-cifar10 18%, and the nin-mnist
// training step 30% (858–914 against 1254–1284 img/s). It is never lowered,
// and not raised for split calls (batch < threads): there the extra Ps let
// the scheduler's spinning threads take time from the two compute threads,
// and nin-imagenet at batch 1 lost 27%.
func reserveProcs(threads int) {
	if threads < 2 {
		return
	}
	procsMu.Lock()
	defer procsMu.Unlock()
	if runtime.GOMAXPROCS(0) < threads+2 {
		runtime.GOMAXPROCS(threads + 2)
	}
}
