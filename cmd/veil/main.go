// Command veil is the one binary of the Veil platform: each component is a
// subcommand (veil dev, veil ingest, veil migrate, …). It parses flags
// and wires the services together: what runs lives in packages (the
// services' own, internal/bench for veil bench, internal/demo for veil
// demo), and each service registers its own River workers and periodic
// jobs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"dev", "run the whole platform locally (embedded Kafka broker unless VEIL_KAFKA_BROKERS is set)", runDev},
		{"migrate", "apply the Postgres and ClickHouse migrations and create the Kafka topics", runMigrate},
		{"ingest", "serve POST /v1/events and produce accepted events to Kafka", runIngest},
		{"processor", "consume usage events exactly once into ClickHouse and Redis, refused ones to the DLQ", runProcessor},
		{"usage", "print a subscription's ClickHouse totals and Redis counter as JSON", runUsage},
		{"control-plane", "serve the control-plane REST API and run its background jobs", runControlPlane},
		{"gateway", "run the Caddy gateway whose API routes the control plane manages (or a Caddy subcommand)", runGateway},
		{"bench", "measure throughput and latency: veil bench ingest | pipeline | gateway", runBench},
		{"demo", "send a scenario through a running veil dev and show the result", runDemo},
		{"healthcheck", "exit 0 when a URL answers 200 (for container health checks)", runHealthcheck},
		{"token", "print a control-plane bearer token signed with VEIL_JWT_SECRET", runToken},
		{"pricing", "check plan files offline: veil pricing validate FILE…", runPricing},
		{"billing", "recompute an invoice from what it cites: veil billing explain INVOICE", runBilling},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "veil:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout, cmds)
		if len(args) == 0 {
			return errors.New("a command is required")
		}
		return nil
	}
	for _, c := range cmds {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	printUsage(stderr, cmds)
	return fmt.Errorf("unknown command %q", args[0])
}

func printUsage(w io.Writer, cmds []command) {
	fmt.Fprintln(w, "Usage: veil <command> [flags]\n\nCommands:")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun veil <command> --help for the flags of a command. Every flag also reads an environment variable, named in its help.")
}
