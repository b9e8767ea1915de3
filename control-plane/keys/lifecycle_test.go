package keys_test

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
	"github.com/veil-platform/veil/control-plane/subscriptions/subscriptionstest"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
)

// forceState puts a key in a state directly, to start a transition from it.
func forceState(f *subscriptionstest.Fixture, id uuid.UUID, s keys.State) {
	f.T.Helper()
	if _, err := f.Pool.Exec(f.Ctx, `UPDATE api_keys SET state = $2::key_state,
			revoked_at = CASE WHEN $2::key_state = 'revoked' THEN now() END WHERE id = $1`, id, s); err != nil {
		f.T.Fatal(err)
	}
}

// TestKeyActionsFollowStateMachine tries suspend, resume and revoke from
// every state: each is allowed exactly when the state machine allows it
// (resume only from suspended), and a refusal changes nothing.
func TestKeyActionsFollowStateMachine(t *testing.T) {
	f := subscriptionstest.Setup(t)
	targets := map[keys.Action]keys.State{
		keys.ActionSuspend: keys.StateSuspended,
		keys.ActionResume:  keys.StateActive,
		keys.ActionRevoke:  keys.StateRevoked,
	}
	for _, from := range keys.States {
		for action, to := range targets {
			t.Run(fmt.Sprintf("%s/%s", from, action), func(t *testing.T) {
				if _, err := f.Pool.Exec(f.Ctx, `DELETE FROM api_keys`); err != nil {
					t.Fatal(err)
				}
				k := f.Key(keys.Settings{}, false)
				forceState(f, k.ID, from)
				before := f.Get(k.ID)
				got, err := f.Keys.Act(f.Ctx, f.Consumer, k.ID, action, "test")
				want := keys.CanTransition(from, to) && (action != keys.ActionResume || from == keys.StateSuspended)
				after := f.Get(k.ID)
				if !want {
					var te *keys.TransitionError
					if !errors.As(err, &te) || te.From != from || te.To != to {
						t.Fatalf("Act(%s) from %s = %v; want a TransitionError %s → %s", action, from, err, from, to)
					}
					if after.State != from || after.UpdatedAt != before.UpdatedAt {
						t.Fatalf("refused Act changed the key: %s → %s", from, after.State)
					}
					if n := f.AuditCount(k.ID, "key.transition."+string(to)); n != 0 {
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
				if n := f.AuditCount(k.ID, "key.transition."+string(to)); n != 1 {
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
	f := subscriptionstest.Setup(t)
	for _, from := range keys.States {
		t.Run("sync/"+string(from), func(t *testing.T) {
			k := f.Key(keys.Settings{}, false)
			forceState(f, k.ID, from)
			f.Sync(k.ID)
			want := from
			if from == keys.StatePending || from == keys.StateFailedSync {
				want = keys.StateActive
			}
			if got := f.Get(k.ID); got.State != want || !got.Synced {
				t.Fatalf("sync from %s = %s (synced %v); want %s, synced", from, got.State, got.Synced, want)
			}
			if _, err := f.Keys.Act(f.Ctx, f.Consumer, k.ID, keys.ActionRevoke, ""); err != nil && !errors.Is(err, keys.ErrInvalidTransition) {
				t.Fatal(err)
			}
		})
	}
	for _, from := range keys.States {
		t.Run("expiry/"+string(from), func(t *testing.T) {
			at := f.Clock.Now().Add(time.Hour)
			k := f.Key(keys.Settings{ExpiresAt: &at}, false)
			forceState(f, k.ID, from)
			f.Clock.Set(at.Add(time.Second))
			defer f.Clock.Set(at.Add(-time.Hour))
			f.Maintain()
			want := from
			if keys.CanTransition(from, keys.StateExpired) {
				want = keys.StateExpired
			}
			if got := f.Get(k.ID); got.State != want {
				t.Fatalf("expiry from %s = %s; want %s", from, got.State, want)
			}
			if _, err := f.Pool.Exec(f.Ctx, `DELETE FROM api_keys WHERE id = $1`, k.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRotationGrace: the old key's record is accepted until its grace ends
// and refused after, by the gateway's own decision function; maintenance
// then revokes it. With no grace the old key is revoked at once.
func TestRotationGrace(t *testing.T) {
	f := subscriptionstest.Setup(t)
	old := f.Key(keys.Settings{Name: "prod", Methods: []string{"GET"}, Routes: []string{"/forecast/*"}}, true)
	t0 := f.Clock.Now()
	grace := int64(3600)
	next, err := f.Keys.Rotate(f.Ctx, f.Consumer, old.ID, keys.RotateInput{GraceSeconds: &grace})
	if err != nil {
		t.Fatal(err)
	}
	if next.Plaintext == "" || next.Plaintext == old.Plaintext || next.RotatedFrom == nil || *next.RotatedFrom != old.ID {
		t.Fatalf("Rotate = %+v; want a new key rotated from %s with its plaintext", next, old.ID)
	}
	if next.Name != "prod" || !slicesEqual(next.Methods, []string{"GET"}) || !slicesEqual(next.Routes, []string{"/forecast/*"}) {
		t.Fatalf("successor settings = %q %v %v; want the old key's", next.Name, next.Methods, next.Routes)
	}
	if _, err := f.Keys.Rotate(f.Ctx, f.Consumer, old.ID, keys.RotateInput{}); !errors.Is(err, keys.ErrAlreadyRotated) {
		t.Fatalf("second Rotate of the old key = %v; want ErrAlreadyRotated", err)
	}
	f.Sync(old.ID)
	f.Sync(next.ID)
	listed, err := f.Keys.ListKeys(f.Ctx, f.Consumer, f.Sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || listed[0].ID != old.ID || listed[0].GraceUntil == nil || !listed[0].GraceUntil.Equal(t0.Add(time.Hour)) ||
		listed[1].ID != next.ID || listed[1].State != keys.StateActive {
		t.Fatalf("ListKeys = %+v; want the old key with grace until %s and the active successor", listed, t0.Add(time.Hour))
	}
	rec := f.Record(old.Plaintext)
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
	if err := f.Record(next.Plaintext).Allows("GET", "/forecast/lisbon", t0.Add(2*time.Hour)); err != nil {
		t.Errorf("successor after the grace = %v; want allowed", err)
	}

	f.Clock.Set(t0.Add(time.Hour))
	if rep := f.Maintain(); rep.GraceEnded != 1 {
		t.Fatalf("maintenance after the grace ended %d keys; want 1", rep.GraceEnded)
	}
	if got := f.Get(old.ID); got.State != keys.StateRevoked {
		t.Fatalf("old key after its grace = %s; want revoked", got.State)
	}
	f.Sync(old.ID)
	if r := f.Record(old.Plaintext); r.Status != enforcement.KeyRevoked || r.Allows("GET", "/forecast/x", f.Clock.Now()) == nil {
		t.Fatalf("old key's record after revocation = %+v; want revoked and refused", r)
	}

	// No grace: the old key goes at once.
	zero := int64(0)
	third, err := f.Keys.Rotate(f.Ctx, f.Consumer, next.ID, keys.RotateInput{GraceSeconds: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Get(next.ID); got.State != keys.StateRevoked || got.GraceUntil != nil {
		t.Fatalf("key rotated with grace 0 = %s, grace %v; want revoked now", got.State, got.GraceUntil)
	}
	f.Sync(next.ID)
	if err := f.Record(next.Plaintext).Allows("GET", "/forecast/x", f.Clock.Now()); err == nil {
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
	f := subscriptionstest.Setup(t)
	t0 := f.Clock.Now()
	expires := t0.Add(10 * 24 * time.Hour)
	k := f.Key(keys.Settings{Name: "billing", ExpiresAt: &expires}, true)
	renewDays := 30
	renewing := f.Key(keys.Settings{ExpiresAt: &expires, AutoRenew: true, RenewDays: &renewDays}, true)

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
		f.Clock.Set(expires.Add(-st.before))
		for range 2 {
			f.Maintain()
		}
		want := 0
		if st.kind != "" {
			want = 1
		}
		if n := f.SendQueuedEmails(); n != want {
			t.Fatalf("emails queued %s before expiry = %d; want %d", st.before, n, want)
		}
	}
	msgs := f.Mail.WaitMessages(t, f.Email, 3, 10*time.Second)
	if len(msgs) != 3 {
		t.Fatalf("mailpit holds %d messages for %s; want 3", len(msgs), f.Email)
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
	if err := f.Pool.QueryRow(f.Ctx, `SELECT count(*) FROM key_notices WHERE key_id = $1 AND channel = 'webhook'`, k.ID).Scan(&webhookNotices); err != nil {
		t.Fatal(err)
	}
	if webhookNotices != 3 {
		t.Fatalf("webhook notices = %d; want 3", webhookNotices)
	}

	f.Clock.Set(expires)
	rep := f.Maintain()
	if rep.Expired != 1 || rep.Renewed != 1 {
		t.Fatalf("maintenance at expiry = %+v; want 1 expired, 1 renewed", rep)
	}
	if got := f.Get(k.ID); got.State != keys.StateExpired {
		t.Fatalf("key at its expiry = %s; want expired", got.State)
	}
	got := f.Get(renewing.ID)
	if got.State != keys.StateActive || got.ExpiresAt == nil || !got.ExpiresAt.Equal(expires.AddDate(0, 0, 30)) {
		t.Fatalf("auto-renewing key = %s until %v; want active until %s", got.State, got.ExpiresAt, expires.AddDate(0, 0, 30))
	}
	f.Sync(k.ID)
	if r := f.Record(k.Plaintext); r.Status != enforcement.KeyExpired {
		t.Fatalf("expired key's record status = %s; want expired", r.Status)
	}
	if n := f.SendQueuedEmails(); n != 0 {
		t.Fatalf("emails queued at expiry = %d; want 0", n)
	}
	if n := len(f.Mail.Messages(t, f.Email)); n != 3 {
		t.Fatalf("mailpit holds %d messages after expiry; want still 3", n)
	}
}

// TestAutomaticRotation: a key with the policy is announced before it is
// due, rotated when due with a sealed successor that can be revealed once,
// and the consumer is told after.
func TestAutomaticRotation(t *testing.T) {
	f := subscriptionstest.Setup(t)
	k := f.Key(keys.Settings{AutoRotate: true, RotateEveryDays: 30}, true)
	created := f.Get(k.ID).CreatedAt
	due := created.AddDate(0, 0, 30)

	f.Clock.Set(due.Add(-8 * 24 * time.Hour))
	if rep := f.Maintain(); rep.Notices != 0 || rep.Rotated != 0 {
		t.Fatalf("maintenance 8 days before = %+v; want nothing", rep)
	}
	f.Clock.Set(due.Add(-6 * 24 * time.Hour))
	f.Maintain()
	if rep := f.Maintain(); rep.Rotated != 0 {
		t.Fatalf("maintenance before due rotated %d keys", rep.Rotated)
	}
	f.Clock.Set(due.Add(time.Minute))
	if rep := f.Maintain(); rep.Rotated != 1 {
		t.Fatalf("maintenance when due = %+v; want 1 rotated", rep)
	}
	if rep := f.Maintain(); rep.Rotated != 0 {
		t.Fatalf("second maintenance when due rotated %d keys", rep.Rotated)
	}
	if n := f.SendQueuedEmails(); n != 2 {
		t.Fatalf("emails queued by automatic rotation = %d; want 2", n)
	}
	listed, err := f.Keys.ListKeys(f.Ctx, f.Consumer, f.Sub.ID)
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
	revealed, err := f.Keys.Reveal(f.Ctx, f.Consumer, successor.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apikey.Parse(revealed.Plaintext); err != nil {
		t.Fatalf("revealed plaintext %q does not parse: %v", revealed.Plaintext, err)
	}
	f.Sync(successor.ID)
	if r := f.Record(revealed.Plaintext); r.KeyID != successor.ID.String() {
		t.Fatalf("revealed plaintext's record is key %s; want %s", r.KeyID, successor.ID)
	}
	if _, err := f.Keys.Reveal(f.Ctx, f.Consumer, successor.ID); !errors.Is(err, keys.ErrNothingToReveal) {
		t.Fatalf("second Reveal = %v; want ErrNothingToReveal", err)
	}
	other := identity.Actor{Subject: "x", Role: identity.RoleConsumer, OrgID: uuid.New()}
	if _, err := f.Keys.Reveal(f.Ctx, other, successor.ID); !errors.Is(err, keys.ErrKeyNotFound) {
		t.Fatalf("Reveal by another organization = %v; want not found", err)
	}
	msgs := f.Mail.WaitMessages(t, f.Email, 2, 10*time.Second)
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
	f := subscriptionstest.Setup(t)
	k := f.Key(keys.Settings{}, false)
	f.Records.Failing.Store(true)
	for i := 1; i <= 4; i++ {
		if err := f.Keys.SyncKey(f.Ctx, k.ID); !errors.Is(err, subscriptionstest.ErrRedisDown) {
			t.Fatalf("attempt %d = %v; want the Redis error", i, err)
		}
		want := keys.StatePending
		if i >= 3 {
			want = keys.StateFailedSync
		}
		got := f.Get(k.ID)
		if got.State != want || got.SyncAttempts != i || !strings.Contains(got.SyncError, "connection refused") {
			t.Fatalf("after failed attempt %d: state %s, attempts %d, error %q; want %s, %d", i, got.State, got.SyncAttempts, got.SyncError, want, i)
		}
	}
	if n := f.AuditCount(k.ID, "key.transition.failed_sync"); n != 1 {
		t.Fatalf("failed_sync audit entries = %d; want 1", n)
	}
	if _, err := f.Store.GetKey(f.Ctx, apikey.Hash(k.Plaintext)); !errors.Is(err, enforcement.ErrNotFound) {
		t.Fatalf("record of an unsynced key = %v; want none", err)
	}
	f.Records.Failing.Store(false)
	f.Sync(k.ID)
	got := f.Get(k.ID)
	if got.State != keys.StateActive || !got.Synced || got.SyncAttempts != 0 || got.SyncError != "" {
		t.Fatalf("after the retry got through: %+v; want active and synced", got)
	}
	if r := f.Record(k.Plaintext); r.Status != enforcement.KeyActive || r.KeyID != k.ID.String() || r.SubscriptionID != f.Sub.ID.String() {
		t.Fatalf("record after healing = %+v", r)
	}
}

// TestKeyLimit: at most MaxActiveKeys live keys; revoked ones and keys in
// their rotation grace do not count.
func TestKeyLimit(t *testing.T) {
	f := subscriptionstest.Setup(t)
	var issued []keys.Key
	for range 5 {
		issued = append(issued, f.Key(keys.Settings{}, true))
	}
	if _, err := f.Keys.CreateKey(f.Ctx, f.Consumer, f.Sub.ID, keys.Settings{}); !errors.Is(err, keys.ErrKeyLimit) {
		t.Fatalf("sixth key = %v; want ErrKeyLimit", err)
	}
	if _, err := f.Keys.Rotate(f.Ctx, f.Consumer, issued[0].ID, keys.RotateInput{}); err != nil {
		t.Fatalf("rotating at the limit = %v; want allowed (the old key is in grace)", err)
	}
	if _, err := f.Keys.Act(f.Ctx, f.Consumer, issued[1].ID, keys.ActionRevoke, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Keys.CreateKey(f.Ctx, f.Consumer, f.Sub.ID, keys.Settings{}); err != nil {
		t.Fatalf("key after a revoke = %v; want allowed", err)
	}
	if err := f.Keys.DeleteKey(f.Ctx, f.Consumer, issued[2].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Keys.GetKey(f.Ctx, f.Consumer, issued[2].ID); !errors.Is(err, keys.ErrKeyNotFound) {
		t.Fatalf("deleted key = %v; want not found", err)
	}
	if _, err := f.Store.GetKey(f.Ctx, apikey.Hash(issued[2].Plaintext)); err != nil {
		t.Fatalf("record of a deleted key before its deletion job: %v (the job removes it)", err)
	}
}

// TestReconcileHealsDrift injects each kind of drift into Redis and
// checks one reconciliation heals all of it and a second finds nothing.
func TestReconcileHealsDrift(t *testing.T) {
	f := subscriptionstest.Setup(t)
	missing := f.Key(keys.Settings{Name: "missing"}, true)
	different := f.Key(keys.Settings{Name: "different", Methods: []string{"GET"}}, true)
	suspended := f.Key(keys.Settings{Name: "suspended"}, true)
	if _, err := f.Keys.Act(f.Ctx, f.Consumer, suspended.ID, keys.ActionSuspend, ""); err != nil {
		t.Fatal(err)
	}
	f.Sync(suspended.ID)
	unheard := f.Key(keys.Settings{Name: "written, never marked"}, false)
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
		t.Fatal(err)
	}

	do := func(cmd rueidis.Completed) {
		t.Helper()
		if err := f.Redis.Do(f.Ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	b := f.Redis.B()
	// Missing: the record is gone.
	do(b.Del().Key(enforcement.KeyName(apikey.Hash(missing.Plaintext))).Build())
	// Different: someone widened the key's methods and re-activated the suspended one.
	do(b.Hset().Key(enforcement.KeyName(apikey.Hash(different.Plaintext))).FieldValue().FieldValue("methods", `["GET","DELETE"]`).Build())
	do(b.Hset().Key(enforcement.KeyName(apikey.Hash(suspended.Plaintext))).FieldValue().FieldValue("status", "active").Build())
	// Orphan: a valid record with no key behind it.
	orphan, err := apikey.Generate(apikey.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Store.PutKey(f.Ctx, enforcement.KeyRecord{
		Hash: orphan.Hash, KeyID: uuid.NewString(), SubscriptionID: f.Sub.ID.String(), APIID: f.APIID.String(),
		Status: enforcement.KeyActive, Version: 1,
	}); err != nil {
		t.Fatal(err)
	}
	// Corrupt: garbage under a key record's name.
	garbage := strings.Repeat("ab", 32)
	do(b.Hset().Key(enforcement.KeyName(garbage)).FieldValue().FieldValue("status", "sideways").Build())
	// Unheard: the record was written but the key was never told (its job died).
	if _, err := f.Store.PutKey(f.Ctx, recordFor(t, f, unheard)); err != nil {
		t.Fatal(err)
	}
	// Subscription record gone.
	do(b.Del().Key(enforcement.SubscriptionName(f.Sub.ID.String())).Build())

	rep, err := f.Svc.ReconcileKeys(f.Ctx)
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
	if r := f.Record(missing.Plaintext); r.Status != enforcement.KeyActive {
		t.Errorf("missing record after healing: %+v", r)
	}
	if r := f.Record(different.Plaintext); !slicesEqual(r.Methods, []string{"GET"}) {
		t.Errorf("different record's methods after healing = %v; want [GET]", r.Methods)
	}
	if r := f.Record(suspended.Plaintext); r.Status != enforcement.KeySuspended {
		t.Errorf("suspended key's record after healing = %s; want suspended", r.Status)
	}
	for _, h := range []string{orphan.Hash, garbage} {
		if n, err := f.Redis.Do(f.Ctx, b.Exists().Key(enforcement.KeyName(h)).Build()).AsInt64(); err != nil || n != 0 {
			t.Errorf("record %s still exists after healing (%v)", h, err)
		}
	}
	if got := f.Get(unheard.ID); got.State != keys.StateActive {
		t.Errorf("key whose record was written = %s; want active", got.State)
	}
	if _, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String()); err != nil {
		t.Errorf("subscription record after healing: %v", err)
	}

	again, err := f.Svc.ReconcileKeys(f.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.Missing+again.Different+again.Orphaned+again.Corrupt+again.SubscriptionsMissing+again.SubscriptionsDifferent+again.Healed != 0 {
		t.Fatalf("second ReconcileKeys = %+v; want no drift", again)
	}
}

// recordFor is the record the service would write for k now.
func recordFor(t *testing.T, f *subscriptionstest.Fixture, k keys.Key) enforcement.KeyRecord {
	t.Helper()
	var version int64
	if err := f.Pool.QueryRow(f.Ctx, `SELECT sync_version FROM api_keys WHERE id = $1`, k.ID).Scan(&version); err != nil {
		t.Fatal(err)
	}
	return enforcement.KeyRecord{
		Hash: apikey.Hash(k.Plaintext), KeyID: k.ID.String(), SubscriptionID: k.SubscriptionID.String(),
		APIID: k.APIID.String(), Status: enforcement.KeyActive, Methods: []string{}, Routes: []string{}, Version: version,
	}
}
