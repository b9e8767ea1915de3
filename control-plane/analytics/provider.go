package analytics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering"
)

// ErrProviderNotFound: the organization of a provider view does not exist,
// or the caller may not see its analytics (the same answer, so that ids of
// other organizations tell nothing).
var ErrProviderNotFound = errors.New("provider not found")

// DefaultProviderTop is how many top consumers and routes a provider view
// lists unless asked otherwise.
const DefaultProviderTop = 10

// MaxQuotaHealth bounds the quota health rows of a provider view (the
// fullest first).
const MaxQuotaHealth = 100

// ProviderTotals are the window's counts and its unique consumers
// (subscriptions with at least one call).
type ProviderTotals struct {
	Counts
	UniqueConsumers uint64 `json:"unique_consumers"`
}

// ProviderDay is one day of the caller's zone.
type ProviderDay struct {
	Day string `json:"day"`
	Counts
}

// ProviderRoute is one method and route template.
type ProviderRoute struct {
	Method string `json:"method"`
	Route  string `json:"route"`
	Counts
}

// ProviderAPI is one API of the provider.
type ProviderAPI struct {
	APIID           uuid.UUID `json:"api_id"`
	Name            string    `json:"name"`
	UniqueConsumers uint64    `json:"unique_consumers"`
	Counts
}

// TopConsumer is a subscription among the busiest, with its organization.
type TopConsumer struct {
	SubscriptionID   string          `json:"subscription_id"`
	OrganizationID   *uuid.UUID      `json:"organization_id"`
	OrganizationName *string         `json:"organization_name"`
	Calls            uint64          `json:"calls"`
	Units            decimal.Decimal `json:"units"`
}

// RevenueDay is what one plan brought in one day: invoiced is the total of
// the invoices finalized that day (after discounts and tax, before
// credits; void ones left out), accrued the cost so far of the plan's
// current periods (subscription_outlooks), on the day it was computed.
type RevenueDay struct {
	Day      string          `json:"day"`
	PlanID   uuid.UUID       `json:"plan_id"`
	PlanName string          `json:"plan_name"`
	Invoiced decimal.Decimal `json:"invoiced"`
	Accrued  decimal.Decimal `json:"accrued"`
}

// QuotaHealth is where one subscription's meter stands against its quota
// this period: ok below 80%, near from 80%, over from 100%.
type QuotaHealth struct {
	SubscriptionID   uuid.UUID       `json:"subscription_id"`
	OrganizationName string          `json:"organization_name"`
	Meter            string          `json:"meter"`
	Used             decimal.Decimal `json:"used"`
	Quota            decimal.Decimal `json:"quota"`
	Percent          decimal.Decimal `json:"percent"`
	State            string          `json:"state"`
	RunsOutAt        *time.Time      `json:"runs_out_at"`
}

// ProviderView answers GET /v1/apis/{id}/analytics (APIID set) and GET
// /v1/providers/{org_id}/analytics (ByAPI set).
type ProviderView struct {
	APIID          *uuid.UUID              `json:"api_id,omitempty"`
	OrganizationID uuid.UUID               `json:"organization_id"`
	From           time.Time               `json:"from"`
	To             time.Time               `json:"to"`
	TimeZone       string                  `json:"time_zone"`
	Totals         ProviderTotals          `json:"totals"`
	ByDay          []ProviderDay           `json:"by_day"`
	TopConsumers   []TopConsumer           `json:"top_consumers"`
	TopRoutes      []ProviderRoute         `json:"top_routes"`
	ByAPI          []ProviderAPI           `json:"by_api,omitempty"`
	Revenue        map[string][]RevenueDay `json:"revenue"`
	QuotaHealth    []QuotaHealth           `json:"quota_health"`
}

