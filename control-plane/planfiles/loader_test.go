package planfiles_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/planfiles"
	"github.com/veil-platform/veil/internal/testenv"
)

const plan = `api: weather
plan: pro
name: Pro
type: hybrid
currency: USD
base_fee: "19.00"
meters:
  - slug: calls
    name: Calls
    aggregation: count
charges:
  - meter: calls
    model: graduated
    tiers:
      - up_to: 1000
        unit_price: "0.001"
      - up_to: unlimited
        unit_price: "0.0005"
`

type fixture struct {
	t       *testing.T
	pool    *pgxpool.Pool
	dir     string
	apiID   uuid.UUID
	org     uuid.UUID
	metrics *metrics.Set
	loader  *planfiles.Loader
	events  *events
}

func setup(t *testing.T) *fixture {
	f := &fixture{t: t, pool: testenv.Postgres(t), dir: t.TempDir(), metrics: metrics.NewSet(), events: &events{}}
	f.org = testenv.Org(t, f.pool, "provider")
	if err := f.pool.QueryRow(t.Context(), `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'Weather', 'weather', 'http://127.0.0.1:1', '1', 'active', 'provider-user') RETURNING id`, f.org).Scan(&f.apiID); err != nil {
		t.Fatal(err)
	}
	f.loader = f.newLoader(f.metrics)
	return f
}

func (f *fixture) newLoader(set *metrics.Set) *planfiles.Loader {
	l, err := planfiles.New(planfiles.Config{Dir: f.dir, Pool: f.pool, Logger: testenv.Logger(f.t), Metrics: set, Publisher: f.events})
	if err != nil {
		f.t.Fatal(err)
	}
	return l
}

func (f *fixture) write(name, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) reload() planfiles.Report {
	f.t.Helper()
	rep, err := f.loader.Reload(f.t.Context())
	if err != nil {
		f.t.Fatalf("Reload = %v", err)
	}
	return rep
}

// versions lists the plan's versions as "version source created_by", and
// the first tier price of each.
func (f *fixture) versions(slug string) []string {
	f.t.Helper()
	rows, err := f.pool.Query(f.t.Context(), `SELECT v.version, v.source, v.created_by, coalesce(v.source_file, ''), coalesce(t.unit_price::text, '')
		FROM plans p JOIN plan_versions v ON v.plan_id = p.id
		LEFT JOIN plan_version_charges c ON c.plan_version_id = v.id
		LEFT JOIN charge_tiers t ON t.charge_id = c.id AND t.position = 1
		WHERE p.api_id = $1 AND p.slug = $2 ORDER BY v.version`, f.apiID, slug)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v int
		var source, by, file, price string
		if err := rows.Scan(&v, &source, &by, &file, &price); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, strings.Join([]string{string(rune('0' + v)), source, by, file, price}, " "))
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fixture) subscribe(version int) {
	f.t.Helper()
	consumer := testenv.Org(f.t, f.pool, "consumer-"+testenv.Suffix())
	_, err := f.pool.Exec(f.t.Context(), `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		SELECT $1, 'consumer-user', $2, v.id, now(), now() + interval '1 month'
		FROM plans p JOIN plan_versions v ON v.plan_id = p.id WHERE p.api_id = $2 AND p.slug = 'pro' AND v.version = $3`, consumer, f.apiID, version)
	if err != nil {
		f.t.Fatal(err)
	}
}

