package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults shared by every command (DESIGN.md, "Configuration").
const (
	defaultPostgresURL    = "postgres://postgres@127.0.0.1:5432/veil?sslmode=disable"
	defaultRedisAddr      = "127.0.0.1:6379"
	defaultClickHouseAddr = "127.0.0.1:9000"
	defaultClickHouseDB   = "veil"
	defaultIngestAddr     = ":8081"
	defaultKafkaBrokers   = "127.0.0.1:9092"
)

// Metrics listeners, on loopback: scrapers run beside the service, and
// nothing on the public ports tells an outsider about the traffic.
const defaultIngestMetricsAddr = "127.0.0.1:9181"

// flags is a flag set whose flags default to environment variables, so
// every setting can come from either; the environment's parse errors are
// reported by Parse with the variable's name.
type flags struct {
	fs   *flag.FlagSet
	errs []error
}

func newFlags(name, synopsis string, out io.Writer) *flags {
	fs := flag.NewFlagSet("veil "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: veil %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return &flags{fs: fs}
}

func help(text, env string) string {
	if env == "" {
		return text
	}
	return text + " (env " + env + ")"
}

func (f *flags) String(p *string, name, env, def, usage string) {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		def = v
	}
	f.fs.StringVar(p, name, def, help(usage, env))
}

func (f *flags) Bool(p *bool, name, env string, def bool, usage string) {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: want true or false", env, v))
		}
		def = b
	}
	f.fs.BoolVar(p, name, def, help(usage, env))
}

func (f *flags) Int(p *int, name, env string, def int, usage string) {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: want an integer", env, v))
		}
		def = n
	}
	f.fs.IntVar(p, name, def, help(usage, env))
}

func (f *flags) Int64(p *int64, name, env string, def int64, usage string) {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: want an integer", env, v))
		}
		def = n
	}
	f.fs.Int64Var(p, name, def, help(usage, env))
}

func (f *flags) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: want a duration such as 10s or 35d written as 840h", env, v))
		}
		def = d
	}
	f.fs.DurationVar(p, name, def, help(usage, env))
}

// Secret reads a secret from the environment only, never from a flag
// (the command line is visible to every local user in ps and
// /proc/<pid>/cmdline): env, or the file env_FILE names (its trailing
// newline dropped), for secrets mounted as files. Both set, or a file that
// cannot be read, is an error.
func (f *flags) Secret(p *string, env string) {
	v, set := os.LookupEnv(env)
	file, fromFile := os.LookupEnv(env + "_FILE")
	switch {
	case set && fromFile:
		f.errs = append(f.errs, fmt.Errorf("%s and %s_FILE are both set: want one", env, env))
	case fromFile:
		b, err := os.ReadFile(file)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s_FILE: %w", env, err))
			return
		}
		*p = strings.TrimRight(string(b), "\r\n")
	case set:
		*p = v
	}
}

// Parse parses args and reports the first bad environment variable.
func (f *flags) Parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if len(f.errs) > 0 {
		return f.errs[0]
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(f.fs.Args(), " "))
	}
	return nil
}

// logFlags are the logging settings every long-running command has.
type logFlags struct {
	level string
}

func (l *logFlags) register(f *flags) {
	f.String(&l.level, "log-level", "VEIL_LOG_LEVEL", "info", "log level: debug, info, warn or error")
}

// logger returns a JSON slog logger at the configured level.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", l.level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
}
