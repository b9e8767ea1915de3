package planfiles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/planfiles/internal/db"
)

// Config configures a Loader.
type Config struct {
	// Dir is the plan directory (VEIL_PRICING_DIR); required.
	Dir  string
	Pool *pgxpool.Pool
	// Logger logs each reload's outcome; nil discards.
	Logger *slog.Logger
	// Metrics receives veil_controlplane_pricing_reloads_total{result}, the errors of the
	// last reload and the time of the last successful one; nil is a
	// private set.
	Metrics *metrics.Set
	// Publisher announces the plans a reload creates or changes to webhook
	// endpoints (plan.created, plan.updated, plan.version_created), in the
	// reload's transaction, as the REST API does; nil announces nothing.
	Publisher Publisher
	// Debounce is how long Watch waits after a change before it reloads,
	// so that a file written in several steps is read once; default
	// 200ms.
	Debounce time.Duration
}

// Publisher announces changes to webhook endpoints inside the caller's
// transaction (control-plane/webhooks).
type Publisher interface {
	Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error
}

// Loader loads a plan directory into Postgres.
type Loader struct {
	cfg Config
	log *slog.Logger
	// mu keeps this process's reloads (the watcher's, the API's) one at a
	// time; the advisory lock does the same across processes.
	mu          sync.Mutex
	ok, failed  *metrics.Counter
	lastErrors  atomic.Int64
	lastSuccess atomic.Int64
}

// New returns a Loader of cfg.Dir.
func New(cfg Config) (*Loader, error) {
	if cfg.Dir == "" {
		return nil, errors.New("new plan loader: no directory")
	}
	if cfg.Pool == nil {
		return nil, errors.New("new plan loader: no Postgres pool")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 200 * time.Millisecond
	}
	l := &Loader{cfg: cfg, log: cfg.Logger.With("component", "planfiles", "dir", cfg.Dir)}
	l.ok = cfg.Metrics.NewCounter(`veil_controlplane_pricing_reloads_total{result="ok"}`)
	l.failed = cfg.Metrics.NewCounter(`veil_controlplane_pricing_reloads_total{result="error"}`)
	cfg.Metrics.NewGauge(`veil_controlplane_pricing_reload_errors`, func() float64 { return float64(l.lastErrors.Load()) })
	cfg.Metrics.NewGauge(`veil_controlplane_pricing_reload_last_success_timestamp_seconds`, func() float64 {
		if t := l.lastSuccess.Load(); t > 0 {
			return float64(t) / 1e3
		}
		return math.NaN()
	})
	return l, nil
}

// Result is one plan file's outcome.
type Result struct {
	File    string    `json:"file"`
	API     string    `json:"api"`
	Plan    string    `json:"plan"`
	PlanID  uuid.UUID `json:"plan_id"`
	Version int       `json:"version"`
}

// Report is what a reload did: the files that became a new plan or
// version, those whose plan already had their content, and the errors that
// made it apply nothing.
type Report struct {
	Applied   []Result `json:"applied"`
	Unchanged []Result `json:"unchanged"`
	Errors    Errors   `json:"errors"`
}

// Reload loads the directory: every file is read and validated, then all
// are applied in one transaction, or none when any is wrong. The error is
// Errors (errors.Is ErrInvalid) when a file is at fault, the report then
// listing them; any other error is the database's.
func (l *Loader) Reload(ctx context.Context) (Report, error) {
	return l.ReloadRequested(ctx, nil)
}

// ReloadRequested is Reload asked for by actor (an admin, through the
// API): a reload that changes plans records the request in the audit log,
// in its transaction. A nil actor is the watcher.
func (l *Loader) ReloadRequested(ctx context.Context, actor *identity.Actor) (Report, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rep, err := l.reload(ctx, actor)
	var errs Errors
	switch {
	case err == nil:
		l.ok.Inc()
		l.lastErrors.Store(0)
		l.lastSuccess.Store(time.Now().UnixMilli())
		l.log.InfoContext(ctx, "plan files loaded", "applied", len(rep.Applied), "unchanged", len(rep.Unchanged))
	case errors.As(err, &errs):
		l.failed.Inc()
		rep = Report{Applied: []Result{}, Unchanged: []Result{}, Errors: errs}
		l.lastErrors.Store(int64(len(errs)))
		for _, e := range errs {
			l.log.ErrorContext(ctx, "plan file refused; nothing was reloaded", "file", e.File, "line", e.Line, "field", e.Field, "message", e.Message)
		}
	default:
		l.failed.Inc()
		l.log.ErrorContext(ctx, "plan reload failed; nothing was reloaded", "error", err)
	}
	return rep, err
}

func (l *Loader) reload(ctx context.Context, actor *identity.Actor) (Report, error) {
	sources, errs := ReadDir(l.cfg.Dir)
	plans, perrs := ParseAll(sources)
	if errs = append(errs, perrs...); len(errs) > 0 {
		errs.sort()
		return Report{}, errs
	}
	bySource := make(map[string]Source, len(sources))
	present := make(map[string]bool, len(sources))
	for _, s := range sources {
		bySource[s.Rel], present[s.Rel] = s, true
	}
	rep := Report{Applied: []Result{}, Unchanged: []Result{}, Errors: Errors{}}
	tx, err := l.cfg.Pool.Begin(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("begin plan reload: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	q := db.New(tx)
	if err := q.ReloadLock(ctx); err != nil {
		return Report{}, fmt.Errorf("lock plan reload: %w", err)
	}
	for _, p := range plans {
		a := applier{tx: tx, q: q, plan: p, src: bySource[p.File], present: present, pub: l.cfg.Publisher}
		res, applied, err := a.apply(ctx)
		if err != nil {
			return Report{}, err
		}
		errs = append(errs, a.errs...)
		if applied {
			rep.Applied = append(rep.Applied, res)
		} else if len(a.errs) == 0 {
			rep.Unchanged = append(rep.Unchanged, res)
		}
	}
	if len(errs) > 0 {
		errs.sort()
		return Report{}, errs
	}
	if actor != nil && len(rep.Applied) > 0 {
		err := audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), Action: "pricing.reload",
			TargetType: "plan_files", TargetID: l.cfg.Dir, After: rep,
		})
		if err != nil {
			return Report{}, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return Report{}, fmt.Errorf("commit plan reload: %w", err)
	}
	return rep, nil
}

// errNoRows is pgx's, for the appliers' lookups.
var errNoRows = pgx.ErrNoRows