func TestReloadCreatesVersionsOnlyWhenTheFileChanges(t *testing.T) {
	f := setup(t)
	f.write("pro.yaml", plan)
	rep := f.reload()
	if len(rep.Applied) != 1 || rep.Applied[0].Version != 1 || rep.Applied[0].File != "pro.yaml" || len(rep.Unchanged) != 0 {
		t.Fatalf("first Reload = %+v; want pro.yaml applied as version 1", rep)
	}
	rep = f.reload()
	if len(rep.Applied) != 0 || len(rep.Unchanged) != 1 || rep.Unchanged[0].Version != 1 {
		t.Fatalf("second Reload = %+v; want pro.yaml unchanged", rep)
	}
	f.subscribe(1)
	f.write("pro.yaml", strings.Replace(plan, `unit_price: "0.001"`, `unit_price: "0.002"`, 1))
	rep = f.reload()
	if len(rep.Applied) != 1 || rep.Applied[0].Version != 2 {
		t.Fatalf("Reload after an edit = %+v; want version 2", rep)
	}
	got := f.versions("pro")
	want := []string{"1 file file:pro.yaml pro.yaml 0.001000000000", "2 file file:pro.yaml pro.yaml 0.002000000000"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("versions = %q; want %q (version 1 kept as it was)", got, want)
	}
	var source string
	if err := f.pool.QueryRow(t.Context(), `SELECT source_file FROM plans WHERE slug = 'pro'`).Scan(&source); err != nil || source != "pro.yaml" {
		t.Fatalf("plans.source_file = %q, %v", source, err)
	}
	var audits int
	if err := f.pool.QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE actor = 'file:pro.yaml' AND target_type = 'plan'`).Scan(&audits); err != nil || audits != 2 {
		t.Fatalf("audit entries = %d, %v; want 2 (create, version)", audits, err)
	}
}

func TestReloadAppliesNothingWhenAFileIsBad(t *testing.T) {
	f := setup(t)
	f.write("pro.yaml", plan)
	f.reload()
	// A good edit of one file and a broken other file: neither applies.
	f.write("pro.yaml", strings.Replace(plan, `unit_price: "0.001"`, `unit_price: "0.003"`, 1))
	f.write("basic.yaml", strings.Replace(strings.Replace(plan, "plan: pro", "plan: basic", 1), "up_to: 1000", "up_to: -5", 1))
	rep, err := f.loader.Reload(t.Context())
	var errs planfiles.Errors
	if !errors.As(err, &errs) || !errors.Is(err, planfiles.ErrInvalid) {
		t.Fatalf("Reload = %v; want Errors", err)
	}
	if len(rep.Errors) != 1 || rep.Errors[0].File != "basic.yaml" || rep.Errors[0].Line != 15 || rep.Errors[0].Field != "charges[0].tiers[0].up_to" {
		t.Fatalf("report errors = %+v; want basic.yaml:15 charges[0].tiers[0].up_to", rep.Errors)
	}
	if len(rep.Applied) != 0 || len(f.versions("pro")) != 1 || len(f.versions("basic")) != 0 {
		t.Fatalf("a reload with a bad file changed plans: %+v, pro %v, basic %v", rep, f.versions("pro"), f.versions("basic"))
	}
	checkMetrics(t, f.metrics, `veil_controlplane_pricing_reloads_total{result="error"} 1`, `veil_controlplane_pricing_reload_errors 1`, `veil_controlplane_pricing_reloads_total{result="ok"} 1`)
	// Fixing the file applies both.
	f.write("basic.yaml", strings.Replace(plan, "plan: pro", "plan: basic", 1))
	if rep := f.reload(); len(rep.Applied) != 2 {
		t.Fatalf("Reload after the fix = %+v; want both applied", rep)
	}
	checkMetrics(t, f.metrics, `veil_controlplane_pricing_reload_errors 0`, `veil_controlplane_pricing_reloads_total{result="ok"} 2`)
}

func checkMetrics(t *testing.T, set *metrics.Set, want ...string) {
	t.Helper()
	var b strings.Builder
	set.WritePrometheus(&b)
	for _, w := range want {
		if !strings.Contains(b.String(), w+"\n") {
			t.Errorf("metrics lack %q:\n%s", w, b.String())
		}
	}
}

func TestReloadRefusesWhatTheDatabaseForbids(t *testing.T) {
	f := setup(t)
	if _, err := f.pool.Exec(t.Context(), `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'REST plan', 'rest')`, f.apiID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(t.Context(), `INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
		SELECT id, 1, 'subscription', 'USD', 'someone' FROM plans WHERE slug = 'rest'`); err != nil {
		t.Fatal(err)
	}
	f.write("pro.yaml", plan)
	f.reload()
	f.subscribe(1)
	cases := []struct {
		name, file, content, field, msg string
	}{
		{"unknown api", "other.yaml", strings.Replace(plan, "api: weather", "api: nowhere", 1), "api", `no API has the slug "nowhere"`},
		{"plan over rest", "rest.yaml", strings.Replace(plan, "plan: pro", "plan: rest", 1), "plan", "managed over the REST API"},
		{"plan of another file", "copy.yaml", plan, "plan", "managed by the file pro.yaml"},
		{"meter in use redefined", "pro.yaml", strings.Replace(plan, "aggregation: count", "aggregation: sum\n    field: units", 1), "meters[0]", "charged by a plan version in use"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := os.ReadFile(filepath.Join(f.dir, "pro.yaml"))
			if c.file == "copy.yaml" {
				// The file that manages the plan is still there, and now
				// declares another plan: the copy is the only file
				// declaring pro, but may not take it from pro.yaml.
				f.write("pro.yaml", strings.Replace(plan, "plan: pro", "plan: basic", 1))
				t.Cleanup(func() { f.write("pro.yaml", string(before)) })
			}
			f.write(c.file, c.content)
			t.Cleanup(func() {
				if c.file == "pro.yaml" {
					f.write("pro.yaml", string(before))
				} else {
					_ = os.Remove(filepath.Join(f.dir, c.file))
				}
			})
			rep, err := f.loader.Reload(t.Context())
			if !errors.Is(err, planfiles.ErrInvalid) || len(rep.Errors) != 1 {
				t.Fatalf("Reload = %+v, %v; want one error", rep, err)
			}
			if e := rep.Errors[0]; e.File != c.file || e.Field != c.field || !strings.Contains(e.Message, c.msg) || e.Line < 1 {
				t.Fatalf("error = %+v; want %s: %s: %s", e, c.file, c.field, c.msg)
			}
			if got := f.versions("pro"); len(got) != 1 {
				t.Fatalf("versions of pro = %v; want only 1", got)
			}
		})
	}
}

// Replicas reloading the same directory at once create each version once:
// the advisory lock makes them take turns, and the later ones find the
// hash already stored.
func TestConcurrentReloadsApplyOnce(t *testing.T) {
	f := setup(t)
	f.write("pro.yaml", plan)
	var wg sync.WaitGroup
	applied := make(chan int, 8)
	for range 8 {
		l := f.newLoader(metrics.NewSet())
		wg.Go(func() {
			rep, err := l.Reload(t.Context())
			if err != nil {
				t.Error(err)
			}
			applied <- len(rep.Applied)
		})
	}
	wg.Wait()
	close(applied)
	total := 0
	for n := range applied {
		total += n
	}
	if total != 1 || len(f.versions("pro")) != 1 {
		t.Fatalf("8 concurrent reloads applied %d times, versions %v; want once", total, f.versions("pro"))
	}
}

// Watch loads the directory at start, and again after a file is saved the
// way editors save (a new file renamed over the old one); it returns when
// its context ends.
func TestWatchReloadsOnChange(t *testing.T) {
	f := setup(t)
	f.write("pro.yaml", plan)
	l, err := planfiles.New(planfiles.Config{Dir: f.dir, Pool: f.pool, Logger: testenv.Logger(t), Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Watch(ctx) }()
	waitVersions := func(n int) {
		t.Helper()
		testenv.Deadline(t, 10*time.Second, func() error {
			if got := f.versions("pro"); len(got) != n {
				return fmt.Errorf("versions %v; want %d", got, n)
			}
			return nil
		})
	}
	waitVersions(1)
	f.write(".pro.yaml.swp", "an editor's swap file")
	f.write("pro.yaml.tmp", strings.Replace(plan, `unit_price: "0.001"`, `unit_price: "0.004"`, 1))
	if err := os.Rename(filepath.Join(f.dir, "pro.yaml.tmp"), filepath.Join(f.dir, "pro.yaml")); err != nil {
		t.Fatal(err)
	}
	waitVersions(2)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch = %v; want nil when its context ends", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

// A plan whose file is renamed follows its file: the renamed file takes the
// plan over with a new version, and the plan records its new name.
func TestReloadFollowsARenamedFile(t *testing.T) {
	f := setup(t)
	f.write("pro.yaml", plan)
	f.reload()
	if err := os.Rename(filepath.Join(f.dir, "pro.yaml"), filepath.Join(f.dir, "pro-2026.yaml")); err != nil {
		t.Fatal(err)
	}
	rep := f.reload()
	if len(rep.Applied) != 1 || rep.Applied[0].File != "pro-2026.yaml" || rep.Applied[0].Version != 2 {
		t.Fatalf("reload after a rename = %+v; want pro-2026.yaml applied as version 2", rep)
	}
	var source string
	if err := f.pool.QueryRow(t.Context(), `SELECT source_file FROM plans WHERE slug = 'pro'`).Scan(&source); err != nil || source != "pro-2026.yaml" {
		t.Fatalf("plans.source_file = %q, %v; want pro-2026.yaml", source, err)
	}
	if rep := f.reload(); len(rep.Unchanged) != 1 {
		t.Fatalf("reload after that = %+v; want it unchanged", rep)
	}
}
