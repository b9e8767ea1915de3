package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/catalog/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/periodic"
)

// ReconcileReport says what one comparison of the database with the
// gateway found and did.
type ReconcileReport struct {
	Checked    int      `json:"checked"`    // APIs that should be routed
	Missing    int      `json:"missing"`    // routed APIs without a gateway route
	Mismatched int      `json:"mismatched"` // routes that differ from their API
	Orphans    int      `json:"orphans"`    // veil routes without a routed API
	Requeued   int      `json:"requeued"`   // approved APIs with no registration job, queued again
	Refused    int      `json:"refused"`    // routed APIs whose upstream the egress policy refuses now, suspended
	Healed     int      `json:"healed"`     // drift fixed in this run
	Unhealed   []string `json:"unhealed"`   // what could not be fixed, and why
}

// Reconcile compares the APIs that should be served (active, deprecated)
// with the veil routes on the gateway and heals both directions: missing or
// different routes are put again, routes without a routed API are removed.
// Approved APIs whose registration job was lost are queued again. The
// scheduled job runs it; a run an admin asks for is ReconcileRequested.
func (s *Service) Reconcile(ctx context.Context) (ReconcileReport, error) {
	return s.reconcile(ctx, nil)
}

// ReconcileRequested is Reconcile run because actor asked for it, audited
// twice: "gateway.reconcile" with the drift found, then
// "gateway.reconcile.result" with what the run healed and what it could
// not. What a run changes is mostly the gateway's routes, through its admin
// API, which no transaction of ours can hold; so the first entry is the
// request's, and it commits after the drift is found and before the first
// call that heals it. If it cannot be written, nothing is changed; once it
// is, every change the run makes has an entry that asked for it, and the
// second says which changes were made. The run's database changes
// (suspensions of refused upstreams) carry their own entries, in their
// transactions.
func (s *Service) ReconcileRequested(ctx context.Context, actor identity.Actor) (ReconcileReport, error) {
	entry := func(action string, rep ReconcileReport) error {
		return audit.RecordNow(ctx, s.pool, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), Action: action,
			TargetType: "gateway", TargetID: "apis", After: rep,
		})
	}
	rep, err := s.reconcile(ctx, func(found ReconcileReport) error { return entry("gateway.reconcile", found) })
	if err != nil {
		return rep, err
	}
	if err := entry("gateway.reconcile.result", rep); err != nil {
		return rep, fmt.Errorf("record reconciliation result: %w", err)
	}
	return rep, nil
}

// reconcile finds the drift, calls record (when not nil) with what was
// found and, unless it fails, heals.
func (s *Service) reconcile(ctx context.Context, record func(found ReconcileReport) error) (ReconcileReport, error) {
	rep := ReconcileReport{Unhealed: []string{}}
	d, err := s.findDrift(ctx, &rep)
	if err != nil {
		return rep, err
	}
	if record != nil {
		if err := record(rep); err != nil {
			return rep, fmt.Errorf("record reconciliation: %w", err)
		}
	}
	s.healDrift(ctx, &rep, d)
	s.metrics.reconcileFixed.Add(rep.Healed)
	s.metrics.reconcileLeft.Add(len(rep.Unhealed))
	if rep.Healed > 0 || len(rep.Unhealed) > 0 {
		s.log.WarnContext(ctx, "gateway drift found", "missing", rep.Missing, "mismatched", rep.Mismatched,
			"orphans", rep.Orphans, "requeued", rep.Requeued, "healed", rep.Healed, "unhealed", len(rep.Unhealed))
	}
	return rep, nil
}

// routeDrift is what a reconciliation found between the database and the
// gateway's routes, before it heals anything.
type routeDrift struct {
	refused  []refusedUpstream // routed APIs whose upstream the egress policy refuses now
	routes   []uuid.UUID       // routed APIs whose route is missing or different
	orphans  []string          // veil routes without a routed API
	approved []uuid.UUID       // approved APIs, whose registration job may be lost
}

type refusedUpstream struct {
	id  uuid.UUID
	err error
}

// String names the API, in what healDrift reports.
func (r refusedUpstream) String() string { return r.id.String() }

// findDrift compares the database with the gateway, counting in rep what
// differs; it changes nothing.
func (s *Service) findDrift(ctx context.Context, rep *ReconcileReport) (routeDrift, error) {
	want, approved, err := s.servedAPIs(ctx, rep)
	if err != nil {
		return routeDrift{}, err
	}
	rep.Checked = len(want)
	have, err := s.gatewayRoutes(ctx)
	if err != nil {
		return routeDrift{}, err
	}
	d := routeDrift{approved: approved}
	s.findWanted(ctx, rep, &d, want, have)
	approvedSet := map[string]bool{}
	for _, id := range approved {
		approvedSet[RouteID(id)] = true
	}
	for id := range have {
		if _, ok := want[id]; ok || approvedSet[id] {
			continue // approved ones belong to their registration job
		}
		rep.Orphans++
		d.orphans = append(d.orphans, id)
	}
	return d, nil
}

