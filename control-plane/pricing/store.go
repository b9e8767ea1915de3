package pricing

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/pricing/internal/db"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// DB is what the functions of this package read and write with: a pool,
// or the transaction of the caller's change (pgx.Tx).
type DB = db.DBTX

// ErrVersionNotFound: no plan version with that id.
var ErrVersionNotFound = errors.New("plan version not found")

// WriteCharges stores the charges of a new plan version of the API apiID,
// in the caller's transaction, tiers in position order. The charges must
// have passed ValidateCharges; a charge whose meter is not one of the
// API's is a validation error naming it under prefix. The deferred
// charge_tiers_order trigger checks the tiers again at commit.
func WriteCharges(ctx context.Context, tx pgx.Tx, apiID, versionID uuid.UUID, prefix string, charges []Charge) error {
	if len(charges) == 0 {
		return nil
	}
	q := db.New(tx)
	slugs := make([]string, len(charges))
	for i, c := range charges {
		slugs[i] = c.Meter
	}
	rows, err := q.MeterIDsBySlug(ctx, db.MeterIDsBySlugParams{ApiID: apiID, Slugs: slugs})
	if err != nil {
		return fmt.Errorf("read meters: %w", err)
	}
	ids := make(map[string]uuid.UUID, len(rows))
	for _, r := range rows {
		ids[r.Slug] = r.ID
	}
	var v validation.Error
	for i, c := range charges {
		if _, ok := ids[c.Meter]; !ok {
			v.Add(fmt.Sprintf("%s[%d].meter", prefix, i), "the plan's API has no meter %q", c.Meter)
		}
	}
	if err := v.Err(); err != nil {
		return err
	}
	for _, c := range charges {
		id, err := q.ChargeInsert(ctx, db.ChargeInsertParams{
			PlanVersionID: versionID, MeterID: ids[c.Meter], IncludedUnits: c.IncludedUnits, Model: db.ChargeModel(c.Model),
			PackageSize: c.PackageSize, UnitPrice: c.UnitPrice, Quota: c.Quota, QuotaHard: c.QuotaHard,
		})
		if err != nil {
			return fmt.Errorf("insert charge: %w", err)
		}
		for j, t := range c.Tiers {
			if err := q.TierInsert(ctx, db.TierInsertParams{
				ChargeID: id, Position: int32(j + 1), UpTo: t.UpTo, UnitPrice: t.UnitPrice, FlatFee: t.FlatAmount,
			}); err != nil {
				return fmt.Errorf("insert tier: %w", err)
			}
		}
	}
	return nil
}

// ChargesForVersions reads the charges of plan versions, each version's in
// the order of its meters' slugs; a version without charges has an empty
// list.
func ChargesForVersions(ctx context.Context, q DB, versionIDs []uuid.UUID) (map[uuid.UUID][]Charge, error) {
	out := make(map[uuid.UUID][]Charge, len(versionIDs))
	for _, id := range versionIDs {
		out[id] = []Charge{}
	}
	if len(versionIDs) == 0 {
		return out, nil
	}
	qs := db.New(q)
	rows, err := qs.ChargeListByVersions(ctx, versionIDs)
	if err != nil {
		return nil, fmt.Errorf("read charges: %w", err)
	}
	chargeIDs := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		chargeIDs[i] = r.ID
	}
	tiers := map[uuid.UUID][]Tier{}
	if len(chargeIDs) > 0 {
		trows, err := qs.TierListByCharges(ctx, chargeIDs)
		if err != nil {
			return nil, fmt.Errorf("read tiers: %w", err)
		}
		for _, t := range trows {
			tiers[t.ChargeID] = append(tiers[t.ChargeID], Tier{UpTo: t.UpTo, UnitPrice: t.UnitPrice, FlatAmount: t.FlatFee})
		}
	}
	for _, r := range rows {
		c := Charge{
			Meter: r.Slug, Model: metering.ChargeModel(r.Model), IncludedUnits: r.IncludedUnits, UnitPrice: r.UnitPrice,
			PackageSize: r.PackageSize, Tiers: tiers[r.ID], Quota: r.Quota, QuotaHard: r.QuotaHard,
		}
		if c.Tiers == nil {
			c.Tiers = []Tier{}
		}
		out[r.PlanVersionID] = append(out[r.PlanVersionID], c)
	}
	return out, nil
}

// TermsForVersion loads what a plan version charges per period, as the
// rating engine prices it: its base fee, its currency and its charges in
// the order of their meters' slugs. Quotes and billing both price with
// it, so that a version prices the same everywhere. A version in a currency
// Veil no longer prices in is metering.ErrUnknownCurrency.
func TermsForVersion(ctx context.Context, q DB, versionID uuid.UUID) (metering.PlanTerms, error) {
	row, err := db.New(q).VersionTermsGet(ctx, versionID)
	if errors.Is(err, pgx.ErrNoRows) {
		return metering.PlanTerms{}, ErrVersionNotFound
	}
	if err != nil {
		return metering.PlanTerms{}, fmt.Errorf("read plan version: %w", err)
	}
	cur, err := metering.CurrencyOf(row.Currency)
	if err != nil {
		return metering.PlanTerms{}, fmt.Errorf("load plan version terms: %w", err)
	}
	charges, err := ChargesForVersions(ctx, q, []uuid.UUID{versionID})
	if err != nil {
		return metering.PlanTerms{}, err
	}
	terms := metering.PlanTerms{Currency: cur, BaseFee: row.BaseFee, Charges: make([]metering.Charge, 0, len(charges[versionID]))}
	for _, c := range charges[versionID] {
		terms.Charges = append(terms.Charges, c.Rating())
	}
	return terms, nil
}
