package planfiles

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/planfiles/internal/db"
	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/metering"
)

// applier writes one plan file inside the reload's transaction. What only
// the database can refuse (no such API, a plan managed elsewhere, a meter
// in use) is collected in errs; a returned error is the database's.
type applier struct {
	tx   pgx.Tx
	q    *db.Queries
	plan *Plan
	src  Source
	// present are the directory's files: a plan whose file is gone may
	// be taken over by the file that now declares it (a renamed file).
	present map[string]bool
	// pub announces plan changes to webhook endpoints; nil announces
	// nothing.
	pub  Publisher
	errs Errors
}

func (a *applier) fail(field, format string, args ...any) {
	a.errs = append(a.errs, Error{File: a.plan.File, Line: a.plan.Line(field), Field: field, Message: fmt.Sprintf(format, args...)})
}

// by is who a file's versions and audit entries name.
func (a *applier) by() string { return "file:" + a.plan.File }

// actor is the file as the writer of its meters and plans.
func (a *applier) actor() identity.Actor {
	return identity.Actor{Subject: a.by(), Role: identity.RoleSystem}
}

func (a *applier) apply(ctx context.Context) (res Result, applied bool, err error) {
	p := a.plan
	res = Result{File: p.File, API: p.API, Plan: p.Slug}
	api, err := a.q.APIGetBySlug(ctx, p.API)
	if errors.Is(err, errNoRows) {
		a.fail("api", "no API has the slug %q", p.API)
		return res, false, nil
	}
	if err != nil {
		return res, false, fmt.Errorf("load api %s: %w", p.API, err)
	}
	cur, err := a.q.PlanGetBySlug(ctx, db.PlanGetBySlugParams{APIID: api.ID, Slug: p.Slug})
	exists := err == nil
	if err != nil && !errors.Is(err, errNoRows) {
		return res, false, fmt.Errorf("load plan %s: %w", p.Slug, err)
	}
	if exists {
		res.PlanID, res.Version = cur.ID, int(cur.Version)
		switch {
		case cur.SourceFile == nil:
			a.fail("plan", "plan %s of API %s is managed over the REST API, not by a file", p.Slug, p.API)
			return res, false, nil
		case *cur.SourceFile != p.File && a.present[*cur.SourceFile]:
			a.fail("plan", "plan %s of API %s is managed by the file %s", p.Slug, p.API, *cur.SourceFile)
			return res, false, nil
		case *cur.SourceFile == p.File && cur.ContentHash != nil && *cur.ContentHash == a.src.Hash:
			return res, false, nil
		}
	}
	if err := a.meters(ctx, api.ID, api.OrganizationID); err != nil || len(a.errs) > 0 {
		return res, false, err
	}
	planChanged := false
	if exists {
		planChanged, err = a.updatePlan(ctx, cur)
		res.Version++
	} else {
		res.PlanID, err = a.insertPlan(ctx, api.ID)
		res.Version = 1
	}
	if err != nil {
		return res, false, err
	}
	if err := a.insertVersion(ctx, api.ID, res.PlanID, res.Version); err != nil {
		return res, false, err
	}
	action := "plan.version.create"
	if !exists {
		action = "plan.create"
	}
	err = audit.Record(ctx, a.tx, audit.Change{
		Actor: a.by(), ActorRole: string(identity.RoleSystem), OrganizationID: api.OrganizationID,
		Action: action, TargetType: "plan", TargetID: res.PlanID.String(),
		After: map[string]any{"file": p.File, "content_hash": a.src.Hash, "version": res.Version, "status": p.Status},
	})
	if err != nil {
		return res, false, err
	}
	return res, true, a.publish(ctx, api.OrganizationID, res.PlanID, exists, planChanged)
}

// publish announces the plan's change to webhook endpoints as REST does:
// plan.created for a new plan; plan.updated when its name, description,
// status or file changed, and plan.version_created for its new version.
func (a *applier) publish(ctx context.Context, org, planID uuid.UUID, existed, changed bool) error {
	if a.pub == nil {
		return nil
	}
	plan, err := subscriptions.ReadPlan(ctx, a.tx, planID)
	if err != nil {
		return fmt.Errorf("read plan %s: %w", a.plan.Slug, err)
	}
	events := []string{"plan.created"}
	if existed {
		events = []string{"plan.version_created"}
		if changed {
			events = []string{"plan.updated", "plan.version_created"}
		}
	}
	for _, e := range events {
		if err := a.pub.Publish(ctx, a.tx, org, e, map[string]any{"plan": plan}); err != nil {
			return fmt.Errorf("publish %s: %w", e, err)
		}
	}
	return nil
}

