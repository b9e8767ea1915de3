package keys

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/keys/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
)

// Drift is what a comparison of the keys with the gateway's records found,
// before anything is healed. The subscriptions' reconciliation reports its
// counts with those of the subscription records.
type Drift struct {
	// Checked is the number of keys in Postgres compared with Redis.
	Checked int
	// Missing: live keys with no record in Redis.
	Missing int
	// Different: records that differ from their key.
	Different int
	// Orphaned: records with no key behind them.
	Orphaned int
	// Corrupt: records that could not be decoded.
	Corrupt int

	corrupt []string                // hashes of records that could not be decoded
	orphans []enforcement.KeyRecord // records with no key behind them
	rewrite []uuid.UUID             // keys whose record is missing or different
	synced  []Key                   // pending or failed_sync keys whose record is right
}

// Healed is told the outcome of one repair, or of a check that failed:
// kind is key or record, id the key's id or the record's hash, err nil when
// it was healed.
type Healed func(kind, id string, err error)

// FindDrift compares every key with its record in the gateway's Redis; it
// changes nothing. A record it could not check is told to healed.
func (s *Service) FindDrift(ctx context.Context, healed Healed) (Drift, error) {
	var d Drift
	rows, err := db.New(s.pool).KeyListAll(ctx)
	if err != nil {
		return d, fmt.Errorf("load keys: %w", err)
	}
	all, err := toKeys(rows)
	if err != nil {
		return d, fmt.Errorf("load keys: %w", err)
	}
	byHash := make(map[string]Key, len(all))
	for _, k := range all {
		byHash[k.hash] = k
	}
	stored := map[string]enforcement.KeyRecord{}
	err = s.cfg.Records.ScanKeys(ctx, func(r enforcement.KeyRecord) error {
		stored[r.Hash] = r
		return nil
	})
	var bad *enforcement.ScanError
	if err != nil && !errors.As(err, &bad) {
		return d, fmt.Errorf("scan gateway records: %w", err)
	}
	if bad != nil {
		for _, h := range bad.Hashes {
			d.Corrupt++
			delete(stored, h)
			d.corrupt = append(d.corrupt, h)
		}
	}
	for h, r := range stored {
		if _, ok := byHash[h]; ok {
			continue
		}
		// A key created after the load above may have been written since:
		// look again before calling its record an orphan.
		exists, err := db.New(s.pool).KeyExistsByHash(ctx, h)
		if err != nil {
			healed("record", h, err)
			continue
		}
		if exists {
			continue
		}
		d.Orphaned++
		d.orphans = append(d.orphans, r)
	}
	for _, k := range all {
		d.Checked++
		r, ok := stored[k.hash]
		live := !k.State.Terminal()
		switch {
		case !ok && live:
			d.Missing++
			d.rewrite = append(d.rewrite, k.ID)
		case ok && !sameKeyRecord(r, keyRecord(k)):
			d.Different++
			d.rewrite = append(d.rewrite, k.ID)
		case ok && (k.State == StatePending || k.State == StateFailedSync):
			// The record is right but the key never heard: its job died.
			d.synced = append(d.synced, k)
		}
	}
	return d, nil
}

// HealDrift heals what FindDrift found: undecodable records and records
// with no key behind them are removed, missing or different ones are
// written again (with a new version, so the write wins over whatever is
// stored), and pending or failed_sync keys whose record is right are
// marked active. healed is told the outcome of each repair.
func (s *Service) HealDrift(ctx context.Context, d Drift, healed Healed) {
	for _, h := range d.corrupt {
		_, err := s.cfg.Records.DeleteKey(ctx, h, math.MaxInt64)
		healed("record", h, err)
	}
	for _, r := range d.orphans {
		_, err := s.cfg.Records.DeleteKey(ctx, r.Hash, max(r.Version, math.MaxInt64))
		healed("record", r.Hash, err)
	}
	for _, id := range d.rewrite {
		healed("key", id.String(), s.rewriteKey(ctx, id))
	}
	for _, k := range d.synced {
		if err := s.synced(ctx, k.ID, k.syncVersion); err != nil {
			healed("key", k.ID.String(), err)
		}
	}
}

// rewriteKey bumps the key's version and writes its record now.
func (s *Service) rewriteKey(ctx context.Context, id uuid.UUID) error {
	if err := db.New(s.pool).KeyBumpSyncVersion(ctx, id); err != nil {
		return fmt.Errorf("bump key version: %w", err)
	}
	return s.SyncKey(ctx, id)
}

// sameKeyRecord compares what the gateway decides on; versions aside.
func sameKeyRecord(a, b enforcement.KeyRecord) bool {
	return a.Status == b.Status && a.KeyID == b.KeyID && a.SubscriptionID == b.SubscriptionID && a.APIID == b.APIID &&
		slices.Equal(nonEmpty(a.Methods), nonEmpty(b.Methods)) && slices.Equal(nonEmpty(a.Routes), nonEmpty(b.Routes)) &&
		a.RatePerSecond == b.RatePerSecond && a.RatePerMinute == b.RatePerMinute &&
		sameSecond(a.ExpiresAt, b.ExpiresAt) && sameSecond(a.GraceUntil, b.GraceUntil)
}

func nonEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func sameSecond(a, b time.Time) bool { return a.Unix() == b.Unix() || a.IsZero() && b.IsZero() }
