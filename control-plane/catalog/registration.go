package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/catalog/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/validation"
)

// RegisterArgs is the job that puts an approved API on the gateway.
type RegisterArgs struct {
	APIID uuid.UUID `json:"api_id"`
}

// Kind implements river.JobArgs.
func (RegisterArgs) Kind() string { return "api_register" }

// DeregisterArgs is the job that takes a suspended or retired API off the
// gateway.
type DeregisterArgs struct {
	APIID uuid.UUID `json:"api_id"`
}

// Kind implements river.JobArgs.
func (DeregisterArgs) Kind() string { return "api_deregister" }

// Registration jobs are not unique: River records a finished job as
// completed a moment after its work returns, so a unique insert in that
// window would be dropped. Duplicates are harmless instead: the workers take
// a per-API lock and act on the API's state as they find it.
func (s *Service) enqueueRegister(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	_, err := s.cfg.Jobs.InsertTx(ctx, tx, RegisterArgs{APIID: id}, &river.InsertOpts{MaxAttempts: s.cfg.RegisterAttempts})
	if err != nil {
		return fmt.Errorf("enqueue registration: %w", err)
	}
	return nil
}

func (s *Service) enqueueDeregister(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	_, err := s.cfg.Jobs.InsertTx(ctx, tx, DeregisterArgs{APIID: id}, &river.InsertOpts{MaxAttempts: 25})
	if err != nil {
		return fmt.Errorf("enqueue deregistration: %w", err)
	}
	return nil
}

// conn is what a locked section runs its queries on: one connection, so
// that a section never holds the lock's connection while waiting for
// another one from the pool (with many sections at once, that wait could
// exhaust the pool).
type conn interface {
	db.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}

