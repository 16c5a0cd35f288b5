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

	nbio "github.com/ninbatch/ninbatch/io"
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
			&cli.StringFlag{Name: "s3-endpoint", Usage: "endpoint of an S3-compatible store (MinIO, Ceph RGW, R2...) for s3:// paths; default AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS", EnvVars: []string{"NINBATCH_S3_ENDPOINT"}},
			&cli.DurationFlag{Name: "progress-every", Value: 30 * time.Second, Usage: "interval of progress log lines when stderr is not a terminal (0: none)", EnvVars: []string{"NINBATCH_PROGRESS_EVERY"}},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a Go CPU profile (pprof) of the command to this file"},
		},
		Before: func(c *cli.Context) error {
			lvl, err := zerolog.ParseLevel(c.String(flagLogLevel))
			if err != nil || c.String(flagLogLevel) == "" {
				return usageErr("--log-level %q: want debug, info, warn or error", c.String(flagLogLevel))
			}
			switch f := c.String(flagLogFormat); f {
			case "json":
				logger = zerolog.New(stderr).Level(lvl).With().Timestamp().Logger()
			case "console":
				logger = zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}).Level(lvl).With().Timestamp().Logger()
			case "":
				logger = defaultLogger(stderr).Level(lvl)
			default:
				return usageErr("--log-format %q: want console or json", f)
			}
			if t := c.Int(flagThreads); t < 1 || t > 256 {
				return usageErr("--threads %d: want 1..256", t)
			}
			globalThreads = c.Int(flagThreads)
			if d := c.Duration("progress-every"); d < 0 || d > 24*time.Hour {
				return usageErr("--progress-every %v: want 0 (off) up to 24h", d)
			}
			progressEvery = c.Duration("progress-every")
			nbio.S3Endpoint = c.String("s3-endpoint")
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
			newMapsCommand(),
			newImportCommand(),
			newExportCommand(),
			newQuantizeCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run() maps errors to exit codes
		OnUsageError:   usageHint,
	}
}

// usageHint makes a flag error one line with a pointer to the help,
// instead of the whole help followed by the error.
func usageHint(c *cli.Context, err error, _ bool) error {
	name := "ninbatch"
	if c.Command != nil && c.Command.Name != "" {
		name = c.Command.HelpName
	}
	return usageErr("%v (see %s --help)", err, name)
}

// run executes the CLI and returns the process exit code. Its last log
// line states the outcome (logFinal); a panic in the command's goroutine
// is exit 70, not Go's 2, which would read as a usage error.
func run(args []string, stdout, stderr io.Writer) (code int) {
	cmdline = "ninbatch " + strings.Join(args[1:], " ")
	logger, finalFields = defaultLogger(stderr), nil
	defer recoverInternal(&code)
	app := newApp(stdout, stderr)
	ran := false // a command's action started: not --help or --version
	var mark func([]*cli.Command)
	mark = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.OnUsageError = usageHint
			if act := c.Action; act != nil {
				c.Action = func(ctx *cli.Context) error { ran = true; return act(ctx) }
			}
			mark(c.Subcommands)
		}
	}
	mark(app.Commands)
	err := app.Run(interspersed(app, args))
	if stopProfile != nil {
		stopProfile()
		stopProfile = nil
	}
	code = exitCodeOf(err)
	if ran || err != nil {
		logFinal(code, err)
	}
	return code
}

// defaultLogger is the log until the global flags say otherwise: console
// on a terminal, JSON lines elsewhere.
func defaultLogger(stderr io.Writer) zerolog.Logger {
	var w io.Writer = stderr
	if ef, ok := stderr.(*os.File); ok && isTTY(ef) {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}

// exitCodeOf maps a command's error to the exit code.
func exitCodeOf(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isCLIUsage(err) {
		return exitUsage
	}
	return exitFailed
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
// precisionFlag is --precision of run, eval and bench.
func precisionFlag() cli.Flag {
	return &cli.StringFlag{Name: "precision", Value: nin.PrecisionFP32, EnvVars: []string{"NINBATCH_PRECISION"},
		Usage: "arithmetic of the conv products: fp32; bf16 (CPUs with AVX512_BF16 or AMX-BF16); int8 (a model made by ninbatch quantize, CPUs with AVX-512 VNNI or AMX-INT8). docs/precision.md"}
}

// precisionOf checks --precision.
func precisionOf(c *cli.Context) (string, error) {
	switch p := c.String("precision"); p {
	case nin.PrecisionFP32, nin.PrecisionBF16, nin.PrecisionInt8:
		return p, nil
	default:
		return "", usageErr("--precision %q: want fp32, bf16 or int8", p)
	}
}

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
