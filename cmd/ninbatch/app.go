package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/ninbatch/ninbatch/nin"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit codes (design.md §6).
const (
	exitOK         = 0
	exitFailed     = 1 // the run failed
	exitUsage      = 2 // usage or configuration error
	exitRowsErrors = 3 // finished, but some rows errored
)

// exitError carries an exit code with an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks an error as a usage or configuration error (exit 2).
func usageErr(format string, a ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, a...)}
}

// asUsage wraps an existing error as a configuration error (exit 2).
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{exitUsage, err}
}

const (
	flagLogFormat = "log-format"
	flagLogLevel  = "log-level"
	flagThreads   = "threads"
	flagJSON      = "json"
	flagPreset    = "preset"
	flagTuning    = "tuning"
	flagModel     = "model"
	flagSeed      = "seed"
	flagOut       = "out"
	flagBatch     = "batch"
)

// stopProfile ends a --cpuprofile, if one runs.
var stopProfile func()

// cmdline is the command line being run, for provenance records.
var cmdline string

// logger is configured by the global flags before any command runs.
var logger = zerolog.New(os.Stderr).With().Timestamp().Logger()

func isTTY(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:    "ninbatch",
		Usage:   "score and train Network In Network image classifiers over Parquet/Arrow data",
		Version: version,
		Writer:  stdout, ErrWriter: stderr, Reader: os.Stdin,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagLogFormat, Usage: "console or json (default: console on a terminal, else json)", EnvVars: []string{"NINBATCH_LOG_FORMAT"}},
			&cli.StringFlag{Name: flagLogLevel, Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"NINBATCH_LOG_LEVEL"}},
			&cli.IntFlag{Name: flagThreads, Value: runtime.NumCPU(), Usage: "CPU cores to use", EnvVars: []string{"NINBATCH_THREADS"}},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a Go CPU profile (pprof) of the command to this file"},
		},
		Before: func(c *cli.Context) error {
			lvl, err := zerolog.ParseLevel(c.String(flagLogLevel))
			if err != nil || c.String(flagLogLevel) == "" {
				return usageErr("--log-level %q: want debug, info, warn or error", c.String(flagLogLevel))
			}
			var w io.Writer = stderr
			switch f := c.String(flagLogFormat); f {
			case "json":
			case "console":
				w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}
			case "":
				if ef, ok := stderr.(*os.File); ok && isTTY(ef) {
					w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}
				}
			default:
				return usageErr("--log-format %q: want console or json", f)
			}
			logger = zerolog.New(w).Level(lvl).With().Timestamp().Logger()
			if t := c.Int(flagThreads); t < 1 || t > 256 {
				return usageErr("--threads %d: want 1..256", t)
			}
			globalThreads = c.Int(flagThreads)
			if p := c.String("cpuprofile"); p != "" {
				f, err := os.Create(p)
				if err != nil {
					return usageErr("--cpuprofile: %v", err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return usageErr("--cpuprofile: %v", err)
				}
				stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
			}
			return nil
		},
		Commands: []*cli.Command{
			newRunCommand(),
			newInfoCommand(),
			newInitCommand(),
			newBenchCommand(),
			newDatasetCommand(),
			newTrainCommand(),
			newEvalCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run() maps errors to exit codes
	}
}

// run executes the CLI and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmdline = "ninbatch " + strings.Join(args[1:], " ")
	app := newApp(stdout, stderr)
	err := app.Run(interspersed(app, args))
	if stopProfile != nil {
		stopProfile()
		stopProfile = nil
	}
	if err == nil {
		return exitOK
	}
	var ee *exitError
	code := exitFailed
	if errors.As(err, &ee) {
		code = ee.code
	} else if isCLIUsage(err) {
		code = exitUsage
	}
	fmt.Fprintf(stderr, "ninbatch: %v\n", err)
	return code
}

// isCLIUsage recognises urfave/cli's own flag and argument errors.
func isCLIUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"flag provided but not defined", "Required flag", "invalid value", "flag needs an argument", "No help topic"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// tuningOf is the engine tuning: $NINBATCH_TUNING, or the command's
// --tuning where it has one (bench). Engine knobs are not user options;
// the default engine is what users run.
func tuningOf(c *cli.Context) (nin.Tuning, error) {
	src, v := "$"+nin.TuningEnv, os.Getenv(nin.TuningEnv)
	if c.IsSet(flagTuning) {
		src, v = "--"+flagTuning, c.String(flagTuning)
	}
	t, err := nin.ParseTuning(v)
	if err != nil {
		return t, usageErr("%s: %v", src, err)
	}
	return t, nil
}
