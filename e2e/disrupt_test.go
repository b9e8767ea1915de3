//go:build disrupt

// The tests in this file stop and restart the shared ClickHouse and Redis,
// so they run alone: make test runs them after the rest with -tags disrupt.

package e2e

import (
	"os/exec"
	"testing"
	"time"
)

// restartService stops a project-local service with its script, keeps it
// down for d, and starts it again.
func restartService(t *testing.T, name string, d time.Duration) {
	t.Helper()
	script := "../deploy/local/" + name + ".sh"
	if out, err := exec.Command(script, "stop").CombinedOutput(); err != nil {
		t.Fatalf("%s stop: %v\n%s", name, err, out)
	}
	time.Sleep(d) // the outage itself
	if out, err := exec.Command(script, "start").CombinedOutput(); err != nil {
		t.Fatalf("%s start: %v\n%s", name, err, out)
	}
}

func testSinkOutage(t *testing.T, service string) {
	e := newCrashEnv(t)
	exp, produced := e.produceInBackground(t, crashEvents(), 44)
	p := e.processor(t, "outage-1")
	time.Sleep(2 * time.Second) // let it get going before the outage
	restartService(t, service, 5*time.Second)
	produced()
	e.sinks.Check(t, exp, 5*time.Minute)
	p.kill()
}

// TestClickHouseRestartMidRun stops ClickHouse while the processor writes:
// it backs off, keeps consumption paused, and ends exact once ClickHouse is back.
func TestClickHouseRestartMidRun(t *testing.T) { testSinkOutage(t, "clickhouse") }

// TestRedisRestartMidRun does the same with Redis.
func TestRedisRestartMidRun(t *testing.T) { testSinkOutage(t, "redis") }
