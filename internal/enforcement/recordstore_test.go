package enforcement_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

type fixture struct {
	client rueidis.Client
	store  *enforcement.Store
	suffix string
}

func setup(t testing.TB) fixture {
	t.Helper()
	c := testenv.Redis(t)
	return fixture{client: c, store: enforcement.New(c), suffix: testenv.Suffix()}
}

// key returns a valid record with a hash unique to the test; it deletes
// the record when the test ends.
func (f fixture) key(t testing.TB, n int) enforcement.KeyRecord {
	t.Helper()
	hash := apikey.Hash(fmt.Sprintf("veil_test_%s_%d", f.suffix, n))
	t.Cleanup(func() { f.client.Do(context.Background(), f.client.B().Del().Key(enforcement.KeyName(hash)).Build()) })
	return enforcement.KeyRecord{
		Hash:           hash,
		KeyID:          fmt.Sprintf("key_%s_%d", f.suffix, n),
		SubscriptionID: "sub_" + f.suffix,
		APIID:          "api_" + f.suffix,
		Status:         enforcement.KeyActive,
		Methods:        []string{"GET"},
		Routes:         []string{"/forecast/*", "/users/{id}"},
		RatePerSecond:  5,
		RatePerMinute:  100,
		Version:        1,
	}
}

func (f fixture) hset(t testing.TB, name string, fv ...string) {
	t.Helper()
	cmd := f.client.B().Hset().Key(name).FieldValue()
	for i := 0; i < len(fv); i += 2 {
		cmd = cmd.FieldValue(fv[i], fv[i+1])
	}
	if err := f.client.Do(t.Context(), cmd.Build()).Error(); err != nil {
		t.Fatal(err)
	}
}

