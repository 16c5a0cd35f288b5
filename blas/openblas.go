//go:build !purego

package blas

/*
#cgo pkg-config: openblas
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
char* openblas_get_config(void);
char* openblas_get_corename(void);
*/
import "C"

import (
	"sync"

	gblas "gonum.org/v1/gonum/blas"
	"gonum.org/v1/netlib/blas/netlib"
)

// Impl is the BLAS implementation behind Sgemm: OpenBLAS through netlib.
var Impl gblas.Float32 = netlib.Implementation{}

var _ gblas.Float32 = netlib.Implementation{}

// Backend names the implementation behind Impl.
const Backend = "openblas"

var threadMu sync.Mutex

// SetThreads sets the size of OpenBLAS's thread pool for the whole process
// (n < 1 is taken as 1). It is cheap when the size does not change.
func SetThreads(n int) {
	if n < 1 {
		n = 1
	}
	threadMu.Lock()
	defer threadMu.Unlock()
	if int(C.openblas_get_num_threads()) != n {
		C.openblas_set_num_threads(C.int(n))
	}
}

// Threads reports the current size of OpenBLAS's thread pool.
func Threads() int { return int(C.openblas_get_num_threads()) }

// Config is OpenBLAS's build configuration string (openblas_get_config).
func Config() string { return C.GoString(C.openblas_get_config()) }

// CoreName is the kernel family OpenBLAS picked for this CPU.
func CoreName() string { return C.GoString(C.openblas_get_corename()) }