// healDrift heals what findDrift found, counting in rep what it healed and
// what it could not.
func (s *Service) healDrift(ctx context.Context, rep *ReconcileReport, d routeDrift) {
	healEach(rep, "api %s: take refused upstream off the gateway", d.refused,
		func(r refusedUpstream) (bool, error) { return s.suspendRefused(ctx, r.id, r.err) })
	healEach(rep, "api %s: put route", d.routes, func(id uuid.UUID) (bool, error) { return s.healRoute(ctx, id) })
	healEach(rep, "route %s: delete", d.orphans, func(id string) (bool, error) { return s.removeOrphan(ctx, id) })
	rep.Requeued += healEach(rep, "api %s: requeue registration", d.approved,
		func(id uuid.UUID) (bool, error) { return s.requeue(ctx, id) })
}

// healEach runs fix on each item, adding to rep.Healed those it fixed and
// to rep.Unhealed the errors of those it could not, each after what, a
// format of the item (its %s); it returns how many it fixed.
func healEach[T any](rep *ReconcileReport, what string, items []T, fix func(T) (bool, error)) int {
	n := 0
	for _, it := range items {
		fixed, err := fix(it)
		if err != nil {
			rep.Unhealed = append(rep.Unhealed, fmt.Sprintf(what, it)+": "+err.Error())
			continue
		}
		if fixed {
			n++
		}
	}
	rep.Healed += n
	return n
}

// servedAPIs returns the APIs the gateway should serve (active,
// deprecated) by route id, and the approved ones still registering.
// Routes are built from what was approved (loadServed); an approved API
// without a record of it is returned all the same, so its registration
// job fails it, while a routed one is left alone and reported.
func (s *Service) servedAPIs(ctx context.Context, rep *ReconcileReport) (map[string]API, []uuid.UUID, error) {
	rows, err := db.New(s.pool).APIServedListRouting(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list routed apis: %w", err)
	}
	want := map[string]API{}
	var approved []uuid.UUID
	for _, row := range rows {
		a, err := toServed(row, nil)
		if errors.Is(err, ErrNotApproved) && a.State != StateApproved {
			// Routed without a record of its approval (put in its state by
			// hand): nothing approved to serve, so it is left alone.
			rep.Unhealed = append(rep.Unhealed, fmt.Sprintf("api %s: %s without an approved snapshot", a.ID, a.State))
			continue
		}
		if err != nil && !errors.Is(err, ErrNotApproved) {
			return nil, nil, err
		}
		if a.State == StateApproved {
			approved = append(approved, a.ID)
			continue
		}
		want[RouteID(a.ID)] = a
	}
	return want, approved, nil
}

// gatewayRoutes returns the gateway's routes under the catalog's prefix by
// id. Routes that List cannot parse were not written by the catalog: they
// are returned with their id alone, so they count as different from any
// API (put again) or as orphans (removed).
func (s *Service) gatewayRoutes(ctx context.Context) (map[string]gatewayroute.Route, error) {
	routes, err := s.cfg.Gateway.List(ctx, RoutePrefix)
	if err != nil && !errors.Is(err, gatewayroute.ErrUnrecognizedRoute) {
		return nil, fmt.Errorf("%w: %w", ErrGatewayUnavailable, err)
	}
	ids, err := s.cfg.Gateway.IDs(ctx, RoutePrefix)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGatewayUnavailable, err)
	}
	have := map[string]gatewayroute.Route{}
	for _, id := range ids {
		have[id] = gatewayroute.Route{ID: id}
	}
	for _, r := range routes {
		have[r.ID] = r
	}
	return have, nil
}

// findWanted adds to d each API of want whose route is missing or
// different in have, and each one whose upstream the egress policy
// refuses now.
func (s *Service) findWanted(ctx context.Context, rep *ReconcileReport, d *routeDrift, want map[string]API, have map[string]gatewayroute.Route) {
	for id, a := range want {
		// The policy or the upstream's DNS may have changed since the API
		// was approved: an upstream refused now is taken off the gateway,
		// whatever its route looks like. A name that does not resolve at
		// the moment is not a refusal (the gateway's dialer refuses to
		// connect meanwhile).
		if err := s.cfg.Egress.CheckURL(ctx, a.UpstreamURL); errors.Is(err, egress.ErrRefused) {
			rep.Refused++
			d.refused = append(d.refused, refusedUpstream{id: a.ID, err: err})
			continue
		}
		r, ok := have[id]
		switch {
		case !ok:
			rep.Missing++
		case !sameRoute(r, s.gatewayRoute(a)):
			rep.Mismatched++
		default:
			continue
		}
		d.routes = append(d.routes, a.ID)
	}
}

