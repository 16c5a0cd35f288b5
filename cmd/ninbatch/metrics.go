package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ninbatch/ninbatch/pipeline"
)

// promText renders a run's outcome in the Prometheus text exposition
// format, for node_exporter's textfile collector: every value is a gauge
// of the last run (the file is replaced whole by each run), and an alert
// can fire on ninbatch_run_success == 0 or on a stale
// ninbatch_run_last_completion_timestamp_seconds.
func promText(sum *pipeline.RunSummary, code int, now time.Time) []byte {
	if sum == nil {
		sum = &pipeline.RunSummary{}
	}
	var b strings.Builder
	labels := ""
	if sum.Shard != "" {
		labels = `shard="` + promEscape(sum.Shard) + `"`
	}
	with := func(extra string) string {
		switch {
		case labels == "" && extra == "":
			return ""
		case labels == "":
			return "{" + extra + "}"
		case extra == "":
			return "{" + labels + "}"
		}
		return "{" + labels + "," + extra + "}"
	}
	gauge := func(name, help string, values ...any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		for i := 0; i < len(values); i += 2 {
			fmt.Fprintf(&b, "%s%s %s\n", name, with(values[i].(string)), promValue(values[i+1]))
		}
	}
	status := statusOf(code)
	success := 0
	if status == statusSucceeded {
		success = 1
	}
	gauge("ninbatch_run_success", "1 if the last run scored every row, else 0.", "", success)
	var st []any
	for _, s := range []string{statusSucceeded, statusPartial, statusFailed, statusInterrupted} {
		v := 0
		if s == status {
			v = 1
		}
		st = append(st, `status="`+s+`"`, v)
	}
	gauge("ninbatch_run_status", "The last run's outcome: 1 for its status, 0 for the others.", st...)
	gauge("ninbatch_run_exit_code", "The last run's exit code.", "", code)
	gauge("ninbatch_run_rows", "Rows of the last run by kind: read, scored, recorded with an error, skipped.",
		`kind="in"`, sum.RowsIn, `kind="scored"`, sum.RowsScored, `kind="error"`, sum.RowsError, `kind="skipped"`, sum.RowsSkipped)
	gauge("ninbatch_run_units", "Units (files or row-group ranges) of the last run by outcome.",
		`kind="assigned"`, sum.Files, `kind="done"`, sum.FilesDone, `kind="already_finished"`, sum.FilesSkip, `kind="failed"`, sum.FilesFailed)
	gauge("ninbatch_run_duration_seconds", "Wall time of the last run's scoring.", "", sum.Seconds)
	gauge("ninbatch_run_images_per_second", "Images scored per second by the last run.", "", sum.ImgPerSec)
	gauge("ninbatch_run_last_completion_timestamp_seconds", "When the last run ended (Unix time).", "", float64(now.UnixMilli())/1000)
	return []byte(b.String())
}

func promValue(v any) string {
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// promEscape escapes a label value (backslash, quote, newline).
func promEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