// withAPILock runs fn holding a Postgres advisory lock on the API, so that
// registration, deregistration and reconciliation of one API never
// interleave their gateway changes. fn runs its queries on the lock's
// connection. The lock lives in the session: if the process dies, Postgres
// releases it.
func (s *Service) withAPILock(ctx context.Context, id uuid.UUID, fn func(c conn) error) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire lock connection: %w", err)
	}
	defer c.Release()
	key := "veil-api:" + id.String()
	if err := db.New(c).APIAdvisoryLock(ctx, key); err != nil {
		return fmt.Errorf("lock api %s: %w", id, err)
	}
	defer func() {
		if err := db.New(c).APIAdvisoryUnlock(context.WithoutCancel(ctx), key); err != nil {
			// Closing the connection ends the session and so the lock.
			_ = c.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	return fn(c)
}

func loadAPI(ctx context.Context, c conn, id uuid.UUID) (API, error) {
	return toAPI(db.New(c).APIGetByID(ctx, id))
}

// RouteID is the gateway route @id of an API.
func RouteID(id uuid.UUID) string { return RoutePrefix + id.String() }

// gatewayRoute is the gateway route serving a.
func (s *Service) gatewayRoute(a API) gatewayroute.Route {
	r := gatewayroute.Route{
		ID:         RouteID(a.ID),
		PathPrefix: "/" + a.Slug,
		Upstream:   a.UpstreamURL,
		Headers:    map[string]string{"X-Veil-Api-Id": a.ID.String()},
		Signing:    a.gatewaySigning(s.now()),
	}
	if s.cfg.KeyAuth {
		v := &gatewayroute.Veil{APIID: a.ID.String()}
		for _, rt := range a.Routes {
			v.RouteTemplates = append(v.RouteTemplates, rt.Path)
		}
		r.Veil = v
	}
	return r
}

// backoff is the delay before retry attempt n (1-based): exponential from
// RetryBase, capped at RetryMax, with full jitter so that many failing
// registrations do not retry in step.
func (s *Service) backoff(attempt int) time.Duration {
	d := s.cfg.RetryBase << min(attempt-1, 30)
	if d <= 0 || d > s.cfg.RetryMax {
		d = s.cfg.RetryMax
	}
	return d/2 + rand.N(d/2+1)
}

// gatewayJob is what the workers of the jobs that change the gateway
// share: River's defaults, with backoff between attempts.
type gatewayJob[A river.JobArgs] struct {
	river.WorkerDefaults[A]
	s *Service
}

// NextRetry implements the backoff.
func (w *gatewayJob[A]) NextRetry(job *river.Job[A]) time.Time {
	return time.Now().Add(w.s.backoff(job.Attempt))
}

// RegisterWorker runs RegisterArgs jobs.
type RegisterWorker struct{ gatewayJob[RegisterArgs] }

// RegisterWorker returns the worker that registers approved APIs.
func (s *Service) RegisterWorker() *RegisterWorker {
	return &RegisterWorker{gatewayJob[RegisterArgs]{s: s}}
}

// Timeout bounds one attempt.
func (w *RegisterWorker) Timeout(*river.Job[RegisterArgs]) time.Duration { return 30 * time.Second }

// Work checks the upstream's health, puts the route on the gateway, checks
// the route answers through the gateway and only then marks the API active.
// A failed attempt returns its error so River retries it; the last attempt
// instead removes whatever it registered and marks the API failed.
func (w *RegisterWorker) Work(ctx context.Context, job *river.Job[RegisterArgs]) error {
	return w.s.withAPILock(ctx, job.Args.APIID, func(c conn) error { return w.work(ctx, c, job) })
}

func (w *RegisterWorker) work(ctx context.Context, c conn, job *river.Job[RegisterArgs]) error {
	s := w.s
	a, err := loadAPI(ctx, c, job.Args.APIID)
	if errors.Is(err, ErrAPINotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if a.State != StateApproved {
		// Already active (a duplicate job), or suspended or retired while
		// queued: in the latter case make sure nothing is routed.
		if !a.State.Routed() {
			return s.cfg.Gateway.Delete(ctx, RouteID(a.ID))
		}
		return nil
	}
	// From here on a is what the review approved (slug, upstream, routes,
	// health path), not the live columns, and carries its signing secret.
	a, err = loadServed(ctx, c, a.ID)
	if errors.Is(err, ErrNotApproved) {
		return s.failRegistration(ctx, c, a, ErrNotApproved.Error())
	}
	if err != nil {
		return err
	}
	if err := s.cfg.Egress.CheckURL(ctx, a.UpstreamURL); errors.Is(err, egress.ErrRefused) {
		// Refused is final (a retry would resolve to the same kind of
		// address, or the policy refuses the name itself): nothing is put
		// on the gateway, and the API fails now.
		return s.failRegistration(ctx, c, a, refusedReason(err))
	}
	regErr := s.register(ctx, a)
	if regErr == nil {
		activated, err := s.finishRegistration(ctx, c, a.ID)
		if err != nil {
			return err
		}
		if !activated {
			// The API left approved while we registered it (suspended or
			// retired): take the route away again.
			return s.cfg.Gateway.Delete(ctx, RouteID(a.ID))
		}
		s.metrics.registrations.Inc()
		s.log.InfoContext(ctx, "api active on the gateway", "api_id", a.ID, "slug", a.Slug, "attempt", job.Attempt)
		return nil
	}
	s.metrics.registerErrors.Inc()
	s.log.WarnContext(ctx, "api registration attempt failed", "api_id", a.ID, "attempt", job.Attempt, "max_attempts", job.MaxAttempts, "error", regErr)
	if errors.Is(regErr, egress.ErrRefused) {
		// The health check's dialer refused what the name resolves to
		// now: as final as a refusal before.
		return s.failRegistration(ctx, c, a, registrationReason(regErr))
	}
	if job.Attempt < job.MaxAttempts {
		return regErr
	}
	// The budget is spent: leave the gateway clean, then record the
	// failure. The provider reads the step that failed; the detail (the
	// gateway's address, its admin socket, a dial error) is in the log
	// line above, with the API id.
	return s.failRegistration(ctx, c, a, fmt.Sprintf("gateway registration failed after %d attempts: %s", job.Attempt, registrationReason(regErr)))
}

// Errors of register's steps, whose text is what a provider reads in
// state_reason.
var (
	errGatewayUpdate = errors.New("the gateway could not be updated")
	errRouteVerify   = errors.New("route could not be verified through the gateway")
)

// registrationReason is the state_reason of a registration that failed
// with err: a fixed text per step, so that no address, socket path, dial
// error or status of the platform's side reaches the provider.
func registrationReason(err error) string {
	switch {
	case errors.Is(err, egress.ErrRefused):
		return refusedReason(err)
	case errors.Is(err, errUpstreamUnhealthy), errors.Is(err, errUpstreamNoAnswer):
		// Their text is fixed already (the status class at most).
		return err.Error()
	case errors.Is(err, errGatewayUpdate):
		return errGatewayUpdate.Error()
	case errors.Is(err, errRouteVerify):
		return errRouteVerify.Error()
	}
	return "the registration could not be completed"
}

// failRegistration marks an approved API failed with reason, after taking
// its route off the gateway.
func (s *Service) failRegistration(ctx context.Context, c conn, a API, reason string) error {
	if err := s.cfg.Gateway.Delete(ctx, RouteID(a.ID)); err != nil {
		s.log.ErrorContext(ctx, "remove half-registered route; reconciliation will retry", "api_id", a.ID, "error", err)
	}
	if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		cur, err := s.lockAPI(ctx, tx, identity.System, a.ID)
		if err != nil {
			return err
		}
		if cur.State != StateApproved {
			return nil
		}
		_, err = s.transition(ctx, tx, identity.System, cur, StateFailed, reason)
		return err
	}); err != nil {
		return err
	}
	s.metrics.registerFailed.Inc()
	return nil
}