// healRoute puts an API's route again, under the API's lock and only if
// the API is still routed.
func (s *Service) healRoute(ctx context.Context, id uuid.UUID) (bool, error) {
	healed := false
	err := s.withAPILock(ctx, id, func(c conn) error {
		a, err := loadServed(ctx, c, id)
		if err != nil || !a.State.Routed() {
			return nil // changed meanwhile; its own job handles it
		}
		healed = true
		return s.cfg.Gateway.Put(ctx, s.gatewayRoute(a))
	})
	return healed, err
}

// suspendRefused suspends a routed API whose upstream the egress policy
// refuses and deletes its route, under the API's lock. An admin resumes it
// once the upstream is fixed or allowed; its registration checks again.
func (s *Service) suspendRefused(ctx context.Context, id uuid.UUID, refused error) (bool, error) {
	done := false
	err := s.withAPILock(ctx, id, func(c conn) error {
		if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			a, err := s.lockAPI(ctx, tx, identity.System, id)
			if err != nil || !a.State.Routed() {
				return nil // changed meanwhile; its own job handles it
			}
			done = true
			_, err = s.transition(ctx, tx, identity.System, a, StateSuspended, refusedReason(refused))
			return err
		}); err != nil {
			return err
		}
		// Deleted even if the API left routed meanwhile: a route to a
		// refused upstream has no reason to stay.
		return s.cfg.Gateway.Delete(ctx, RouteID(id))
	})
	if done {
		s.log.WarnContext(ctx, "api suspended: upstream refused by the egress policy", "api_id", id, "kind", egress.Kind(refused))
	}
	return done, err
}

// removeOrphan deletes a route whose API is not routed, under the API's
// lock; routes whose id names no API are removed at once.
func (s *Service) removeOrphan(ctx context.Context, routeID string) (bool, error) {
	id, err := uuid.Parse(strings.TrimPrefix(routeID, RoutePrefix))
	if err != nil {
		return true, s.cfg.Gateway.Delete(ctx, routeID)
	}
	removed := false
	err = s.withAPILock(ctx, id, func(c conn) error {
		a, err := loadAPI(ctx, c, id)
		if err == nil && (a.State.Routed() || a.State == StateApproved) {
			return nil
		}
		if err != nil && !errors.Is(err, ErrAPINotFound) {
			return err
		}
		removed = true
		return s.cfg.Gateway.Delete(ctx, routeID)
	})
	return removed, err
}

// requeue queues a registration for an approved API that has no
// registration job waiting or running (lost, e.g. cancelled by an
// operator). A job whose worker died stays running until River rescues it,
// so it is not duplicated here.
func (s *Service) requeue(ctx context.Context, id uuid.UUID) (bool, error) {
	inserted := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		open, err := registrationJobOpen(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("look for registration job: %w", err)
		}
		if open {
			return nil
		}
		inserted = true
		return s.enqueueRegister(ctx, tx, id)
	})
	return inserted, err
}

func sameRoute(a, b gatewayroute.Route) bool {
	if a.PathPrefix != b.PathPrefix || strings.TrimSuffix(a.Upstream, "/") != strings.TrimSuffix(b.Upstream, "/") {
		return false
	}
	if (a.Veil == nil) != (b.Veil == nil) || a.Veil != nil && (a.Veil.APIID != b.Veil.APIID ||
		!slices.Equal(a.Veil.RouteTemplates, b.Veil.RouteTemplates)) {
		return false
	}
	// A rotation, or the end of its overlap, changes the route.
	if (a.Signing == nil) != (b.Signing == nil) || a.Signing != nil && *a.Signing != *b.Signing {
		return false
	}
	for k, v := range b.Headers {
		if a.Headers[k] != v {
			return false
		}
	}
	return true
}

// ReconcileArgs is the scheduled reconciliation job.
type ReconcileArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return "api_reconcile" }

// ReconcileWorker returns the worker of the scheduled reconciliation,
// which reconciles once a job.
func (s *Service) ReconcileWorker() *periodic.Worker[ReconcileArgs] {
	return periodic.NewWorker[ReconcileArgs](func(ctx context.Context) error {
		_, err := s.Reconcile(ctx)
		return err
	})
}

// SweepArgs is the scheduled overdue-approvals job.
type SweepArgs struct{}

// Kind implements river.JobArgs.
func (SweepArgs) Kind() string { return "approval_sweep" }

// SweepWorker returns the worker of the overdue sweep, which sweeps once a
// job.
func (s *Service) SweepWorker() *periodic.Worker[SweepArgs] {
	return periodic.NewWorker[SweepArgs](func(ctx context.Context) error {
		_, err := s.SweepOverdue(ctx)
		return err
	})
}
