package subscriptions

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
)

// planRow is a generated row holding a plan with its latest version; sqlc
// gives each query a type of its own, all with the fields of
// db.PlanGetByIDRow.
type planRow interface {
	db.PlanGetByIDRow | db.PlanGetByIDForUpdateRow | db.PlanListByAPIRow
}

// toPlan converts the row of a query that reads a plan; no row is
// ErrPlanNotFound.
func toPlan[R planRow](r R, err error) (Plan, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return Plan{}, ErrPlanNotFound
	}
	if err != nil {
		return Plan{}, fmt.Errorf("scan plan: %w", err)
	}
	row := db.PlanGetByIDRow(r)
	return Plan{
		ID: row.ID, APIID: row.ApiID, Name: row.Name, Slug: row.Slug, Description: row.Description,
		Status: PlanStatus(row.Status), CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt, SourceFile: row.SourceFile,
		Current: PlanVersion{
			ID: row.ID_2, PlanID: row.ID, Version: int(row.Version), CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt_2,
			Source: row.Source, SourceFile: row.SourceFile_2,
			Terms: Terms{
				Type: string(row.Type), Currency: row.Currency, Interval: string(row.Interval), BaseFee: row.BaseFee,
				TrialDays: int(row.TrialDays), QuotaRequests: row.QuotaRequests, QuotaHard: row.QuotaHard,
				RatePerSecond: intPtr(row.RatePerSecond), RatePerMinute: intPtr(row.RatePerMinute), IncludedUnits: row.IncludedUnits,
			},
		},
	}, nil
}

// intPtr and int32Ptr convert the nullable integer columns.
func intPtr(v *int32) *int {
	if v == nil {
		return nil
	}
	n := int(*v)
	return &n
}

func int32Ptr(v *int) *int32 {
	if v == nil {
		return nil
	}
	n := int32(*v)
	return &n
}

// subRow is a generated row holding a subscription (every read selects the
// same columns).
type subRow interface {
	db.SubscriptionGetByIDRow | db.SubscriptionGetByIDForUpdateRow | db.SubscriptionListPastRow |
		db.SubscriptionListRow | db.SubscriptionListAllRow
}

// toSub converts the row of a query that reads a subscription; no row is
// ErrSubscriptionNotFound.
func toSub[R subRow](r R, err error) (Subscription, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return Subscription{}, ErrSubscriptionNotFound
	}
	if err != nil {
		return Subscription{}, fmt.Errorf("scan subscription: %w", err)
	}
	row := db.SubscriptionGetByIDRow(r)
	sub := Subscription{
		ID: row.ID, OrganizationID: row.OrganizationID, Subscriber: row.Subscriber, APIID: row.ApiID, PlanID: row.PlanID,
		PlanVersionID: row.PlanVersionID, PlanVersion: int(row.Version), Status: Status(row.Status), TrialEndsAt: row.TrialEndsAt,
		CurrentPeriodStart: row.CurrentPeriodStart, CurrentPeriodEnd: row.CurrentPeriodEnd, CancelAtPeriodEnd: row.CancelAtPeriodEnd,
		CanceledAt: row.CanceledAt, MaxActiveKeys: int(row.MaxActiveKeys), Synced: row.Synced, CreatedAt: row.CreatedAt,
		UpdatedAt: row.UpdatedAt, apiOrg: row.ApiOrganizationID, syncVersion: row.SyncVersion,
		terms: Terms{
			Type: string(row.Type), Currency: row.Currency, Interval: string(row.Interval), BaseFee: row.BaseFee,
			TrialDays: int(row.TrialDays), QuotaRequests: row.QuotaRequests, QuotaHard: row.QuotaHard,
			RatePerSecond: intPtr(row.RatePerSecond), RatePerMinute: intPtr(row.RatePerMinute), IncludedUnits: row.IncludedUnits,
		},
		quotaAdjustments: row.QuotaAdjustments,
		holdReleased:     row.HoldReleased,
		anchor:           row.BillingAnchor,
	}
	if row.CanceledFrom != nil {
		sub.canceledFrom = Status(*row.CanceledFrom)
	}
	return sub, nil
}

// toSubs converts the rows of a query that lists subscriptions.
func toSubs[R subRow](rows []R) []Subscription {
	out := make([]Subscription, 0, len(rows))
	for _, r := range rows {
		sub, _ := toSub(r, nil) // toSub fails only when it is given an error
		out = append(out, sub)
	}
	return out
}