// APIAnalytics answers the view of one API for its provider's members and
// admins; anyone else gets catalog.ErrAPINotFound, as for a missing API.
func (s *Service) APIAnalytics(ctx context.Context, act identity.Actor, apiID uuid.UUID, w Window, top int) (ProviderView, error) {
	var org uuid.UUID
	var name string
	err := s.pool.QueryRow(ctx, "SELECT organization_id, name FROM apis WHERE id = $1", apiID).Scan(&org, &name)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !act.IsAdmin() && act.OrgID != org) {
		return ProviderView{}, catalog.ErrAPINotFound
	}
	if err != nil {
		return ProviderView{}, fmt.Errorf("read api: %w", err)
	}
	v, err := s.providerView(ctx, org, map[uuid.UUID]string{apiID: name}, w, top, false)
	v.APIID = &apiID
	return v, err
}

// ProviderAnalytics answers the view of all of an organization's APIs for
// its members and admins; anyone else gets ErrProviderNotFound.
func (s *Service) ProviderAnalytics(ctx context.Context, act identity.Actor, orgID uuid.UUID, w Window, top int) (ProviderView, error) {
	if !act.IsAdmin() && act.OrgID != orgID {
		return ProviderView{}, ErrProviderNotFound
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)", orgID).Scan(&exists); err != nil {
		return ProviderView{}, fmt.Errorf("read organization: %w", err)
	}
	if !exists {
		return ProviderView{}, ErrProviderNotFound
	}
	rows, err := s.pool.Query(ctx, "SELECT id, name FROM apis WHERE organization_id = $1 ORDER BY id LIMIT $2", orgID, metering.MaxProviderAPIs)
	if err != nil {
		return ProviderView{}, fmt.Errorf("list apis: %w", err)
	}
	apis := map[uuid.UUID]string{}
	for rows.Next() {
		var id uuid.UUID
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			rows.Close()
			return ProviderView{}, fmt.Errorf("list apis: %w", err)
		}
		apis[id] = name
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ProviderView{}, fmt.Errorf("list apis: %w", err)
	}
	return s.providerView(ctx, orgID, apis, w, top, true)
}

