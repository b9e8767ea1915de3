package keys

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/keys/internal/db"
	"github.com/veil-platform/veil/internal/apikey"
)

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
		Prefix: row.Prefix, State: State(row.State), ExpiresAt: row.ExpiresAt, GraceUntil: row.GraceUntil,
		Methods: row.Methods, Routes: row.Routes, RatePerSecond: row.RatePerSecond, RatePerMinute: row.RatePerMinute,
		RotatedFrom: row.RotatedFrom, AutoRotate: row.AutoRotate, RotateEvery: row.RotateEveryDays,
		LastRotatedAt: row.LastRotatedAt, AutoRenew: row.AutoRenew, RenewDays: row.RenewDays, Synced: row.Synced,
		SyncAttempts: row.SyncAttempts, SyncError: row.SyncError, CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt,
		UpdatedAt: row.UpdatedAt, RevokedAt: row.RevokedAt,
		org: row.OrganizationID, apiOrg: row.ApiOrganizationID, hash: row.Hash, syncVersion: row.SyncVersion,
		sealed: row.SealedKey, suspendedByAdmin: row.SuspendedByAdmin,
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
