package planfiles_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/planfiles"
)

// events records what a reload publishes, once its transaction commits.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) Publish(_ context.Context, tx pgx.Tx, org uuid.UUID, event string, data any) error {
	plan, ok := data.(map[string]any)["plan"]
	if !ok || plan == nil {
		return errors.New("publish: no plan in the event's data")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, event+" "+org.String())
	return nil
}

func (e *events) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.got
	e.got = nil
	return out
}

// A reload writes what REST writes: plan webhooks, audited meters named by
// their slug when the file names none.
func TestReloadPublishesAndAuditsAsREST(t *testing.T) {
	f := setup(t)
	org := f.org.String()
	f.write("pro.yaml", strings.Replace(plan, "    name: Calls\n", "", 1))
	f.reload()
	if got := f.events.take(); strings.Join(got, ",") != "plan.created "+org {
		t.Fatalf("events of a new plan = %q; want plan.created", got)
	}
	var name string
	if err := f.pool.QueryRow(t.Context(), `SELECT name FROM meters WHERE api_id = $1 AND slug = 'calls'`, f.apiID).Scan(&name); err != nil || name != "calls" {
		t.Fatalf("name of a meter without one = %q, %v; want its slug, as over REST", name, err)
	}
	// A new name of the plan and of its meter.
	f.write("pro.yaml", strings.Replace(plan, "name: Pro", "name: Pro plus", 1))
	f.reload()
	if got := f.events.take(); strings.Join(got, ",") != "plan.updated "+org+",plan.version_created "+org {
		t.Fatalf("events of a renamed plan = %q; want plan.updated, plan.version_created", got)
	}
	rows, err := f.pool.Query(t.Context(), `SELECT action FROM audit_log WHERE actor = 'file:pro.yaml' AND target_type = 'meter' ORDER BY created_at, action`)
	if err != nil {
		t.Fatal(err)
	}
	actions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(actions, ",") != "meter.create,meter.update" {
		t.Fatalf("meter audit entries = %q, %v; want meter.create, meter.update", actions, err)
	}
}

// An API's meters are bounded as over REST.
func TestReloadMeterLimit(t *testing.T) {
	f := setup(t)
	if _, err := f.pool.Exec(t.Context(), `INSERT INTO meters (api_id, slug, name, aggregation, field, filter_methods, filter_routes, filter_status_classes)
		SELECT $1, 'm' || i, 'm' || i, 'count', '', '{}', '{}', '{}' FROM generate_series(1, 100) i`, f.apiID); err != nil {
		t.Fatal(err)
	}
	f.write("pro.yaml", plan)
	rep, err := f.loader.Reload(t.Context())
	if !errors.Is(err, planfiles.ErrInvalid) || len(rep.Errors) != 1 || rep.Errors[0].Field != "meters[0]" || !strings.Contains(rep.Errors[0].Message, "at most 100 meters") {
		t.Fatalf("Reload with 100 meters = %+v, %v; want meters[0] refused at the limit", rep, err)
	}
}

// A meter's change during a first subscription to a version charging it
// waits for that subscription's transaction (the version locks REST takes)
// and is refused once it commits.
func TestReloadMeterChangeWaitsForFirstSubscription(t *testing.T) {
	f := setup(t)
	f.write("pro.yaml", plan)
	f.reload()
	ctx := t.Context()
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		SELECT $1, 'bob', $2, v.id, now(), now() + interval '1 month'
		FROM plans p JOIN plan_versions v ON v.plan_id = p.id WHERE p.api_id = $2 AND p.slug = 'pro'`, f.org, f.apiID); err != nil {
		t.Fatal(err)
	}
	f.write("pro.yaml", strings.Replace(plan, "aggregation: count", "aggregation: max\n    field: latency_ms", 1))
	type answer struct {
		rep planfiles.Report
		err error
	}
	done := make(chan answer, 1)
	go func() {
		rep, err := f.loader.Reload(ctx)
		done <- answer{rep, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE NOT l.granted AND a.datname = current_database()`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case a := <-done:
			t.Fatalf("Reload during a first subscription = %+v, %v; want it to wait for the subscription", a.rep, a.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Reload neither waits for the subscription's lock nor returns")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if !errors.Is(a.err, planfiles.ErrInvalid) || len(a.rep.Errors) != 1 || !strings.Contains(a.rep.Errors[0].Message, "in use") {
		t.Fatalf("Reload after the first subscription committed = %+v, %v; want the meter refused as in use", a.rep, a.err)
	}
}