// providerView reads the usage from ClickHouse and revenue, quota health
// and consumers' organizations from Postgres, at once.
func (s *Service) providerView(ctx context.Context, org uuid.UUID, apis map[uuid.UUID]string, w Window, top int, byAPI bool) (ProviderView, error) {
	if s.ch == nil {
		return ProviderView{}, ErrUnavailable
	}
	zone := w.Loc
	if zone == nil {
		zone = time.UTC
	}
	// Provider windows are whole minutes, the grain of the finest roll-up
	// by API: the window asked for is rounded out, and the answer's from
	// and to say what was read.
	from, to := metering.ProviderWindow(w.From, w.To)
	v := ProviderView{OrganizationID: org, From: from, To: to, TimeZone: zone.String(),
		ByDay: []ProviderDay{}, TopConsumers: []TopConsumer{}, TopRoutes: []ProviderRoute{},
		Revenue: map[string][]RevenueDay{}, QuotaHealth: []QuotaHealth{}}
	if len(apis) == 0 {
		if byAPI {
			v.ByAPI = []ProviderAPI{}
		}
		v.Totals.ErrorRate = rate(0, 0)
		v.Totals.Units = decimal.Zero
		return v, nil
	}
	ids := make([]uuid.UUID, 0, len(apis))
	q := metering.ProviderQuery{From: from, To: to, Zone: zone.String(), Top: cmpOr(top, DefaultProviderTop), ByAPI: byAPI}
	for id := range apis {
		ids = append(ids, id)
		q.APIs = append(q.APIs, id.String())
	}
	slices.Sort(q.APIs)
	var rep metering.ProviderReport
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		rep, err = metering.ProviderUsage(gctx, s.ch, q)
		return err
	})
	g.Go(func() (err error) {
		v.Revenue, err = s.revenue(gctx, ids, from, to, zone)
		return err
	})
	g.Go(func() (err error) {
		v.QuotaHealth, err = s.quotaHealth(gctx, ids)
		return err
	})
	if err := g.Wait(); err != nil {
		return ProviderView{}, err
	}
	fillUsage(&v, rep, apis, byAPI)
	if err := s.nameConsumers(ctx, ids, rep.Consumers, &v); err != nil {
		return ProviderView{}, err
	}
	return v, nil
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// fillUsage copies the ClickHouse figures into the view.
func fillUsage(v *ProviderView, rep metering.ProviderReport, apis map[uuid.UUID]string, byAPI bool) {
	v.Totals = ProviderTotals{Counts: countsOf(rep.Total), UniqueConsumers: rep.UniqueConsumers}
	for _, d := range rep.Days {
		v.ByDay = append(v.ByDay, ProviderDay{Day: d.Day, Counts: countsOf(d.ProviderStats)})
	}
	for _, r := range rep.Routes {
		v.TopRoutes = append(v.TopRoutes, ProviderRoute{Method: r.Method, Route: r.Route, Counts: countsOf(r.ProviderStats)})
	}
	if !byAPI {
		return
	}
	got := map[uuid.UUID]metering.ProviderAPI{}
	for _, a := range rep.APIs {
		if id, err := uuid.Parse(a.APIID); err == nil {
			got[id] = a
		}
	}
	v.ByAPI = []ProviderAPI{}
	for id, name := range apis {
		a := got[id]
		v.ByAPI = append(v.ByAPI, ProviderAPI{APIID: id, Name: name, UniqueConsumers: a.UniqueConsumers, Counts: countsOf(a.ProviderStats)})
	}
	slices.SortFunc(v.ByAPI, func(a, b ProviderAPI) int {
		if a.Calls != b.Calls {
			return -cmpUint(a.Calls, b.Calls)
		}
		return strings.Compare(a.APIID.String(), b.APIID.String())
	})
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func countsOf(s metering.ProviderStats) Counts {
	return Counts{Calls: s.Calls, Units: s.Units, Errors: s.ServerErrors, ClientErrors: s.ClientErrors,
		ErrorRate: rate(s.ServerErrors, s.Calls), LatencyMS: Latency{P50: s.Latency.P50, P90: s.Latency.P90, P99: s.Latency.P99}}
}

// nameConsumers resolves the top consumers' subscriptions to their
// organizations; a subject that is not a subscription of these APIs keeps
// null names.
func (s *Service) nameConsumers(ctx context.Context, apis []uuid.UUID, top []metering.ProviderConsumer, v *ProviderView) error {
	var subs []uuid.UUID
	for _, c := range top {
		if id, err := uuid.Parse(c.Subject); err == nil {
			subs = append(subs, id)
		}
	}
	type org struct {
		id   uuid.UUID
		name string
	}
	orgs := map[string]org{}
	if len(subs) > 0 {
		rows, err := s.pool.Query(ctx, `SELECT s.id, o.id, o.name FROM subscriptions s JOIN organizations o ON o.id = s.organization_id
WHERE s.id = ANY($1) AND s.api_id = ANY($2)`, subs, apis)
		if err != nil {
			return fmt.Errorf("read consumers: %w", err)
		}
		for rows.Next() {
			var sub uuid.UUID
			var o org
			if err := rows.Scan(&sub, &o.id, &o.name); err != nil {
				rows.Close()
				return fmt.Errorf("read consumers: %w", err)
			}
			orgs[sub.String()] = o
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read consumers: %w", err)
		}
	}
	for _, c := range top {
		tc := TopConsumer{SubscriptionID: c.Subject, Calls: c.Calls, Units: c.Units}
		if id, err := uuid.Parse(c.Subject); err == nil {
			if o, ok := orgs[id.String()]; ok {
				tc.OrganizationID, tc.OrganizationName = &o.id, &o.name
			}
		}
		v.TopConsumers = append(v.TopConsumers, tc)
	}
	return nil
}
