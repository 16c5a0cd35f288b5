// Package testutil holds fixtures shared by ninbatch's tests: DuckDB (an
// independent Parquet implementation, driven through node) to write inputs
// and read outputs back.
package testutil

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// DuckDBDir is the npm project that drives DuckDB; the test is skipped
// when it is not installed, unless NINBATCH_REQUIRE_DUCKDB=1 (CI).
func DuckDBDir(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "interop", "duckdb")
	_, errNode := exec.LookPath("node")
	_, errMod := os.Stat(filepath.Join(dir, "node_modules", "@duckdb", "node-api"))
	if errNode != nil || errMod != nil {
		if os.Getenv("NINBATCH_REQUIRE_DUCKDB") == "1" {
			t.Fatalf("DuckDB interop needs node and `npm ci` in %s (node: %v, module: %v)", dir, errNode, errMod)
		}
		t.Skipf("DuckDB not installed (run npm ci in %s); CI sets NINBATCH_REQUIRE_DUCKDB=1", dir)
	}
	return dir
}

// Node runs interop/duckdb/check.mjs with args and returns its stdout.
func Node(t testing.TB, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("node", append([]string{filepath.Join(dir, "check.mjs")}, args...)...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("node %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("node %v: %v", args, err)
	}
	return out
}

// DuckDB runs SQL statements (separated by ";\n") in one in-memory DuckDB
// and returns the last one's rows.
func DuckDB(t testing.TB, sql string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	if err := json.Unmarshal(Node(t, DuckDBDir(t), "sql", sql), &rows); err != nil {
		t.Fatalf("DuckDB output: %v", err)
	}
	return rows
}

// OnnxRuntimeDir is the npm project that runs onnxruntime-node; the test
// is skipped when it is not installed, unless NINBATCH_REQUIRE_ORT=1 (CI).
func OnnxRuntimeDir(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "interop", "onnxruntime")
	_, errNode := exec.LookPath("node")
	_, errMod := os.Stat(filepath.Join(dir, "node_modules", "onnxruntime-node"))
	if errNode != nil || errMod != nil {
		if os.Getenv("NINBATCH_REQUIRE_ORT") == "1" {
			t.Fatalf("the onnxruntime check needs node and `npm ci` in %s (node: %v, module: %v)", dir, errNode, errMod)
		}
		t.Skipf("onnxruntime-node not installed (bash scripts/setup.sh); CI sets NINBATCH_REQUIRE_ORT=1")
	}
	return dir
}
