package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestMain lets the test binary stand in for the veil binary: with
// VEIL_TEST_EXEC=1 it runs the command in its arguments, so tests can start
// it as a process (a gateway with the flags' defaults, Caddy's
// subcommands).
func TestMain(m *testing.M) {
	if os.Getenv("VEIL_TEST_EXEC") == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "veil:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), []string{c.name, "--help"}, &out, io.Discard)
			if c.name == "bench" {
				err = run(t.Context(), []string{"bench", "ingest", "--help"}, &out, io.Discard)
			}
			if err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("veil %s --help = %v", c.name, err)
			}
			if !strings.Contains(out.String(), "Usage: veil "+c.name) {
				t.Fatalf("veil %s --help printed %q; want a usage line", c.name, out.String())
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	err := run(t.Context(), []string{"frobnicate"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Fatalf("run(frobnicate) = %v; want unknown command", err)
	}
}

func TestBadEnvironmentNamesTheVariable(t *testing.T) {
	t.Setenv("VEIL_INGEST_ACK_TIMEOUT", "ten")
	err := run(t.Context(), []string{"ingest"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "VEIL_INGEST_ACK_TIMEOUT") {
		t.Fatalf("run(ingest) with a bad duration = %v; want an error naming VEIL_INGEST_ACK_TIMEOUT", err)
	}
}

func TestIngestRequiresTokens(t *testing.T) {
	t.Setenv("VEIL_INGEST_TOKENS", "")
	t.Setenv("VEIL_POSTGRES_URL", "")
	err := run(t.Context(), []string{"ingest", "--kafka-brokers", "127.0.0.1:1"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "VEIL_INGEST_TOKENS") || !strings.Contains(err.Error(), "VEIL_POSTGRES_URL") {
		t.Fatalf("run(ingest) without bootstrap tokens or Postgres = %v; want an error naming VEIL_INGEST_TOKENS and VEIL_POSTGRES_URL", err)
	}
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestIngestCommand runs veil ingest against a broker without topics: it is
// alive but not ready until veil migrate creates them, then accepts events,
// counts them in /metrics (on its metrics address, not the ingest port)
// and shuts down cleanly.
func TestIngestCommand(t *testing.T) {
	k := testenv.NewFakeKafka(t)
	brokers := strings.Join(k.Brokers, ",")
	addr, metricsAddr := testenv.FreeLoopbackAddr(t), testenv.FreeLoopbackAddr(t)
	const token = "command-test-token-0123"

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"ingest", "--ingest-addr", addr, "--metrics-addr", metricsAddr, "--kafka-brokers", brokers, "--ingest-tokens", token, "--log-level", "error"}, io.Discard, io.Discard)
	}()
	base := "http://" + addr
	testenv.Deadline(t, 10*time.Second, func() error {
		code, _, err := get(base + "/healthz")
		if err != nil || code != 200 {
			return fmt.Errorf("healthz = %d %v", code, err)
		}
		return nil
	})
	if code, body, _ := get(base + "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "veil migrate") {
		t.Fatalf("readyz before migrate = %d %s; want 503 naming veil migrate", code, body)
	}

	if err := run(t.Context(), []string{"migrate", "--only", "kafka", "--kafka-brokers", brokers, "--kafka-partitions", "3"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("veil migrate --only kafka: %v", err)
	}
	testenv.Deadline(t, 10*time.Second, func() error {
		if code, body, _ := get(base + "/readyz"); code != 200 {
			return fmt.Errorf("readyz = %d %s", code, body)
		}
		return nil
	})

	ev := fmt.Sprintf(`{"specversion":"1.0","id":"cmd-1","source":"/cmd-test","type":"veil.usage.record","time":%q,"subject":"5f0c2a52-0d0e-4c6b-9a61-3c1f1d9c0c01","data":{"api_id":"api_1"}}`,
		time.Now().UTC().Format(time.RFC3339))
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/events", strings.NewReader(ev))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/events = %d; want 202", resp.StatusCode)
	}
	// The producer's batch hook may run just after the acknowledgement.
	testenv.Deadline(t, 10*time.Second, func() error {
		_, metricsText, err := get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		for _, want := range []string{"veil_ingest_events_accepted_total 1", `veil_kafka_produced_records_total{client="veil-ingest",topic="veil.usage.raw"} 1`} {
			if !strings.Contains(metricsText, want) {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
	if code, _, err := get(base + "/metrics"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /metrics on the ingest port = %d, %v; want 404", code, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("veil ingest exited with %v; want a clean shutdown", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("veil ingest did not stop within 20s of its context ending")
	}
	recs := k.ReadAll(t, broker.TopicUsageRaw)
	if len(recs) != 1 || string(recs[0].Key) != "5f0c2a52-0d0e-4c6b-9a61-3c1f1d9c0c01" {
		t.Fatalf("topic holds %d records; want the one event keyed by its subscription", len(recs))
	}
}
