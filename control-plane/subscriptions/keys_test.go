package subscriptions_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
)

// forceState puts a key in a state directly, to start a transition from it.
func (f *fixture) forceState(id uuid.UUID, s keys.State) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, `UPDATE api_keys SET state = $2::key_state,
			revoked_at = CASE WHEN $2::key_state = 'revoked' THEN now() END WHERE id = $1`, id, s); err != nil {
		f.t.Fatal(err)
	}
}

// TestKeyActionsFollowStateMachine tries suspend, resume and revoke from
// every state: each is allowed exactly when the state machine allows it
// (resume only from suspended), and a refusal changes nothing.
func TestKeyActionsFollowStateMachine(t *testing.T) {
	f := setup(t)
	targets := map[keys.Action]keys.State{
		keys.ActionSuspend: keys.StateSuspended,
		keys.ActionResume:  keys.StateActive,
		keys.ActionRevoke:  keys.StateRevoked,
	}
	for _, from := range keys.States {
		for action, to := range targets {
			t.Run(fmt.Sprintf("%s/%s", from, action), func(t *testing.T) {
				if _, err := f.pool.Exec(f.ctx, `DELETE FROM api_keys`); err != nil {
					t.Fatal(err)
				}
				k := f.key(keys.Settings{}, false)
				f.forceState(k.ID, from)
				before := f.get(k.ID)
				got, err := f.svc.Act(f.ctx, f.consumer, k.ID, action, "test")
				want := keys.CanTransition(from, to) && (action != keys.ActionResume || from == keys.StateSuspended)
				after := f.get(k.ID)
				if !want {
					var te *keys.TransitionError
					if !errors.As(err, &te) || te.From != from || te.To != to {
						t.Fatalf("Act(%s) from %s = %v; want a TransitionError %s → %s", action, from, err, from, to)
					}
					if after.State != from || after.UpdatedAt != before.UpdatedAt {
						t.Fatalf("refused Act changed the key: %s → %s", from, after.State)
					}
					if n := f.auditCount(k.ID, "key.transition."+string(to)); n != 0 {
						t.Fatalf("refused Act left %d audit entries", n)
					}
					return
				}
				if err != nil {
					t.Fatalf("Act(%s) from %s = %v; want allowed", action, from, err)
				}
				if got.State != to || after.State != to {
					t.Fatalf("Act(%s) from %s = %s (stored %s); want %s", action, from, got.State, after.State, to)
				}
				if after.Synced {
					t.Fatalf("after Act the key reports synced; its new version is not written yet")
				}
				if n := f.auditCount(k.ID, "key.transition."+string(to)); n != 1 {
					t.Fatalf("audit entries for the transition = %d; want 1", n)
				}
				if to == keys.StateRevoked && after.RevokedAt == nil {
					t.Fatal("revoked key has no revoked_at")
				}
			})
		}
	}
}

