package nbio

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// MaxAllocation bounds one buffer allocation while reading an input. A
// corrupt length field (an IPC message body, a page size) otherwise makes
// arrow-go ask for terabytes, which kills the process with a fatal
// out-of-memory error that cannot be recovered; with the bound it panics
// in the reading goroutine, where ninbatch turns the panic into an error.
var MaxAllocation = 2 << 30

// limitAllocator enforces MaxAllocation on an allocator.
type limitAllocator struct{ memory.Allocator }

func limited(mem memory.Allocator) memory.Allocator {
	if _, ok := mem.(limitAllocator); ok {
		return mem
	}
	return limitAllocator{mem}
}

func (a limitAllocator) check(size int) {
	if size < 0 || size > MaxAllocation {
		panic(fmt.Sprintf("refusing a %d-byte buffer (limit %d): corrupt length in the input", size, MaxAllocation))
	}
}

func (a limitAllocator) Allocate(size int) []byte {
	a.check(size)
	return a.Allocator.Allocate(size)
}

func (a limitAllocator) Reallocate(size int, b []byte) []byte {
	a.check(size)
	return a.Allocator.Reallocate(size, b)
}