func (a *applier) insertPlan(ctx context.Context, apiID uuid.UUID) (uuid.UUID, error) {
	p := a.plan
	id, err := a.q.PlanInsert(ctx, db.PlanInsertParams{
		APIID: apiID, Name: p.Name, Slug: p.Slug, Description: p.Description, Status: db.PlanStatus(p.Status), SourceFile: &p.File,
	})
	if err != nil {
		return uuid.Nil, fmt.Errorf("insert plan %s: %w", p.Slug, err)
	}
	return id, nil
}

// updatePlan applies the file's name, description and status to the plan
// row: they are the plan's, not a version's; and the file's name, when the
// plan's file was renamed.
func (a *applier) updatePlan(ctx context.Context, cur db.PlanGetBySlugRow) (changed bool, err error) {
	p := a.plan
	if cur.Name == p.Name && cur.Description == p.Description && string(cur.Status) == p.Status && *cur.SourceFile == p.File {
		return false, nil
	}
	err = a.q.PlanUpdate(ctx, db.PlanUpdateParams{ID: cur.ID, Name: p.Name, Description: p.Description, Status: db.PlanStatus(p.Status), SourceFile: &p.File})
	if err != nil {
		return false, fmt.Errorf("update plan %s: %w", p.Slug, err)
	}
	return true, nil
}

func (a *applier) insertVersion(ctx context.Context, apiID, planID uuid.UUID, version int) error {
	p := a.plan
	versionID, err := a.q.PlanVersionInsert(ctx, db.PlanVersionInsertParams{
		PlanID: planID, Version: int32(version), Type: db.PlanType(p.Type), Currency: p.Currency,
		Interval: db.BillingInterval(p.Interval), BaseFee: p.BaseFee, TrialDays: int32(p.TrialDays),
		QuotaRequests: p.Limits.QuotaRequests, QuotaHard: p.Limits.QuotaHard,
		RatePerSecond: int32Ptr(p.Limits.RatePerSecond), RatePerMinute: int32Ptr(p.Limits.RatePerMinute),
		SourceFile: &p.File, ContentHash: &a.src.Hash, CreatedBy: a.by(),
	})
	if err != nil {
		return fmt.Errorf("insert version %d of plan %s: %w", version, p.Slug, err)
	}
	// The charges are written as over REST; meters created a moment ago
	// are the API's.
	if err := pricing.WriteCharges(ctx, a.tx, apiID, versionID, "charges", p.Charges); err != nil {
		return fmt.Errorf("write charges of plan %s: %w", p.Slug, err)
	}
	return nil
}

func int32Ptr(v *int) *int32 {
	if v == nil {
		return nil
	}
	i := int32(*v)
	return &i
}

// meters creates or changes the file's meters of the API through pricing's
// writes, as REST does (defaults, the meter limit, the audit log, the
// plan-version locks of a definition's change). A meter whose definition
// changes while a version in use charges it is refused: the prices of its
// subscribers would change under them.
func (a *applier) meters(ctx context.Context, apiID, org uuid.UUID) error {
	for i, m := range a.plan.Meters {
		field := fmt.Sprintf("meters[%d]", i)
		if m.Name == "" {
			m.Name = m.Slug
		}
		cur, err := pricing.MeterBySlugForUpdate(ctx, a.tx, apiID, m.Slug)
		if errors.Is(err, pricing.ErrMeterNotFound) {
			_, err := pricing.InsertMeter(ctx, a.tx, a.actor(), org, apiID, m)
			if errors.Is(err, pricing.ErrMeterLimit) {
				a.fail(field, "%v", err)
				continue
			}
			if err != nil {
				return fmt.Errorf("insert meter %s: %w", m.Slug, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("load meter %s: %w", m.Slug, err)
		}
		if sameMeter(cur.Meter, m) {
			continue
		}
		_, err = pricing.ChangeMeter(ctx, a.tx, a.actor(), org, cur, m)
		if errors.Is(err, pricing.ErrMeterInUse) {
			a.fail(field, "meter %q is charged by a plan version in use and its definition differs from this one: give the new definition a new slug", m.Slug)
			continue
		}
		if err != nil {
			return fmt.Errorf("update meter %s: %w", m.Slug, err)
		}
	}
	return nil
}

// list is a filter list for a NOT NULL array column.
func list(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// sameDefinition reports whether two meters count the same thing; the
// name is for people and may change.
func sameDefinition(x, y metering.Meter) bool {
	return x.Aggregation == y.Aggregation && x.Field == y.Field &&
		slices.Equal(list(x.Filter.Methods), list(y.Filter.Methods)) &&
		slices.Equal(list(x.Filter.Routes), list(y.Filter.Routes)) &&
		slices.Equal(list(x.Filter.StatusClasses), list(y.Filter.StatusClasses))
}

func sameMeter(x, y metering.Meter) bool {
	return x.Name == y.Name && sameDefinition(x, y)
}