// TestSystemTransitions covers the transitions only jobs make: the sync
// activating pending and failed_sync keys (and nothing else), expiry of
// active and suspended keys (and nothing else).
func TestSystemTransitions(t *testing.T) {
	f := setup(t)
	for _, from := range keys.States {
		t.Run("sync/"+string(from), func(t *testing.T) {
			k := f.key(keys.Settings{}, false)
			f.forceState(k.ID, from)
			f.sync(k.ID)
			want := from
			if from == keys.StatePending || from == keys.StateFailedSync {
				want = keys.StateActive
			}
			if got := f.get(k.ID); got.State != want || !got.Synced {
				t.Fatalf("sync from %s = %s (synced %v); want %s, synced", from, got.State, got.Synced, want)
			}
			if _, err := f.svc.Act(f.ctx, f.consumer, k.ID, keys.ActionRevoke, ""); err != nil && !errors.Is(err, keys.ErrInvalidTransition) {
				t.Fatal(err)
			}
		})
	}
	for _, from := range keys.States {
		t.Run("expiry/"+string(from), func(t *testing.T) {
			at := f.clock.Now().Add(time.Hour)
			k := f.key(keys.Settings{ExpiresAt: &at}, false)
			f.forceState(k.ID, from)
			f.clock.Set(at.Add(time.Second))
			defer f.clock.Set(at.Add(-time.Hour))
			f.maintain()
			want := from
			if keys.CanTransition(from, keys.StateExpired) {
				want = keys.StateExpired
			}
			if got := f.get(k.ID); got.State != want {
				t.Fatalf("expiry from %s = %s; want %s", from, got.State, want)
			}
			if _, err := f.pool.Exec(f.ctx, `DELETE FROM api_keys WHERE id = $1`, k.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRotationGrace: the old key's record is accepted until its grace ends
// and refused after, by the gateway's own decision function; maintenance
// then revokes it. With no grace the old key is revoked at once.
func TestRotationGrace(t *testing.T) {
	f := setup(t)
	old := f.key(keys.Settings{Name: "prod", Methods: []string{"GET"}, Routes: []string{"/forecast/*"}}, true)
	t0 := f.clock.Now()
	grace := int64(3600)
	next, err := f.svc.Rotate(f.ctx, f.consumer, old.ID, keys.RotateInput{GraceSeconds: &grace})
	if err != nil {
		t.Fatal(err)
	}
	if next.Plaintext == "" || next.Plaintext == old.Plaintext || next.RotatedFrom == nil || *next.RotatedFrom != old.ID {
		t.Fatalf("Rotate = %+v; want a new key rotated from %s with its plaintext", next, old.ID)
	}
	if next.Name != "prod" || !slicesEqual(next.Methods, []string{"GET"}) || !slicesEqual(next.Routes, []string{"/forecast/*"}) {
		t.Fatalf("successor settings = %q %v %v; want the old key's", next.Name, next.Methods, next.Routes)
	}
	if _, err := f.svc.Rotate(f.ctx, f.consumer, old.ID, keys.RotateInput{}); !errors.Is(err, subscriptions.ErrAlreadyRotated) {
		t.Fatalf("second Rotate of the old key = %v; want ErrAlreadyRotated", err)
	}
	f.sync(old.ID)
	f.sync(next.ID)
	listed, err := f.svc.ListKeys(f.ctx, f.consumer, f.sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || listed[0].ID != old.ID || listed[0].GraceUntil == nil || !listed[0].GraceUntil.Equal(t0.Add(time.Hour)) ||
		listed[1].ID != next.ID || listed[1].State != keys.StateActive {
		t.Fatalf("ListKeys = %+v; want the old key with grace until %s and the active successor", listed, t0.Add(time.Hour))
	}
	rec := f.record(old.Plaintext)
	for _, c := range []struct {
		at   time.Time
		want error
	}{
		{t0, nil},
		{t0.Add(59 * time.Minute), nil},
		{t0.Add(time.Hour - time.Second), nil},
		{t0.Add(time.Hour), enforcement.ErrKeyExpired},
		{t0.Add(2 * time.Hour), enforcement.ErrKeyExpired},
	} {
		if err := rec.Allows("GET", "/forecast/lisbon", c.at); !errors.Is(err, c.want) {
			t.Errorf("old key at %s = %v; want %v", c.at.Sub(t0), err, c.want)
		}
	}
	if err := f.record(next.Plaintext).Allows("GET", "/forecast/lisbon", t0.Add(2*time.Hour)); err != nil {
		t.Errorf("successor after the grace = %v; want allowed", err)
	}

	f.clock.Set(t0.Add(time.Hour))
	if rep := f.maintain(); rep.GraceEnded != 1 {
		t.Fatalf("maintenance after the grace ended %d keys; want 1", rep.GraceEnded)
	}
	if got := f.get(old.ID); got.State != keys.StateRevoked {
		t.Fatalf("old key after its grace = %s; want revoked", got.State)
	}
	f.sync(old.ID)
	if r := f.record(old.Plaintext); r.Status != enforcement.KeyRevoked || r.Allows("GET", "/forecast/x", f.clock.Now()) == nil {
		t.Fatalf("old key's record after revocation = %+v; want revoked and refused", r)
	}

	// No grace: the old key goes at once.
	zero := int64(0)
	third, err := f.svc.Rotate(f.ctx, f.consumer, next.ID, keys.RotateInput{GraceSeconds: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.get(next.ID); got.State != keys.StateRevoked || got.GraceUntil != nil {
		t.Fatalf("key rotated with grace 0 = %s, grace %v; want revoked now", got.State, got.GraceUntil)
	}
	f.sync(next.ID)
	if err := f.record(next.Plaintext).Allows("GET", "/forecast/x", f.clock.Now()); err == nil {
		t.Fatal("key rotated with grace 0 is still allowed by its record")
	}
	if third.Plaintext == "" {
		t.Fatal("successor has no plaintext")
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

// TestExpiryNoticesOnceEach: the 7, 3 and 1 day notices reach mailpit
// once each however often maintenance runs, then the key expires.
func TestExpiryNoticesOnceEach(t *testing.T) {
	f := setup(t)
	t0 := f.clock.Now()
	expires := t0.Add(10 * 24 * time.Hour)
	k := f.key(keys.Settings{Name: "billing", ExpiresAt: &expires}, true)
	renewDays := 30
	renewing := f.key(keys.Settings{ExpiresAt: &expires, AutoRenew: true, RenewDays: &renewDays}, true)

	steps := []struct {
		before time.Duration
		kind   string
	}{
		{9 * 24 * time.Hour, ""},
		{7*24*time.Hour - time.Minute, "expiry_7d"},
		{6 * 24 * time.Hour, ""},
		{3*24*time.Hour - time.Minute, "expiry_3d"},
		{2 * 24 * time.Hour, ""},
		{12 * time.Hour, "expiry_1d"},
		{time.Hour, ""},
	}
	for _, st := range steps {
		f.clock.Set(expires.Add(-st.before))
		for range 2 {
			f.maintain()
		}
		want := 0
		if st.kind != "" {
			want = 1
		}
		if n := f.sendQueuedEmails(); n != want {
			t.Fatalf("emails queued %s before expiry = %d; want %d", st.before, n, want)
		}
	}
	msgs := f.mail.WaitMessages(t, f.email, 3, 10*time.Second)
	if len(msgs) != 3 {
		t.Fatalf("mailpit holds %d messages for %s; want 3", len(msgs), f.email)
	}
	for i, kind := range []string{"expiry_7d", "expiry_3d", "expiry_1d"} {
		m := msgs[i]
		if got := m.Headers["X-Veil-Notice"]; len(got) != 1 || got[0] != kind {
			t.Errorf("message %d notice = %v; want %s", i, got, kind)
		}
		if got := m.Headers["X-Veil-Key-Id"]; len(got) != 1 || got[0] != k.ID.String() {
			t.Errorf("message %d is about key %v; want %s (the auto-renewing key gets no expiry notice)", i, got, k.ID)
		}
		days := strings.TrimSuffix(strings.TrimPrefix(kind, "expiry_"), "d")
		if !strings.Contains(m.Subject, "expires in "+days+" day") || !strings.Contains(m.Text, k.Masked) {
			t.Errorf("message %d = %q / %q; want the days and the masked key", i, m.Subject, m.Text)
		}
		if strings.Contains(m.Text, k.Plaintext) {
			t.Errorf("message %d holds the plaintext key", i)
		}
	}
	var webhookNotices int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM key_notices WHERE key_id = $1 AND channel = 'webhook'`, k.ID).Scan(&webhookNotices); err != nil {
		t.Fatal(err)
	}
	if webhookNotices != 3 {
		t.Fatalf("webhook notices = %d; want 3", webhookNotices)
	}

	f.clock.Set(expires)
	rep := f.maintain()
	if rep.Expired != 1 || rep.Renewed != 1 {
		t.Fatalf("maintenance at expiry = %+v; want 1 expired, 1 renewed", rep)
	}
	if got := f.get(k.ID); got.State != keys.StateExpired {
		t.Fatalf("key at its expiry = %s; want expired", got.State)
	}
	got := f.get(renewing.ID)
	if got.State != keys.StateActive || got.ExpiresAt == nil || !got.ExpiresAt.Equal(expires.AddDate(0, 0, 30)) {
		t.Fatalf("auto-renewing key = %s until %v; want active until %s", got.State, got.ExpiresAt, expires.AddDate(0, 0, 30))
	}
	f.sync(k.ID)
	if r := f.record(k.Plaintext); r.Status != enforcement.KeyExpired {
		t.Fatalf("expired key's record status = %s; want expired", r.Status)
	}
	if n := f.sendQueuedEmails(); n != 0 {
		t.Fatalf("emails queued at expiry = %d; want 0", n)
	}
	if n := len(f.mail.Messages(t, f.email)); n != 3 {
		t.Fatalf("mailpit holds %d messages after expiry; want still 3", n)
	}
}

// TestAutomaticRotation: a key with the policy is announced before it is
// due, rotated when due with a sealed successor that can be revealed once,
// and the consumer is told after.
func TestAutomaticRotation(t *testing.T) {
	f := setup(t)
	k := f.key(keys.Settings{AutoRotate: true, RotateEveryDays: 30}, true)
	created := f.get(k.ID).CreatedAt
	due := created.AddDate(0, 0, 30)

	f.clock.Set(due.Add(-8 * 24 * time.Hour))
	if rep := f.maintain(); rep.Notices != 0 || rep.Rotated != 0 {
		t.Fatalf("maintenance 8 days before = %+v; want nothing", rep)
	}
	f.clock.Set(due.Add(-6 * 24 * time.Hour))
	f.maintain()
	if rep := f.maintain(); rep.Rotated != 0 {
		t.Fatalf("maintenance before due rotated %d keys", rep.Rotated)
	}
	f.clock.Set(due.Add(time.Minute))
	if rep := f.maintain(); rep.Rotated != 1 {
		t.Fatalf("maintenance when due = %+v; want 1 rotated", rep)
	}
	if rep := f.maintain(); rep.Rotated != 0 {
		t.Fatalf("second maintenance when due rotated %d keys", rep.Rotated)
	}
	if n := f.sendQueuedEmails(); n != 2 {
		t.Fatalf("emails queued by automatic rotation = %d; want 2", n)
	}
	listed, err := f.svc.ListKeys(f.ctx, f.consumer, f.sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || listed[0].GraceUntil == nil || listed[0].AutoRotate || !listed[1].Revealable || !listed[1].AutoRotate {
		t.Fatalf("keys after automatic rotation = %+v; want the old one in grace and a revealable successor keeping the policy", listed)
	}
	if want := due.Add(time.Minute).Add(7 * 24 * time.Hour).Truncate(time.Second); !listed[0].GraceUntil.Equal(want) {
		t.Fatalf("old key's grace = %s; want %s", listed[0].GraceUntil, want)
	}
	successor := listed[1]
	revealed, err := f.svc.Reveal(f.ctx, f.consumer, successor.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apikey.Parse(revealed.Plaintext); err != nil || apikey.Hash(revealed.Plaintext) != enforcement.Hash(revealed.Plaintext) {
		t.Fatalf("revealed plaintext %q does not parse: %v", revealed.Plaintext, err)
	}
	f.sync(successor.ID)
	if r := f.record(revealed.Plaintext); r.KeyID != successor.ID.String() {
		t.Fatalf("revealed plaintext's record is key %s; want %s", r.KeyID, successor.ID)
	}
	if _, err := f.svc.Reveal(f.ctx, f.consumer, successor.ID); !errors.Is(err, subscriptions.ErrNothingToReveal) {
		t.Fatalf("second Reveal = %v; want ErrNothingToReveal", err)
	}
	other := identity.Actor{Subject: "x", Role: identity.RoleConsumer, OrgID: uuid.New()}
	if _, err := f.svc.Reveal(f.ctx, other, successor.ID); !errors.Is(err, subscriptions.ErrKeyNotFound) {
		t.Fatalf("Reveal by another organization = %v; want not found", err)
	}
	msgs := f.mail.WaitMessages(t, f.email, 2, 10*time.Second)
	if len(msgs) != 2 || msgs[0].Headers["X-Veil-Notice"][0] != "rotation_before" || msgs[1].Headers["X-Veil-Notice"][0] != "rotation_after" {
		t.Fatalf("rotation emails = %d; want rotation_before then rotation_after", len(msgs))
	}
	if !strings.Contains(msgs[1].Text, successor.ID.String()) || strings.Contains(msgs[1].Text, revealed.Plaintext) {
		t.Fatalf("rotation_after email must name the successor and not hold its plaintext: %q", msgs[1].Text)
	}
}

// TestSyncFailureThenHealed: a key whose record cannot be written stays
// pending, turns failed_sync after SyncFailAfter attempts, and becomes
// active once a retry gets through.
func TestSyncFailureThenHealed(t *testing.T) {
	f := setup(t)
	k := f.key(keys.Settings{}, false)
	f.records.failing.Store(true)
	for i := 1; i <= 4; i++ {
		if err := f.svc.SyncKey(f.ctx, k.ID); !errors.Is(err, errRedisDown) {
			t.Fatalf("attempt %d = %v; want the Redis error", i, err)
		}
		want := keys.StatePending
		if i >= 3 {
			want = keys.StateFailedSync
		}
		got := f.get(k.ID)
		if got.State != want || got.SyncAttempts != i || !strings.Contains(got.SyncError, "connection refused") {
			t.Fatalf("after failed attempt %d: state %s, attempts %d, error %q; want %s, %d", i, got.State, got.SyncAttempts, got.SyncError, want, i)
		}
	}
	if n := f.auditCount(k.ID, "key.transition.failed_sync"); n != 1 {
		t.Fatalf("failed_sync audit entries = %d; want 1", n)
	}
	if _, err := f.store.GetKey(f.ctx, enforcement.Hash(k.Plaintext)); !errors.Is(err, enforcement.ErrNotFound) {
		t.Fatalf("record of an unsynced key = %v; want none", err)
	}
	f.records.failing.Store(false)
	f.sync(k.ID)
	got := f.get(k.ID)
	if got.State != keys.StateActive || !got.Synced || got.SyncAttempts != 0 || got.SyncError != "" {
		t.Fatalf("after the retry got through: %+v; want active and synced", got)
	}
	if r := f.record(k.Plaintext); r.Status != enforcement.KeyActive || r.KeyID != k.ID.String() || r.SubscriptionID != f.sub.ID.String() {
		t.Fatalf("record after healing = %+v", r)
	}
}

// TestReconcileHealsDrift injects each kind of drift into Redis and
// checks one reconciliation heals all of it and a second finds nothing.
func TestReconcileHealsDrift(t *testing.T) {
	f := setup(t)
	missing := f.key(keys.Settings{Name: "missing"}, true)
	different := f.key(keys.Settings{Name: "different", Methods: []string{"GET"}}, true)
	suspended := f.key(keys.Settings{Name: "suspended"}, true)
	if _, err := f.svc.Act(f.ctx, f.consumer, suspended.ID, keys.ActionSuspend, ""); err != nil {
		t.Fatal(err)
	}
	f.sync(suspended.ID)
	unheard := f.key(keys.Settings{Name: "written, never marked"}, false)
	if err := f.svc.SyncSubscription(f.ctx, f.sub.ID); err != nil {
		t.Fatal(err)
	}

	do := func(cmd rueidis.Completed) {
		t.Helper()
		if err := f.redis.Do(f.ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	b := f.redis.B()
	// Missing: the record is gone.
	do(b.Del().Key(enforcement.KeyName(enforcement.Hash(missing.Plaintext))).Build())
	// Different: someone widened the key's methods and re-activated the suspended one.
	do(b.Hset().Key(enforcement.KeyName(enforcement.Hash(different.Plaintext))).FieldValue().FieldValue("methods", `["GET","DELETE"]`).Build())
	do(b.Hset().Key(enforcement.KeyName(enforcement.Hash(suspended.Plaintext))).FieldValue().FieldValue("status", "active").Build())
	// Orphan: a valid record with no key behind it.
	orphan, err := apikey.Generate(apikey.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.PutKey(f.ctx, enforcement.KeyRecord{
		Hash: orphan.Hash, KeyID: uuid.NewString(), SubscriptionID: f.sub.ID.String(), APIID: f.apiID.String(),
		Status: enforcement.KeyActive, Version: 1,
	}); err != nil {
		t.Fatal(err)
	}
	// Corrupt: garbage under a key record's name.
	garbage := strings.Repeat("ab", 32)
	do(b.Hset().Key(enforcement.KeyName(garbage)).FieldValue().FieldValue("status", "sideways").Build())
	// Unheard: the record was written but the key was never told (its job died).
	if _, err := f.store.PutKey(f.ctx, recordFor(t, f, unheard)); err != nil {
		t.Fatal(err)
	}
	// Subscription record gone.
	do(b.Del().Key(enforcement.SubscriptionName(f.sub.ID.String())).Build())

	rep, err := f.svc.ReconcileKeys(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := subscriptions.ReconcileReport{
		KeysChecked: 4, Missing: 1, Different: 2, Orphaned: 1, Corrupt: 1,
		SubscriptionsChecked: 1, SubscriptionsMissing: 1, Healed: 6, Unhealed: []subscriptions.Unhealed{},
	}
	if fmt.Sprint(rep) != fmt.Sprint(want) {
		t.Fatalf("ReconcileKeys = %+v; want %+v", rep, want)
	}
	if r := f.record(missing.Plaintext); r.Status != enforcement.KeyActive {
		t.Errorf("missing record after healing: %+v", r)
	}
	if r := f.record(different.Plaintext); !slicesEqual(r.Methods, []string{"GET"}) {
		t.Errorf("different record's methods after healing = %v; want [GET]", r.Methods)
	}
	if r := f.record(suspended.Plaintext); r.Status != enforcement.KeySuspended {
		t.Errorf("suspended key's record after healing = %s; want suspended", r.Status)
	}
	for _, h := range []string{orphan.Hash, garbage} {
		if n, err := f.redis.Do(f.ctx, b.Exists().Key(enforcement.KeyName(h)).Build()).AsInt64(); err != nil || n != 0 {
			t.Errorf("record %s still exists after healing (%v)", h, err)
		}
	}
	if got := f.get(unheard.ID); got.State != keys.StateActive {
		t.Errorf("key whose record was written = %s; want active", got.State)
	}
	if _, err := f.store.GetSubscription(f.ctx, f.sub.ID.String()); err != nil {
		t.Errorf("subscription record after healing: %v", err)
	}

	again, err := f.svc.ReconcileKeys(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.Missing+again.Different+again.Orphaned+again.Corrupt+again.SubscriptionsMissing+again.SubscriptionsDifferent+again.Healed != 0 {
		t.Fatalf("second ReconcileKeys = %+v; want no drift", again)
	}
}

// recordFor is the record the service would write for k now.
func recordFor(t *testing.T, f *fixture, k subscriptions.Key) enforcement.KeyRecord {
	t.Helper()
	var version int64
	if err := f.pool.QueryRow(f.ctx, `SELECT sync_version FROM api_keys WHERE id = $1`, k.ID).Scan(&version); err != nil {
		t.Fatal(err)
	}
	return enforcement.KeyRecord{
		Hash: enforcement.Hash(k.Plaintext), KeyID: k.ID.String(), SubscriptionID: k.SubscriptionID.String(),
		APIID: k.APIID.String(), Status: enforcement.KeyActive, Methods: []string{}, Routes: []string{}, Version: version,
	}
}
