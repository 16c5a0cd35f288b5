// Command ninbatch scores and trains Network In Network image classifiers
// over Parquet and Arrow data. See README.md.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
