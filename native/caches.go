package native

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Caches are the per-core data cache sizes in bytes (L3: the whole
// cache one core sees), read from Linux sysfs; a size that cannot be read
// is the value of a common server core, so tuning still has a number.
type Caches struct {
	L1d, L2, L3 int
}

var detected = readCaches("/sys/devices/system/cpu/cpu0/cache")

// The packed GEMM's row blocks cover a quarter of L2 (128 KiB on a 512 KiB
// L2, the size measured best there; on a 2 MiB L2, 128 to 512 KiB measured
// the same), between 64 and 512 KiB.
func init() {
	SetGemmBlockBytes(gemmBlockBytes(detected))
	setGemmAtBRows(gemmAtBRows(detected))
}

func gemmBlockBytes(c Caches) int { return min(max(c.L2/4, 64<<10), 512<<10) }

// gemmAtBRows is the row chunk of GemmAtB: its 32-column strip of B (128
// bytes a row) fills half of L1d (192 rows on a 48 KiB L1d), 64 to 512.
func gemmAtBRows(c Caches) int { return min(max(c.L1d/2/128, 64), 512) }

// DetectedCaches returns the caches found at start-up.
func DetectedCaches() Caches { return detected }

func readCaches(dir string) Caches {
	c := Caches{L1d: 32 << 10, L2: 512 << 10, L3: 16 << 20}
	idx, _ := filepath.Glob(filepath.Join(dir, "index*"))
	for _, d := range idx {
		level, typ, size := sysfs(d, "level"), sysfs(d, "type"), sysfs(d, "size")
		n := parseSize(size)
		if n <= 0 {
			continue
		}
		switch {
		case level == "1" && (typ == "Data" || typ == "Unified"):
			c.L1d = n
		case level == "2" && typ != "Instruction":
			c.L2 = n
		case level == "3" && typ != "Instruction":
			c.L3 = n
		}
	}
	return c
}

func sysfs(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// parseSize reads sysfs sizes such as "48K", "1024K" or "32768K".
func parseSize(s string) int {
	mul := 1
	switch {
	case strings.HasSuffix(s, "K"):
		mul, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mul, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n * mul
}