// register does the gateway side of a registration.
func (s *Service) register(ctx context.Context, a API) error {
	if a.HealthCheckPath != "" {
		if err := s.checkHealth(ctx, a); err != nil {
			return err
		}
	}
	if err := s.cfg.Gateway.Put(ctx, s.gatewayRoute(a)); err != nil {
		return fmt.Errorf("%w: put gateway route: %w", errGatewayUpdate, err)
	}
	probe := strings.TrimSuffix(s.cfg.GatewayURL, "/") + "/" + a.Slug + a.HealthCheckPath
	if err := s.probeRoute(ctx, probe, a.ID.String()); err != nil {
		return fmt.Errorf("%w: verify route through the gateway: %w", errRouteVerify, err)
	}
	return nil
}

// routeProbes is how many times a new route is probed before it counts as
// not working, 100 ms apart and then longer: Caddy swaps its configuration
// after a put, and for a moment a connection may still meet the server it
// replaces (closed under it, or answered by the previous routes).
const routeProbes = 4

// probeRoute checks the route through the gateway, again while it fails
// within routeProbes tries; the last failure is the answer.
func (s *Service) probeRoute(ctx context.Context, url, apiID string) error {
	var err error
	for i := range routeProbes {
		if err = s.check(ctx, url, apiID); err == nil {
			return nil
		}
		if i == routeProbes-1 {
			break
		}
		t := time.NewTimer(time.Duration(i+1) * 100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

// check GETs url and wants a 2xx answer. With apiID set the answer must
// also come through the API's own route, which tags it.
func (s *Service) check(ctx context.Context, url, apiID string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "Veil-Registration/1")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	// Behind key authentication a call without a key is refused by the
	// API's own veil handler, which tags the refusal: that proves the
	// route is live (the upstream's health was checked directly).
	keyRefusal := s.cfg.KeyAuth && apiID != "" && resp.StatusCode == http.StatusUnauthorized
	if (resp.StatusCode < 200 || resp.StatusCode > 299) && !keyRefusal {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	if apiID != "" && resp.Header.Get(gatewayroute.APIHeader) != apiID {
		return fmt.Errorf("GET %s: answered, but not by the route of api %s", url, apiID)
	}
	return nil
}

// finishRegistration marks an approved API active; false if it is no
// longer approved.
func (s *Service) finishRegistration(ctx context.Context, c conn, id uuid.UUID) (bool, error) {
	activated := false
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		a, err := s.lockAPI(ctx, tx, identity.System, id)
		if err != nil {
			return err
		}
		if a.State != StateApproved {
			return nil
		}
		activated = true
		_, err = s.transition(ctx, tx, identity.System, a, StateActive, "route verified through the gateway")
		return err
	})
	return activated, err
}

// DeregisterWorker runs DeregisterArgs jobs.
type DeregisterWorker struct{ gatewayJob[DeregisterArgs] }

// DeregisterWorker returns the worker that takes APIs off the gateway.
func (s *Service) DeregisterWorker() *DeregisterWorker {
	return &DeregisterWorker{gatewayJob[DeregisterArgs]{s: s}}
}

// Work removes the route unless the API is routed again by now.
func (w *DeregisterWorker) Work(ctx context.Context, job *river.Job[DeregisterArgs]) error {
	return w.s.withAPILock(ctx, job.Args.APIID, func(c conn) error {
		a, err := loadAPI(ctx, c, job.Args.APIID)
		if err == nil && (a.State.Routed() || a.State == StateApproved) {
			return nil
		}
		if err != nil && !errors.Is(err, ErrAPINotFound) {
			return err
		}
		if err := w.s.cfg.Gateway.Delete(ctx, RouteID(job.Args.APIID)); err != nil {
			return fmt.Errorf("delete gateway route: %w", err)
		}
		return nil
	})
}

// Lifecycle actions on an API outside the approval workflow.
type Action string

// Actions.
const (
	ActionSuspend   Action = "suspend"   // admin: active → suspended, route removed
	ActionResume    Action = "resume"    // admin: suspended → approved, registered again
	ActionRetry     Action = "retry"     // admin: failed → approved, registered again
	ActionDeprecate Action = "deprecate" // provider: active → deprecated, still served
	ActionRetire    Action = "retire"    // provider: → retired, route removed
	ActionRevise    Action = "revise"    // provider: rejected/failed → draft
)

// Act applies a lifecycle action.
func (s *Service) Act(ctx context.Context, actor identity.Actor, id uuid.UUID, action Action, reason string) (API, error) {
	adminOnly := action == ActionSuspend || action == ActionResume || action == ActionRetry
	if adminOnly && !actor.IsAdmin() {
		if a, err := s.GetAPI(ctx, actor, id); err != nil {
			return API{}, err
		} else if !actor.CanProvide(a.OrganizationID) {
			return API{}, ErrAPINotFound
		}
		return API{}, identity.ErrForbidden
	}
	var out API
	err := s.changeAPI(ctx, actor, id, func(tx pgx.Tx, a API) error {
		var err error
		switch action {
		case ActionSuspend:
			if out, err = s.transition(ctx, tx, actor, a, StateSuspended, reason); err == nil {
				err = s.enqueueDeregister(ctx, tx, id)
			}
		case ActionRetire:
			if out, err = s.transition(ctx, tx, actor, a, StateRetired, reason); err == nil {
				err = s.enqueueDeregister(ctx, tx, id)
			}
		case ActionResume, ActionRetry:
			// Both register again; each from its own state only.
			if from := map[Action]State{ActionResume: StateSuspended, ActionRetry: StateFailed}[action]; a.State != from {
				return fmt.Errorf("%w: %s needs %s, not %s", ErrInvalidTransition, action, from, a.State)
			}
			// They register what a review approved; without a record of
			// it the API goes back through review.
			var approved bool
			if approved, err = db.New(tx).APIHasApprovedSnapshot(ctx, id); err != nil {
				return fmt.Errorf("read approved snapshot: %w", err)
			}
			if !approved {
				return fmt.Errorf("%w: %w", ErrInvalidTransition, ErrNotApproved)
			}
			if out, err = s.transition(ctx, tx, actor, a, StateApproved, reason); err == nil {
				err = s.enqueueRegister(ctx, tx, id)
			}
		case ActionDeprecate:
			out, err = s.transition(ctx, tx, actor, a, StateDeprecated, reason)
		case ActionRevise:
			// Only a closed review sends an API back to draft: from
			// pending_approval that is the reviewer's request_changes, which
			// also closes the open request.
			if a.State != StateRejected && a.State != StateFailed {
				return fmt.Errorf("%w: revise needs rejected or failed, not %s", ErrInvalidTransition, a.State)
			}
			out, err = s.transition(ctx, tx, actor, a, StateDraft, reason)
		default:
			err = &validation.Error{Fields: []validation.Field{{Field: "action", Detail: "unknown action"}}}
		}
		return err
	})
	return out, err
}
