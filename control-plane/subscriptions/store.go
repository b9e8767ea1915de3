package subscriptions

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/apikey"
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
		Status: PlanStatus(row.Status), CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt,
		Current: PlanVersion{
			ID: row.ID_2, Version: int(row.Version), CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt_2,
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

// keyRow is a generated row holding a key (every read selects the same
// columns).
type keyRow interface {
	db.KeyGetByIDRow | db.KeyGetByIDForUpdateRow | db.KeyListBySubscriptionRow | db.KeyListAllRow |
		db.KeyListExpiringRow | db.KeyListRotationDueRow
}

// toKey converts the row of a query that reads a key; no row is
// ErrKeyNotFound.
func toKey[R keyRow](r R, err error) (Key, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, ErrKeyNotFound
	}
	if err != nil {
		return Key{}, fmt.Errorf("scan key: %w", err)
	}
	row := db.KeyGetByIDRow(r)
	k := Key{
		ID: row.ID, SubscriptionID: row.SubscriptionID, APIID: row.ApiID, Name: row.Name, Env: apikey.Env(row.Env),
		Prefix: row.Prefix, State: keys.State(row.State), ExpiresAt: row.ExpiresAt, GraceUntil: row.GraceUntil,
		Methods: row.Methods, Routes: row.Routes, RatePerSecond: intPtr(row.RatePerSecond), RatePerMinute: intPtr(row.RatePerMinute),
		RotatedFrom: row.RotatedFrom, AutoRotate: row.AutoRotate, RotateEvery: int(row.RotateEveryDays),
		LastRotatedAt: row.LastRotatedAt, AutoRenew: row.AutoRenew, RenewDays: intPtr(row.RenewDays), Synced: row.Synced,
		SyncAttempts: int(row.SyncAttempts), SyncError: row.SyncError, CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt,
		UpdatedAt: row.UpdatedAt, RevokedAt: row.RevokedAt,
		org: row.OrganizationID, apiOrg: row.ApiOrganizationID, hash: row.Hash, syncVersion: row.SyncVersion,
		subStatus: Status(row.SubscriptionStatus), sealed: row.SealedKey, suspendedByAdmin: row.SuspendedByAdmin,
	}
	if err := json.Unmarshal(row.Metadata, &k.Metadata); err != nil {
		return Key{}, fmt.Errorf("decode key metadata: %w", err)
	}
	k.Masked = apikey.Mask(k.Prefix, row.Last4)
	k.Revealable = len(k.sealed) > 0
	return k, nil
}

// toKeys converts the rows of a query that lists keys.
func toKeys[R keyRow](rows []R) ([]Key, error) {
	out := make([]Key, 0, len(rows))
	for _, r := range rows {
		k, err := toKey(r, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}
