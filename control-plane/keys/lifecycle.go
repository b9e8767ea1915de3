package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys/internal/db"
	"github.com/veil-platform/veil/internal/apikey"
)

// Key is an API key as the API shows it: never the plaintext, except in
// the one answer that issues (or reveals) it.
type Key struct {
	ID             uuid.UUID      `json:"id"`
	SubscriptionID uuid.UUID      `json:"subscription_id"`
	APIID          uuid.UUID      `json:"api_id"`
	Name           string         `json:"name"`
	Env            apikey.Env     `json:"env"`
	Prefix         string         `json:"prefix"`
	Masked         string         `json:"masked"`
	State          State          `json:"state"`
	ExpiresAt      *time.Time     `json:"expires_at"`
	GraceUntil     *time.Time     `json:"grace_until"`
	Methods        []string       `json:"methods"`
	Routes         []string       `json:"routes"`
	RatePerSecond  *int           `json:"rate_per_second"`
	RatePerMinute  *int           `json:"rate_per_minute"`
	Metadata       map[string]any `json:"metadata"`
	RotatedFrom    *uuid.UUID     `json:"rotated_from"`
	AutoRotate     bool           `json:"auto_rotate"`
	RotateEvery    int            `json:"rotate_every_days"`
	LastRotatedAt  *time.Time     `json:"last_rotated_at"`
	AutoRenew      bool           `json:"auto_renew"`
	RenewDays      *int           `json:"renew_days"`
	// Revealable: a successor issued by automatic rotation waits sealed for
	// POST /v1/keys/{id}/reveal.
	Revealable   bool       `json:"revealable"`
	Synced       bool       `json:"synced"`
	SyncAttempts int        `json:"sync_attempts"`
	SyncError    string     `json:"sync_error,omitempty"`
	CreatedBy    string     `json:"created_by"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	RevokedAt    *time.Time `json:"revoked_at"`
	// Plaintext is the key itself, only in the answer that issues it.
	Plaintext string `json:"key,omitempty"`

	org, apiOrg uuid.UUID
	hash        string
	syncVersion int64
	sealed      []byte
	// suspendedByAdmin: an admin suspended the key, and only an admin
	// resumes it.
	suspendedByAdmin bool
}

func (k Key) settings() Settings {
	return Settings{
		Name: k.Name, ExpiresAt: k.ExpiresAt, Methods: k.Methods, Routes: k.Routes, RatePerSecond: k.RatePerSecond,
		RatePerMinute: k.RatePerMinute, Metadata: k.Metadata, AutoRotate: k.AutoRotate, RotateEveryDays: k.RotateEvery,
		AutoRenew: k.AutoRenew, RenewDays: k.RenewDays,
	}
}

// canSee: the subscriber's organization, the API's provider and admins.
func (k Key) canSee(a identity.Actor) bool {
	return a.IsAdmin() || a.OrgID == k.org || a.OrgID == k.apiOrg
}

// canChange: the subscriber's organization and admins.
func (k Key) canChange(a identity.Actor) bool { return a.IsAdmin() || a.OrgID == k.org }

// ShowsClients reports whether a may see where the key's calls to the
// control plane came from (the source IPs and user agents of its audit
// trail): the subscriber's organization and admins, never the API's
// provider, to whom its consumers are strangers.
func (k Key) ShowsClients(a identity.Actor) bool { return a.IsAdmin() || a.OrgID == k.org }

// audited is what the audit log and webhooks get of a key: never its hash.
func (k Key) audited() map[string]any {
	return map[string]any{
		"id": k.ID, "subscription_id": k.SubscriptionID, "name": k.Name, "masked": k.Masked, "state": k.State,
		"expires_at": k.ExpiresAt, "grace_until": k.GraceUntil, "methods": k.Methods, "routes": k.Routes,
		"rate_per_second": k.RatePerSecond, "rate_per_minute": k.RatePerMinute, "auto_rotate": k.AutoRotate,
		"rotate_every_days": k.RotateEvery, "auto_renew": k.AutoRenew, "renew_days": k.RenewDays,
	}
}

// CreateKey issues a key for a live subscription the actor's organization
// holds. The answer carries the plaintext; nothing else ever will. The key
// is pending until the gateway holds it.
func (s *Service) CreateKey(ctx context.Context, actor identity.Actor, subID uuid.UUID, in Settings) (Key, error) {
	if err := in.Validate(s.now()); err != nil {
		return Key{}, err
	}
	var out Key
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		sub, err := s.cfg.Subscriptions.LockSubscription(ctx, tx, actor, subID)
		if err != nil {
			return err
		}
		// The answer carries the plaintext: the key's own organization
		// only, never an admin of another (the reveal rule).
		if actor.OrgID != sub.OrganizationID {
			return ErrAdminPlaintext
		}
		if !sub.Usable {
			return fmt.Errorf("%w: it is %s", ErrSubscriptionInactive, sub.Status)
		}
		if !actor.IsAdmin() {
			if err := s.checkNoAdminSuspension(ctx, tx, sub.ID); err != nil {
				return err
			}
		}
		out, err = s.issue(ctx, tx, actor, sub, in, nil, nil)
		if err != nil {
			return err
		}
		return s.record(ctx, tx, actor, out.org, "key.create", out.ID, nil, out.audited(),
			"key.created", map[string]any{"key": out.audited()})
	})
	return out, err
}

// checkNoAdminSuspension refuses a new key while an admin's suspension of
// another key of the subscription stands: otherwise the consumer would
// lift the sanction by issuing a replacement. The subscription must be
// locked, so that the check and the insert see the same  Revoking the
// suspended key lifts the refusal: the consumer has then given up the key
// the admin stopped for good, which is what the suspension asks of it.
// Rotation needs no such check: it only rotates an active key, so its
// successor replaces a key that works already.
func (s *Service) checkNoAdminSuspension(ctx context.Context, tx pgx.Tx, subID uuid.UUID) error {
	id, err := db.New(tx).KeyFindAdminSuspended(ctx, subID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find admin suspensions: %w", err)
	}
	return fmt.Errorf("%w: key %s; no new key is issued while it stands (revoke that key, or ask an admin to resume it)", ErrAdminSuspended, id)
}

// issue inserts a new pending key and queues its sync. The subscription
// must be locked. A key in its rotation grace does not count toward the
// subscription's limit: its successor takes its place.
func (s *Service) issue(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub Holder, in Settings, rotatedFrom *uuid.UUID, seal *Sealer) (Key, error) {
	q := db.New(tx)
	live, err := q.KeyCountLive(ctx, sub.ID)
	if err != nil {
		return Key{}, fmt.Errorf("count keys: %w", err)
	}
	if live >= int64(sub.MaxActiveKeys) {
		return Key{}, fmt.Errorf("%w (%d)", ErrKeyLimit, sub.MaxActiveKeys)
	}
	raw, err := apikey.Generate(s.cfg.Env)
	if err != nil {
		return Key{}, err
	}
	id := uuid.New()
	var sealed []byte
	if seal != nil {
		if sealed, err = seal.Seal(id, raw.Plaintext); err != nil {
			return Key{}, err
		}
	}
	meta, _ := json.Marshal(in.Metadata)
	var lastRotated *time.Time
	if rotatedFrom != nil {
		now := s.now().UTC()
		lastRotated = &now
	}
	err = q.KeyInsert(ctx, db.KeyInsertParams{
		ID: id, SubscriptionID: sub.ID, Name: in.Name, Env: string(s.cfg.Env), Hash: raw.Hash, Prefix: raw.Prefix, Last4: raw.Last4,
		ExpiresAt: in.ExpiresAt, Methods: in.Methods, Routes: in.Routes, RatePerSecond: in.RatePerSecond,
		RatePerMinute: in.RatePerMinute, Metadata: meta, RotatedFrom: rotatedFrom, AutoRotate: in.AutoRotate,
		RotateEveryDays: in.RotateEveryDays, LastRotatedAt: lastRotated, AutoRenew: in.AutoRenew,
		RenewDays: in.RenewDays, CreatedBy: actor.Subject, SealedKey: sealed,
	})
	if err != nil {
		return Key{}, fmt.Errorf("insert key: %w", err)
	}
	if err := s.enqueueKeySync(ctx, tx, id); err != nil {
		return Key{}, err
	}
	k, err := s.lockKey(ctx, tx, id)
	if err != nil {
		return Key{}, err
	}
	if seal == nil {
		k.Plaintext = raw.Plaintext
	}
	return k, nil
}

func (s *Service) lockKey(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Key, error) {
	return toKey(db.New(tx).KeyGetByIDForUpdate(ctx, id))
}

// changeKey locks a key the actor may change.
func (s *Service) changeKey(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (Key, error) {
	k, err := s.lockKey(ctx, tx, id)
	if err != nil {
		return Key{}, err
	}
	if !k.canChange(actor) {
		if k.canSee(actor) {
			return Key{}, identity.ErrForbidden
		}
		return Key{}, ErrKeyNotFound
	}
	return k, nil
}

// GetKey returns a key the actor may see.
func (s *Service) GetKey(ctx context.Context, actor identity.Actor, id uuid.UUID) (Key, error) {
	k, err := toKey(db.New(s.pool).KeyGetByID(ctx, id))
	if err != nil {
		return Key{}, err
	}
	if !k.canSee(actor) {
		return Key{}, ErrKeyNotFound
	}
	return k, nil
}

// ListKeys lists a subscription's keys, oldest first, rotated-out ones
// with their grace.
func (s *Service) ListKeys(ctx context.Context, actor identity.Actor, subID uuid.UUID) ([]Key, error) {
	if err := s.cfg.Subscriptions.CheckSubscription(ctx, actor, subID); err != nil {
		return nil, err
	}
	rows, err := db.New(s.pool).KeyListBySubscription(ctx, subID)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return toKeys(rows)
}

// UpdateKey changes a key's settings. Terminal keys do not change.
func (s *Service) UpdateKey(ctx context.Context, actor identity.Actor, id uuid.UUID, p Patch) (Key, error) {
	var out Key
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.changeKey(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if before.State.Terminal() {
			return &TransitionError{From: before.State, To: before.State}
		}
		in := p.Apply(before.settings())
		if err := in.Validate(s.now()); err != nil {
			return err
		}
		meta, _ := json.Marshal(in.Metadata)
		if err := db.New(tx).KeyUpdateSettings(ctx, db.KeyUpdateSettingsParams{
			ID: id, Name: in.Name, ExpiresAt: in.ExpiresAt, Methods: in.Methods, Routes: in.Routes,
			RatePerSecond: in.RatePerSecond, RatePerMinute: in.RatePerMinute, Metadata: meta,
			AutoRotate: in.AutoRotate, RotateEveryDays: in.RotateEveryDays, AutoRenew: in.AutoRenew, RenewDays: in.RenewDays,
		}); err != nil {
			return fmt.Errorf("update key: %w", err)
		}
		if err := s.enqueueKeySync(ctx, tx, id); err != nil {
			return err
		}
		if out, err = s.lockKey(ctx, tx, id); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, out.org, "key.update", id, before.audited(), out.audited(),
			"key.updated", map[string]any{"key": out.audited()})
	})
	return out, err
}

// Act suspends, resumes or revokes a key, as the state machine allows.
// Resuming a key the gateway never held is refused like any illegal
// transition: the sync job activates it.
func (s *Service) Act(ctx context.Context, actor identity.Actor, id uuid.UUID, action Action, reason string) (Key, error) {
	to, ok := action.Target()
	if !ok {
		return Key{}, fmt.Errorf("unknown key action %q", action)
	}
	var out Key
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.changeKey(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if action == ActionResume && before.State != StateSuspended {
			return &TransitionError{From: before.State, To: to}
		}
		// An admin's suspension is a sanction: the consumer cannot lift it.
		if action == ActionResume && before.suspendedByAdmin && !actor.IsAdmin() {
			return ErrAdminSuspended
		}
		// An admin suspending a key its organization suspended already
		// makes the suspension the admin's: the state stays, but the
		// organization can no longer resume it.
		if action == ActionSuspend && before.State == StateSuspended && !before.suspendedByAdmin && actor.IsAdmin() {
			out, err = s.sanction(ctx, tx, actor, before, reason)
			return err
		}
		out, err = s.transition(ctx, tx, actor, before, to, reason)
		return err
	})
	return out, err
}

// transition moves a locked key to state to, bumping its sync version and
// queueing the sync, auditing and announcing the change.
func (s *Service) transition(ctx context.Context, tx pgx.Tx, actor identity.Actor, k Key, to State, reason string) (Key, error) {
	if err := Check(k.State, to); err != nil {
		return Key{}, err
	}
	if err := db.New(tx).KeyUpdateState(ctx, db.KeyUpdateStateParams{
		ID: k.ID, ToState: db.KeyState(to), Now: s.now().UTC(), ByAdmin: actor.IsAdmin(),
	}); err != nil {
		return Key{}, fmt.Errorf("set key state: %w", err)
	}
	if err := s.enqueueKeySync(ctx, tx, k.ID); err != nil {
		return Key{}, err
	}
	after, err := s.lockKey(ctx, tx, k.ID)
	if err != nil {
		return Key{}, err
	}
	return after, s.record(ctx, tx, actor, after.org, "key.transition."+string(to), k.ID,
		map[string]State{"state": k.State}, map[string]any{"state": to, "reason": reason},
		"key."+Event(to), map[string]any{"key": after.audited(), "from": k.State, "to": to, "reason": reason})
}

// sanction marks a locked key its organization suspended as suspended by
// an admin, and audits it as a suspension. Nothing reaches the gateway,
// which refuses the key already, so no sync is queued and no event is
// published: the key's state did not change.
func (s *Service) sanction(ctx context.Context, tx pgx.Tx, actor identity.Actor, k Key, reason string) (Key, error) {
	if err := db.New(tx).KeyMarkAdminSuspended(ctx, k.ID); err != nil {
		return Key{}, fmt.Errorf("mark admin suspension: %w", err)
	}
	after, err := s.lockKey(ctx, tx, k.ID)
	if err != nil {
		return Key{}, err
	}
	return after, s.record(ctx, tx, actor, after.org, "key.transition."+string(StateSuspended), k.ID,
		map[string]any{"state": k.State, "suspended_by_admin": false},
		map[string]any{"state": StateSuspended, "suspended_by_admin": true, "reason": reason}, "", nil)
}

// RevokeAll revokes a subscription's live keys inside tx, the
// transaction that cancels the subscription and holds its lock.
func (s *Service) RevokeAll(ctx context.Context, tx pgx.Tx, actor identity.Actor, subID uuid.UUID, reason string) error {
	ids, err := db.New(tx).KeyListLiveIDsForUpdate(ctx, subID)
	if err != nil {
		return fmt.Errorf("list keys to revoke: %w", err)
	}
	for _, id := range ids {
		k, err := s.lockKey(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := s.transition(ctx, tx, actor, k, StateRevoked, reason); err != nil {
			return err
		}
	}
	return nil
}

// DeleteKey removes a key: it is revoked first if it is not terminal, its
// row goes, and a job removes its gateway record. Its audit entries stay.
func (s *Service) DeleteKey(ctx context.Context, actor identity.Actor, id uuid.UUID) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		k, err := s.changeKey(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if !k.State.Terminal() {
			if k, err = s.transition(ctx, tx, actor, k, StateRevoked, "deleted"); err != nil {
				return err
			}
		}
		if err := db.New(tx).KeyDelete(ctx, id); err != nil {
			return fmt.Errorf("delete key: %w", err)
		}
		// The record goes with any version: nothing newer can be written
		// for a key that no longer exists.
		if _, err := s.cfg.Jobs.InsertTx(ctx, tx, DeleteRecordArgs{Hash: k.hash, Version: k.syncVersion + 1},
			&river.InsertOpts{MaxAttempts: SyncAttempts}); err != nil {
			return fmt.Errorf("enqueue record deletion: %w", err)
		}
		return s.record(ctx, tx, actor, k.org, "key.delete", id, k.audited(), nil,
			"key.deleted", map[string]any{"key": k.audited()})
	})
}

// Rotate issues a successor with the same settings and keeps the old key
// working for the grace period; with no grace the old key is revoked now.
// The answer is the successor with its plaintext.
func (s *Service) Rotate(ctx context.Context, actor identity.Actor, id uuid.UUID, in RotateInput) (Key, error) {
	grace, err := in.Grace(s.cfg.DefaultGrace)
	if err != nil {
		return Key{}, err
	}
	var out Key
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		old, err := s.changeKey(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		// The successor's plaintext is in the answer: see CreateKey.
		if actor.OrgID != old.org {
			return ErrAdminPlaintext
		}
		out, err = s.rotate(ctx, tx, actor, old, grace, nil)
		return err
	})
	return out, err
}

// rotate rotates a locked key; seal, when set, seals the successor's
// plaintext for a later reveal instead of returning it.
func (s *Service) rotate(ctx context.Context, tx pgx.Tx, actor identity.Actor, old Key, grace time.Duration, seal *Sealer) (Key, error) {
	if old.State != StateActive {
		return Key{}, &TransitionError{From: old.State, To: StateRevoked}
	}
	if old.GraceUntil != nil {
		return Key{}, fmt.Errorf("%w: it stops working at %s; rotate its successor", ErrAlreadyRotated, old.GraceUntil.Format(time.RFC3339))
	}
	// The key's own check passed: whoever may change the key may change
	// its subscription.
	sub, err := s.cfg.Subscriptions.LockSubscription(ctx, tx, actor, old.SubscriptionID)
	if err != nil {
		return Key{}, err
	}
	if !sub.Usable {
		return Key{}, fmt.Errorf("%w: it is %s", ErrSubscriptionInactive, sub.Status)
	}
	in := old.settings()
	if in.ExpiresAt != nil && !in.ExpiresAt.After(s.now()) {
		in.ExpiresAt = nil
	}
	// The old key leaves the count of live keys first, so that a
	// subscription at its limit can still rotate.
	after := old
	if grace <= 0 {
		if after, err = s.transition(ctx, tx, actor, old, StateRevoked, "rotated"); err != nil {
			return Key{}, err
		}
	} else {
		until := s.now().UTC().Add(grace).Truncate(time.Second)
		if err := db.New(tx).KeySetGrace(ctx, db.KeySetGraceParams{ID: old.ID, GraceUntil: &until}); err != nil {
			return Key{}, fmt.Errorf("set grace: %w", err)
		}
		if err := s.enqueueKeySync(ctx, tx, old.ID); err != nil {
			return Key{}, err
		}
		if after, err = s.lockKey(ctx, tx, old.ID); err != nil {
			return Key{}, err
		}
	}
	next, err := s.issue(ctx, tx, actor, sub, in, &old.ID, seal)
	if err != nil {
		return Key{}, err
	}
	return next, s.record(ctx, tx, actor, old.org, "key.rotate", old.ID, old.audited(),
		map[string]any{"grace_until": after.GraceUntil, "state": after.State, "successor": next.ID},
		"key.rotated", map[string]any{"key": after.audited(), "successor": next.audited()})
}

// Reveal returns, once, the plaintext of a successor that automatic
// rotation sealed, and erases the sealed copy. Only members of the
// subscribing organization may reveal it.
func (s *Service) Reveal(ctx context.Context, actor identity.Actor, id uuid.UUID) (Key, error) {
	var out Key
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		k, err := s.changeKey(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		// A secret for the subscriber's eyes only: not even platform admins
		// of other organizations reveal it.
		if actor.OrgID != k.org {
			return identity.ErrForbidden
		}
		if len(k.sealed) == 0 || s.seal == nil {
			return ErrNothingToReveal
		}
		plain, err := s.seal.Open(k.ID, k.sealed)
		if err != nil {
			return fmt.Errorf("open sealed key %s: %w", k.ID, err)
		}
		if err := db.New(tx).KeyEraseSealed(ctx, id); err != nil {
			return fmt.Errorf("erase sealed key: %w", err)
		}
		if out, err = s.lockKey(ctx, tx, id); err != nil {
			return err
		}
		out.Plaintext = plain
		return s.record(ctx, tx, actor, k.org, "key.reveal", id, nil, nil, "", nil)
	})
	return out, err
}

// SubscriptionOf returns the subscription id of a key the actor may see
// (for usage reads).
func (s *Service) SubscriptionOf(ctx context.Context, actor identity.Actor, id uuid.UUID) (uuid.UUID, error) {
	k, err := s.GetKey(ctx, actor, id)
	return k.SubscriptionID, err
}

// enqueueKeySync queues the outbox job that writes the key's record.
func (s *Service) enqueueKeySync(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	if _, err := s.cfg.Jobs.InsertTx(ctx, tx, SyncKeyArgs{KeyID: id}, &river.InsertOpts{MaxAttempts: SyncAttempts}); err != nil {
		return fmt.Errorf("enqueue key sync: %w", err)
	}
	return nil
}