func (f fixture) pexpireTime(t testing.TB, name string) int64 {
	t.Helper()
	ms, err := f.client.Do(t.Context(), f.client.B().Pexpiretime().Key(name).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestKeyRoundTrip(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	r := f.key(t, 1)
	r.ExpiresAt = time.Unix(2_000_000_000, 0).UTC()
	r.GraceUntil = time.Unix(1_900_000_000, 0).UTC()
	r.Version = 1<<62 + 1 // beyond a Lua double's exact range
	if applied, err := f.store.PutKey(ctx, r); err != nil || !applied {
		t.Fatalf("PutKey = %v, %v; want true, nil", applied, err)
	}
	got, err := f.store.GetKey(ctx, r.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("GetKey = %+v; want %+v", got, r)
	}

	empty := f.key(t, 2)
	empty.Methods, empty.Routes = nil, []string{}
	if _, err := f.store.PutKey(ctx, empty); err != nil {
		t.Fatal(err)
	}
	got, err = f.store.GetKey(ctx, empty.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got.Methods != nil || got.Routes != nil || !got.ExpiresAt.IsZero() || !got.GraceUntil.IsZero() {
		t.Errorf("GetKey = %+v; want no methods, routes, expiry or grace", got)
	}
	fields, err := f.client.Do(ctx, f.client.B().Hgetall().Key(enforcement.KeyName(empty.Hash)).Build()).AsStrMap()
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"methods": "[]", "routes": "[]", "expires_at": "0", "grace_until": "0", "status": "active", "rate_per_second": "5"} {
		if fields[k] != want {
			t.Errorf("stored %s = %q; want %q", k, fields[k], want)
		}
	}

	if _, err := f.store.GetKey(ctx, apikey.Hash("no such key "+f.suffix)); !errors.Is(err, enforcement.ErrNotFound) {
		t.Errorf("GetKey(unknown) = %v; want ErrNotFound", err)
	}
}

func TestPutKeyRefusesInvalid(t *testing.T) {
	f := setup(t)
	valid := f.key(t, 1)
	tests := []struct {
		name string
		edit func(*enforcement.KeyRecord)
	}{
		{"hash", func(r *enforcement.KeyRecord) { r.Hash = "veil_live_plaintext" }},
		{"upper-case hash", func(r *enforcement.KeyRecord) { r.Hash = strings.ToUpper(r.Hash) }},
		{"key id", func(r *enforcement.KeyRecord) { r.KeyID = "" }},
		{"status", func(r *enforcement.KeyRecord) { r.Status = "pending" }},
		{"method", func(r *enforcement.KeyRecord) { r.Methods = []string{"get"} }},
		{"route", func(r *enforcement.KeyRecord) { r.Routes = []string{"forecast"} }},
		{"rate", func(r *enforcement.KeyRecord) { r.RatePerMinute = -1 }},
		{"version", func(r *enforcement.KeyRecord) { r.Version = 0 }},
		{"expiry at the epoch", func(r *enforcement.KeyRecord) { r.ExpiresAt = time.Unix(0, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := valid
			tt.edit(&r)
			if applied, err := f.store.PutKey(t.Context(), r); applied || !errors.Is(err, enforcement.ErrInvalidRecord) {
				t.Errorf("PutKey = %v, %v; want false, ErrInvalidRecord", applied, err)
			}
		})
	}
}

func TestPutKeyNewerWins(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	r := f.key(t, 1)
	put := func(version int64, status string) bool {
		t.Helper()
		r.Version, r.Status = version, status
		applied, err := f.store.PutKey(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return applied
	}
	steps := []struct {
		version int64
		status  string
		applied bool
	}{
		{9, enforcement.KeyActive, true},
		{10, enforcement.KeyRevoked, true},
		{9, enforcement.KeyActive, false},  // late: an older write
		{10, enforcement.KeyActive, false}, // same version: already there
		{100, enforcement.KeySuspended, true},
		{99, enforcement.KeyActive, false}, // shorter decimal, must compare as a number
	}
	for _, s := range steps {
		if got := put(s.version, s.status); got != s.applied {
			t.Errorf("PutKey(version %d) applied = %v; want %v", s.version, got, s.applied)
		}
	}
	got, err := f.store.GetKey(ctx, r.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 100 || got.Status != enforcement.KeySuspended {
		t.Errorf("GetKey = version %d, %s; want version 100, suspended", got.Version, got.Status)
	}
}

func TestPutKeyConcurrentWriters(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	base := f.key(t, 1)
	const versions, writers = 200, 8
	order := rand.Perm(versions)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < versions; i += writers {
				r := base
				r.Version = int64(order[i] + 1)
				r.RatePerSecond = order[i] + 1 // tells which write the fields came from
				if _, err := f.store.PutKey(ctx, r); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := f.store.GetKey(ctx, base.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != versions || got.RatePerSecond != versions {
		t.Errorf("GetKey = version %d, rate %d; want %d, %d", got.Version, got.RatePerSecond, versions, versions)
	}
}

func TestPutKeyExpiry(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	r := f.key(t, 1)
	name := enforcement.KeyName(r.Hash)
	expires := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	grace := expires.Add(time.Hour)
	steps := []struct {
		name       string
		expires    time.Time
		grace      time.Time
		wantExpiry int64 // PEXPIRETIME; -1 = none
	}{
		{"none", time.Time{}, time.Time{}, -1},
		{"expiry", expires, time.Time{}, expires.Add(24 * time.Hour).UnixMilli()},
		{"grace later than expiry", expires, grace, grace.Add(24 * time.Hour).UnixMilli()},
		{"grace only", time.Time{}, grace, grace.Add(24 * time.Hour).UnixMilli()},
		{"cleared", time.Time{}, time.Time{}, -1},
	}
	for i, s := range steps {
		r.ExpiresAt, r.GraceUntil, r.Version = s.expires, s.grace, int64(i+1)
		if applied, err := f.store.PutKey(ctx, r); err != nil || !applied {
			t.Fatalf("%s: PutKey = %v, %v; want true, nil", s.name, applied, err)
		}
		if got := f.pexpireTime(t, name); got != s.wantExpiry {
			t.Errorf("%s: PEXPIRETIME = %d; want %d", s.name, got, s.wantExpiry)
		}
	}

	// A key dead for more than the retention is gone at once.
	r.ExpiresAt, r.Version = time.Now().Add(-25*time.Hour), 100
	if _, err := f.store.PutKey(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.GetKey(ctx, r.Hash); !errors.Is(err, enforcement.ErrNotFound) {
		t.Errorf("GetKey(long dead) = %v; want ErrNotFound", err)
	}
}

func TestDeleteKey(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	r := f.key(t, 1)
	r.Version = 5
	if _, err := f.store.PutKey(ctx, r); err != nil {
		t.Fatal(err)
	}
	if applied, err := f.store.DeleteKey(ctx, r.Hash, 4); err != nil || applied {
		t.Errorf("DeleteKey(older version) = %v, %v; want false, nil", applied, err)
	}
	if _, err := f.store.GetKey(ctx, r.Hash); err != nil {
		t.Errorf("GetKey after refused delete = %v; want the record", err)
	}
	for i := range 2 { // idempotent
		if applied, err := f.store.DeleteKey(ctx, r.Hash, 5); err != nil || !applied {
			t.Errorf("DeleteKey #%d = %v, %v; want true, nil", i+1, applied, err)
		}
	}
	if _, err := f.store.GetKey(ctx, r.Hash); !errors.Is(err, enforcement.ErrNotFound) {
		t.Errorf("GetKey after delete = %v; want ErrNotFound", err)
	}

	// Garbage goes whatever its version says.
	g := f.key(t, 2)
	f.hset(t, enforcement.KeyName(g.Hash), "version", "not a number", "status", "active")
	if applied, err := f.store.DeleteKey(ctx, g.Hash, 0); err != nil || !applied {
		t.Errorf("DeleteKey(garbage) = %v, %v; want true, nil", applied, err)
	}
	s := f.key(t, 3)
	if err := f.client.Do(ctx, f.client.B().Set().Key(enforcement.KeyName(s.Hash)).Value("x").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if applied, err := f.store.DeleteKey(ctx, s.Hash, 0); err != nil || !applied {
		t.Errorf("DeleteKey(a string) = %v, %v; want true, nil", applied, err)
	}
}

// TestDecodeStrict writes a good record, breaks one field, and wants an
// error naming the field and no record: the gateway must fail closed.
func TestDecodeStrict(t *testing.T) {
	f := setup(t)
	tests := []struct {
		field, value string // value "" with del: remove the field
		del          bool
	}{
		{field: "status", value: "pending"},
		{field: "status", del: true},
		{field: "key_id", value: ""},
		{field: "methods", value: "GET"},
		{field: "methods", value: "null"},
		{field: "methods", value: `["get"]`},
		{field: "routes", value: `["/a", 3]`},
		{field: "routes", value: `["no-slash"]`},
		{field: "routes", del: true},
		{field: "rate_per_second", value: "5.5"},
		{field: "rate_per_minute", value: "-1"},
		{field: "expires_at", value: "2026-01-01"},
		{field: "grace_until", del: true},
		{field: "version", value: "0"},
		{field: "version", value: "x"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s=%q/del=%v", tt.field, tt.value, tt.del), func(t *testing.T) {
			ctx := t.Context()
			r := f.key(t, i)
			if _, err := f.store.PutKey(ctx, r); err != nil {
				t.Fatal(err)
			}
			name := enforcement.KeyName(r.Hash)
			if tt.del {
				if err := f.client.Do(ctx, f.client.B().Hdel().Key(name).Field(tt.field).Build()).Error(); err != nil {
					t.Fatal(err)
				}
			} else {
				f.hset(t, name, tt.field, tt.value)
			}
			got, err := f.store.GetKey(ctx, r.Hash)
			if !errors.Is(err, enforcement.ErrCorruptRecord) || !strings.Contains(err.Error(), "field "+tt.field+":") {
				t.Errorf("GetKey = %v; want ErrCorruptRecord naming field %s", err, tt.field)
			}
			if !reflect.DeepEqual(got, enforcement.KeyRecord{}) {
				t.Errorf("GetKey = %+v; want the zero record", got)
			}
			// A write heals it only with a newer version than a readable one.
			r.Version = 2
			if applied, err := f.store.PutKey(ctx, r); err != nil || !applied {
				t.Fatalf("PutKey over garbage = %v, %v; want true, nil", applied, err)
			}
			if _, err := f.store.GetKey(ctx, r.Hash); err != nil {
				t.Errorf("GetKey after healing = %v", err)
			}
		})
	}
}

func TestPutKeyReplacesWrongType(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	r := f.key(t, 1)
	if err := f.client.Do(ctx, f.client.B().Set().Key(enforcement.KeyName(r.Hash)).Value("junk").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if applied, err := f.store.PutKey(ctx, r); err != nil || !applied {
		t.Fatalf("PutKey over a string = %v, %v; want true, nil", applied, err)
	}
	if _, err := f.store.GetKey(ctx, r.Hash); err != nil {
		t.Errorf("GetKey = %v", err)
	}
}

func TestScanKeys(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	const good = 2500 // more than a SCAN page
	want := map[string]string{}
	// Write them in one pipeline: the records are what is under test.
	var cmds rueidis.Commands
	for i := range good {
		r := f.key(t, i)
		want[r.Hash] = r.KeyID
		cmds = append(cmds, f.client.B().Hset().Key(enforcement.KeyName(r.Hash)).FieldValue().
			FieldValue("key_id", r.KeyID).FieldValue("subscription_id", r.SubscriptionID).FieldValue("api_id", r.APIID).
			FieldValue("status", "active").FieldValue("methods", "[]").FieldValue("routes", "[]").
			FieldValue("rate_per_second", "0").FieldValue("rate_per_minute", "0").
			FieldValue("expires_at", "0").FieldValue("grace_until", "0").FieldValue("version", "1").Build())
	}
	for _, res := range f.client.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			t.Fatal(err)
		}
	}
	garbled := f.key(t, good)
	f.hset(t, enforcement.KeyName(garbled.Hash), "key_id", garbled.KeyID, "status", "active", "version", "3")
	notHash := f.key(t, good+1)
	if err := f.client.Do(ctx, f.client.B().Set().Key(enforcement.KeyName(notHash.Hash)).Value("junk").Build()).Error(); err != nil {
		t.Fatal(err)
	}

	seen := map[string]enforcement.KeyRecord{}
	err := f.store.ScanKeys(ctx, func(r enforcement.KeyRecord) error {
		seen[r.Hash] = r // other tests' records too: Redis is shared
		return nil
	})
	for h, id := range want {
		if got, ok := seen[h]; !ok || got.KeyID != id {
			t.Fatalf("ScanKeys: record %s = %+v, %v; want key id %s", h, got, ok, id)
		}
	}
	if got := seen[garbled.Hash]; got.KeyID != garbled.KeyID || got.Status != "" || got.Version != 3 {
		t.Errorf("ScanKeys: garbled record = %+v; want key id %s, version 3, no status", got, garbled.KeyID)
	}
	if _, ok := seen[notHash.Hash]; !ok {
		t.Errorf("ScanKeys: no call for the record that is not a hash")
	}
	var se *enforcement.ScanError
	if !errors.As(err, &se) || !errors.Is(err, enforcement.ErrCorruptRecord) {
		t.Fatalf("ScanKeys = %v; want a *ScanError wrapping ErrCorruptRecord", err)
	}
	for _, h := range []string{garbled.Hash, notHash.Hash} {
		if !slices.Contains(se.Hashes, h) {
			t.Errorf("ScanError.Hashes = %v; want it to hold %s", se.Hashes, h)
		}
	}
	for _, h := range se.Hashes {
		if _, ok := want[h]; ok {
			t.Errorf("ScanError.Hashes holds good record %s", h)
		}
	}

	// Reconciliation removes the garbage it was told about, at the version
	// it was shown (a readable version still guards against racing writers).
	for _, h := range []string{garbled.Hash, notHash.Hash} {
		if applied, err := f.store.DeleteKey(ctx, h, seen[h].Version); err != nil || !applied {
			t.Errorf("DeleteKey(%s) = %v, %v; want true, nil", h, applied, err)
		}
	}

	stop := errors.New("stop")
	if err := f.store.ScanKeys(ctx, func(enforcement.KeyRecord) error { return stop }); err != stop {
		t.Errorf("ScanKeys with a failing callback = %v; want its error", err)
	}
}

func TestGetKeyCachedSeesRevoke(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	r := f.key(t, 1)
	if _, err := f.store.GetKeyCached(ctx, r.Hash, time.Minute); !errors.Is(err, enforcement.ErrNotFound) {
		t.Fatalf("GetKeyCached before the write = %v; want ErrNotFound", err)
	}
	if _, err := f.store.PutKey(ctx, r); err != nil {
		t.Fatal(err)
	}
	// Another client revokes it: the cached reader must hear of it.
	writer := enforcement.New(testenv.Redis(t))
	testenv.Deadline(t, time.Second, func() error {
		_, err := f.store.GetKeyCached(ctx, r.Hash, time.Minute)
		return err
	})
	r.Status, r.Version = enforcement.KeyRevoked, 2
	if _, err := writer.PutKey(ctx, r); err != nil {
		t.Fatal(err)
	}
	testenv.Deadline(t, time.Second, func() error {
		got, err := f.store.GetKeyCached(ctx, r.Hash, time.Minute)
		if err != nil {
			return err
		}
		if got.Status != enforcement.KeyRevoked {
			return fmt.Errorf("GetKeyCached status = %s; want revoked", got.Status)
		}
		return nil
	})
}

func TestSubscriptionRecord(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	id := "sub_" + f.suffix
	t.Cleanup(func() {
		f.client.Do(context.Background(), f.client.B().Del().Key(enforcement.SubscriptionName(id)).Build())
	})
	start := time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC)
	r := enforcement.SubscriptionRecord{
		ID: id, APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionActive,
		PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0), PeriodAnchor: start.AddDate(0, -1, 0),
		QuotaRequests: -1, QuotaHard: true, RatePerSecond: 10, RatePerMinute: 300, Version: 7,
	}
	if applied, err := f.store.PutSubscription(ctx, r); err != nil || !applied {
		t.Fatalf("PutSubscription = %v, %v; want true, nil", applied, err)
	}
	got, err := f.store.GetSubscription(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("GetSubscription = %+v; want %+v", got, r)
	}
	// The name is a contract with every reader of the layout.
	if name, want := enforcement.SubscriptionName(id), "veil:sub:{"+id+"}"; name != want {
		t.Errorf("SubscriptionName(%q) = %q; want %q", id, name, want)
	}

	// The processors count into the period the record names.
	p, err := enforcement.CurrentPeriod(ctx, f.client, id, start.Add(20*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if ps, pe := p.Start, p.End; !ps.Equal(r.PeriodStart) || !pe.Equal(r.PeriodEnd) {
		t.Errorf("CurrentPeriod = [%s, %s); want [%s, %s)", ps, pe, r.PeriodStart, r.PeriodEnd)
	}

	// Older versions lose; the processors see the newer period at once.
	older := r
	older.Version, older.Status = 6, enforcement.SubscriptionCanceled
	if applied, err := f.store.PutSubscription(ctx, older); err != nil || applied {
		t.Errorf("PutSubscription(older) = %v, %v; want false, nil", applied, err)
	}
	next := r
	next.Version, next.PeriodStart, next.PeriodEnd = 8, r.PeriodEnd, r.PeriodEnd.AddDate(0, 1, 0)
	if applied, err := f.store.PutSubscription(ctx, next); err != nil || !applied {
		t.Fatalf("PutSubscription(newer) = %v, %v; want true, nil", applied, err)
	}
	testenv.Deadline(t, time.Second, func() error {
		p, err := enforcement.CurrentPeriod(ctx, f.client, id, next.PeriodStart.Add(time.Hour))
		if err != nil {
			return err
		}
		if !p.Start.Equal(next.PeriodStart) {
			return fmt.Errorf("CurrentPeriod start = %s; want %s", p.Start, next.PeriodStart)
		}
		return nil
	})

	// Strict decoding.
	f.hset(t, enforcement.SubscriptionName(id), "quota_hard", "yes")
	if _, err := f.store.GetSubscription(ctx, id); !errors.Is(err, enforcement.ErrCorruptRecord) || !strings.Contains(err.Error(), "field quota_hard:") {
		t.Errorf("GetSubscription(garbled) = %v; want ErrCorruptRecord naming quota_hard", err)
	}
	if _, err := f.store.GetSubscription(ctx, "none_"+f.suffix); !errors.Is(err, enforcement.ErrNotFound) {
		t.Errorf("GetSubscription(unknown) = %v; want ErrNotFound", err)
	}
	f.hset(t, enforcement.SubscriptionName(id), "quota_hard", "1", "period_anchor", "soon")
	if _, err := f.store.GetSubscription(ctx, id); !errors.Is(err, enforcement.ErrCorruptRecord) || !strings.Contains(err.Error(), "field period_anchor:") {
		t.Errorf("GetSubscription(garbled anchor) = %v; want ErrCorruptRecord naming period_anchor", err)
	}
	bad := r
	bad.PeriodEnd = bad.PeriodStart
	if _, err := f.store.PutSubscription(ctx, bad); !errors.Is(err, enforcement.ErrInvalidRecord) {
		t.Errorf("PutSubscription(empty period) = %v; want ErrInvalidRecord", err)
	}
	bad = r
	bad.PeriodAnchor = time.Unix(-60, 0)
	if _, err := f.store.PutSubscription(ctx, bad); !errors.Is(err, enforcement.ErrInvalidRecord) {
		t.Errorf("PutSubscription(anchor before 1970) = %v; want ErrInvalidRecord", err)
	}
}

func BenchmarkGetKey(b *testing.B) {
	f := setup(b)
	r := f.key(b, 1)
	if _, err := f.store.PutKey(b.Context(), r); err != nil {
		b.Fatal(err)
	}
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.store.GetKey(b.Context(), r.Hash); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.store.GetKeyCached(b.Context(), r.Hash, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := f.store.GetKey(b.Context(), r.Hash); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// TestBlocks: a block written by one client reaches a cached reader
// through invalidation, expires at its end by itself, and can be lifted.
func TestBlocks(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	id := "sub_block_" + f.suffix
	t.Cleanup(func() { f.client.Do(context.Background(), f.client.B().Del().Key(enforcement.BlockName(id)).Build()) })
	if until, err := f.store.BlockedUntilCached(ctx, id, time.Minute); err != nil || !until.IsZero() {
		t.Fatalf("BlockedUntilCached before any block = %v, %v; want zero", until, err)
	}
	writer := enforcement.New(testenv.Redis(t))
	end := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	if err := writer.PutBlock(ctx, id, end); err != nil {
		t.Fatal(err)
	}
	testenv.Deadline(t, time.Second, func() error {
		until, err := f.store.BlockedUntilCached(ctx, id, time.Minute)
		if err != nil || !until.Equal(end) {
			return fmt.Errorf("BlockedUntilCached = %v, %v; want %s", until, err, end)
		}
		return nil
	})
	// The block ends by itself at its end: Redis expires the key.
	testenv.Deadline(t, 5*time.Second, func() error {
		until, err := f.store.BlockedUntilCached(ctx, id, time.Minute)
		if err != nil || !until.IsZero() {
			return fmt.Errorf("BlockedUntilCached after the end = %v, %v; want zero", until, err)
		}
		return nil
	})
	if err := writer.PutBlock(ctx, id, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	testenv.Deadline(t, time.Second, func() error {
		until, err := f.store.BlockedUntilCached(ctx, id, time.Minute)
		if err != nil || until.IsZero() {
			return fmt.Errorf("BlockedUntilCached = %v, %v; want blocked", until, err)
		}
		return nil
	})
	if err := writer.DeleteBlock(ctx, id); err != nil {
		t.Fatal(err)
	}
	testenv.Deadline(t, time.Second, func() error {
		until, err := f.store.BlockedUntilCached(ctx, id, time.Minute)
		if err != nil || !until.IsZero() {
			return fmt.Errorf("BlockedUntilCached after DeleteBlock = %v, %v; want zero", until, err)
		}
		return nil
	})
	f.client.Do(ctx, f.client.B().Set().Key(enforcement.BlockName(id)).Value("soon").Build())
	// The cached absence goes when Redis's invalidation arrives.
	testenv.Deadline(t, time.Second, func() error {
		if _, err := f.store.BlockedUntilCached(ctx, id, time.Minute); !errors.Is(err, enforcement.ErrCorruptRecord) {
			return fmt.Errorf("BlockedUntilCached of garbage = %v; want ErrCorruptRecord", err)
		}
		return nil
	})
}

func TestMatchRoute(t *testing.T) {
	for _, c := range []struct {
		pattern, path string
		want          bool
	}{
		{"/forecast/{city}", "/forecast/lisbon", true},
		{"/forecast/{city}", "/forecast/", false},
		{"/v1/*", "/v1/a/b", true},
		{"/v1/*", "/v1/../admin", false},
		{"not a pattern", "/x", false},
		{"/x", "x", false},
	} {
		if got := enforcement.MatchRoute(c.pattern, c.path); got != c.want {
			t.Errorf("MatchRoute(%q, %q) = %v; want %v", c.pattern, c.path, got, c.want)
		}
		// MatchRoutes agrees on valid patterns; an invalid one is the
		// caller's to refuse, except one without a leading /.
		if enforcement.ValidRoute(c.pattern) == nil || !strings.HasPrefix(c.pattern, "/") {
			if got := enforcement.MatchRoutes([]string{"/other", c.pattern}, c.path); got != c.want {
				t.Errorf("MatchRoutes(/other, %q; %q) = %v; want %v", c.pattern, c.path, got, c.want)
			}
		}
	}
	if enforcement.MatchRoutes(nil, "/x") {
		t.Error("MatchRoutes(none, /x) = true; want false")
	}
}

// TestPutSubscriptionRecomputesBlock: writing a subscription's record
// compares its quota with the period counter and sets or lifts the block
// in the same step, so a plan change, a credit or a new period takes
// effect at the gateway with the record.
func TestPutSubscriptionRecomputesBlock(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	id := "sub_reblock_" + f.suffix
	start := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	end := start.Add(30 * 24 * time.Hour)
	counter := enforcement.PeriodCounterName(id, start)
	t.Cleanup(func() {
		f.client.Do(context.Background(), f.client.B().Del().
			Key(enforcement.SubscriptionName(id), enforcement.BlockName(id), counter).Build())
	})
	f.hset(t, counter, "requests", "10")
	version := int64(0)
	put := func(quota int64, hard bool, ps, pe time.Time) {
		t.Helper()
		version++
		if _, err := f.store.PutSubscription(ctx, enforcement.SubscriptionRecord{
			ID: id, APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionActive,
			PeriodStart: ps, PeriodEnd: pe, QuotaRequests: quota, QuotaHard: hard, Version: version,
		}); err != nil {
			t.Fatal(err)
		}
	}
	block := func() (string, time.Duration) {
		t.Helper()
		v, err := f.client.Do(ctx, f.client.B().Get().Key(enforcement.BlockName(id)).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return "", 0
		}
		if err != nil {
			t.Fatal(err)
		}
		ttl, err := f.client.Do(ctx, f.client.B().Ttl().Key(enforcement.BlockName(id)).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return v, time.Duration(ttl) * time.Second
	}
	endStr := strconv.FormatInt(end.Unix(), 10)
	cases := []struct {
		name        string
		quota       int64
		hard        bool
		ps, pe      time.Time
		wantBlocked bool
	}{
		{"hard quota used up", 10, true, start, end, true},
		{"credit raises the quota", 15, true, start, end, false},
		{"plan change lowers it again", 8, true, start, end, true},
		{"soft quota never blocks", 8, false, start, end, false},
		{"hard again", 10, true, start, end, true},
		{"unlimited", -1, true, start, end, false},
		{"hard again before the period ends", 10, true, start, end, true},
		{"the new period's counter is empty", 10, true, end, end.Add(30 * 24 * time.Hour), false},
	}
	for _, c := range cases {
		put(c.quota, c.hard, c.ps, c.pe)
		v, ttl := block()
		switch {
		case c.wantBlocked && (v != endStr || ttl < time.Until(end)-time.Minute || ttl > time.Until(end)+time.Minute):
			t.Errorf("%s: block = %q with ttl %s; want %s expiring at the period's end (in %s)", c.name, v, ttl, endStr, time.Until(end).Round(time.Second))
		case !c.wantBlocked && v != "":
			t.Errorf("%s: block = %q; want none", c.name, v)
		}
	}
}

// TestPutSubscriptionAnnouncesLoweredQuota: a quota lowered below what was
// used announces the thresholds it is past, once per quota; a raised one
// announces nothing (the count will cross its thresholds).
func TestPutSubscriptionAnnouncesLoweredQuota(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	id := "sub_lowered_" + f.suffix
	start := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	end := start.Add(30 * 24 * time.Hour)
	counter, outbox := enforcement.PeriodCounterName(id, start), enforcement.QuotaOutboxName(id)
	t.Cleanup(func() {
		f.client.Do(context.Background(), f.client.B().Del().
			Key(enforcement.SubscriptionName(id), enforcement.BlockName(id), counter, outbox).Build())
	})
	f.hset(t, counter, "requests", "95", "crossed_80", "1000")
	version := int64(0)
	put := func(quota int64) []string {
		t.Helper()
		version++
		if _, err := f.store.PutSubscription(ctx, enforcement.SubscriptionRecord{
			ID: id, APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionActive,
			PeriodStart: start, PeriodEnd: end, QuotaRequests: quota, QuotaHard: true, Version: version,
		}); err != nil {
			t.Fatal(err)
		}
		lines, err := f.client.Do(ctx, f.client.B().Lpop().Key(outbox).Count(10).Build()).AsStrSlice()
		if err != nil && !rueidis.IsRedisNil(err) {
			t.Fatal(err)
		}
		return lines
	}
	ps, pe := strconv.FormatInt(start.Unix(), 10), strconv.FormatInt(end.Unix(), 10)
	if got := put(1000); len(got) != 0 {
		t.Errorf("a first quota of 1000 at 95 used announced %q; want nothing", got)
	}
	want := []string{"v1|" + ps + "|" + pe + "|80|100|95|1", "v1|" + ps + "|" + pe + "|90|100|95|1"}
	if got := put(100); !slices.Equal(got, want) {
		t.Errorf("lowered to 100 at 95 used announced %q; want %q", got, want)
	}
	if got := put(100); len(got) != 0 {
		t.Errorf("the same quota again announced %q; want nothing", got)
	}
	if got := put(150); len(got) != 0 {
		t.Errorf("raised to 150 announced %q; want nothing", got)
	}
	if got := put(90); len(got) != 3 {
		t.Errorf("lowered to 90 at 95 used announced %q; want 80, 90 and 100", got)
	}
}

// TestPutSubscriptionRollAnnouncesAndKeepsThePreviousStart: events after a
// period's end fill the next period's counter before the record is rolled,
// with no quota to compare with; the roll announces what they reached and
// keeps the previous period's start for late events.
func TestPutSubscriptionRollAnnouncesAndKeepsThePreviousStart(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	id := "sub_rolled_" + f.suffix
	start := time.Now().UTC().Truncate(time.Hour).Add(-30 * 24 * time.Hour)
	next := start.Add(30 * 24 * time.Hour)
	end := next.Add(30 * 24 * time.Hour)
	counter, outbox := enforcement.PeriodCounterName(id, next), enforcement.QuotaOutboxName(id)
	t.Cleanup(func() {
		f.client.Do(context.Background(), f.client.B().Del().
			Key(enforcement.SubscriptionName(id), enforcement.BlockName(id), counter, outbox).Build())
	})
	r := enforcement.SubscriptionRecord{
		ID: id, APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionActive,
		PeriodStart: start, PeriodEnd: next, QuotaRequests: 10, QuotaHard: true, Version: 1,
	}
	if _, err := f.store.PutSubscription(ctx, r); err != nil {
		t.Fatal(err)
	}
	f.hset(t, counter, "requests", "10")
	r.PeriodStart, r.PeriodEnd, r.Version = next, end, 2
	if _, err := f.store.PutSubscription(ctx, r); err != nil {
		t.Fatal(err)
	}
	lines, err := f.client.Do(ctx, f.client.B().Lrange().Key(outbox).Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil || len(lines) != 3 {
		t.Errorf("outbox after the roll = %q, %v; want the 80, 90 and 100%% the new period reached before it", lines, err)
	}
	prev, err := f.client.Do(ctx, f.client.B().Hget().Key(enforcement.SubscriptionName(id)).Field("prev_period_start").Build()).ToString()
	if err != nil || prev != strconv.FormatInt(start.Unix(), 10) {
		t.Errorf("prev_period_start = %q, %v; want %d", prev, err, start.Unix())
	}
	if n, err := f.client.Do(ctx, f.client.B().Exists().Key(enforcement.BlockName(id)).Build()).AsInt64(); err != nil || n != 1 {
		t.Errorf("block after rolling into a used-up period = %d, %v; want set", n, err)
	}
}
