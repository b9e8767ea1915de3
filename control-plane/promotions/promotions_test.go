package promotions_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/promotions"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/subscriptions/subscriptionstest"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/control-plane/webhooks/webhookstest"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// fixture is the promotions service over subscriptionstest's: a
// provider's API with a USD plan and a consumer's subscription to it,
// with a webhook endpoint of each organization taking every event.
type fixture struct {
	*subscriptionstest.Fixture
	svc *promotions.Service
}

func setup(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{Fixture: subscriptionstest.Setup(t)}
	hooks := webhookstest.New(t, f.Pool, f.Jobs)
	var err error
	f.svc, err = promotions.New(promotions.Config{Pool: f.Pool, Subscriptions: f.Svc, Publisher: hooks, Now: f.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f.Svc.SetPromotions(f.svc)
	for _, a := range []identity.Actor{f.Provider, f.Consumer} {
		if _, _, err := hooks.CreateEndpoint(f.Ctx, a, webhooks.EndpointInput{URL: "http://127.0.0.1:9/hook", EventTypes: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) create(in promotions.PromotionInput) promotions.Promotion {
	f.T.Helper()
	p, err := f.svc.Create(f.Ctx, f.Provider, in)
	if err != nil {
		f.T.Fatalf("Create(%s) = %v", in.Code, err)
	}
	return p
}

func percent(code string, pct int64) promotions.PromotionInput {
	return promotions.PromotionInput{Code: code, Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(pct), Stackable: true}
}

func ptr[T any](v T) *T { return &v }

// consumer subscribes a new consumer organization to plan.
func (f *fixture) consumer(name string, plan uuid.UUID) (identity.Actor, subscriptions.Subscription) {
	f.T.Helper()
	a := identity.Actor{Subject: name + "-user", Role: identity.RoleConsumer, OrgID: f.Org(name, name+"-user", name+"@example.test")}
	sub, err := f.Svc.Subscribe(f.Ctx, a, subscriptions.SubscribeInput{PlanID: plan})
	if err != nil {
		f.T.Fatal(err)
	}
	return a, sub
}

// count runs a count query.
func (f *fixture) count(query string, args ...any) int {
	f.T.Helper()
	var n int
	if err := f.Pool.QueryRow(f.Ctx, query, args...).Scan(&n); err != nil {
		f.T.Fatal(err)
	}
	return n
}

// wantField fails unless err is a validation error of field whose detail
// holds want.
func wantField(t *testing.T, what string, err error, field, want string) {
	t.Helper()
	var v *validation.Error
	if !errors.As(err, &v) || len(v.Fields) != 1 || v.Fields[0].Field != field || !strings.Contains(v.Fields[0].Detail, want) {
		t.Errorf("%s = %v; want a validation error of %s saying %q", what, err, field, want)
	}
}

// TestCreate: a provider's promotion is created, audited and announced;
// codes are unique per provider whatever their case; consumers may not
// create, other organizations do not see it, and another organization's
// plans are refused without saying they exist.
func TestCreate(t *testing.T) {
	f := setup(t)
	p := f.create(percent("Launch10", 10))
	if p.OrganizationID != f.Provider.OrgID || !p.Enabled || p.Duration != promotions.DurationOnce || len(p.PlanIDs) != 0 || !p.ValidFrom.Equal(f.Clock.Now()) {
		t.Errorf("Create = %+v; want the provider's, enabled, once, every plan, valid from now", p)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'promotion.create' AND target_id = $1`, p.ID.String()); n != 1 {
		t.Errorf("audit entries = %d; want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM webhook_deliveries WHERE event_type = 'promotion.created' AND payload::text LIKE '%' || $1 || '%'`, p.ID.String()); n != 1 {
		t.Errorf("promotion.created deliveries = %d; want 1", n)
	}
	if _, err := f.svc.Create(f.Ctx, f.Provider, percent("LAUNCH10", 5)); !errors.Is(err, promotions.ErrCodeTaken) {
		t.Errorf("Create(LAUNCH10 again) = %v; want ErrCodeTaken", err)
	}
	if _, err := f.svc.Create(f.Ctx, f.Consumer, percent("MINE", 5)); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("Create by a consumer = %v; want ErrForbidden", err)
	}
	if _, err := f.svc.Get(f.Ctx, f.Consumer, p.ID); !errors.Is(err, promotions.ErrNotFound) {
		t.Errorf("Get by another organization = %v; want ErrNotFound", err)
	}
	other := identity.Actor{Subject: "other-user", Role: identity.RoleProvider, OrgID: f.Org("other", "other-user", "other@example.test")}
	in := percent("THEIRS", 5)
	in.PlanIDs = []uuid.UUID{f.Plan.ID}
	_, err := f.svc.Create(f.Ctx, other, in)
	wantField(t, "Create with another organization's plan", err, "plan_ids[0]", "not a plan of your organization's APIs")
	in.PlanIDs = []uuid.UUID{uuid.New()}
	_, err = f.svc.Create(f.Ctx, other, in)
	wantField(t, "Create with an unknown plan", err, "plan_ids[0]", "not a plan of your organization's APIs")
	list, _, err := f.svc.List(f.Ctx, other, "", 0)
	if err != nil || len(list) != 0 {
		t.Errorf("List by another provider = %v, %v; want none", list, err)
	}
}

// TestCreateValidates: every refusal names its field.
func TestCreateValidates(t *testing.T) {
	f := setup(t)
	now := f.Clock.Now()
	for _, tc := range []struct {
		field string
		in    promotions.PromotionInput
	}{
		{"code", percent("x", 5)},
		{"value", percent("BIG", 101)},
		{"value", promotions.PromotionInput{Code: "ZERO", Kind: metering.PromotionPercentOff, Value: decimal.Zero}},
		{"value", promotions.PromotionInput{Code: "HUGE", Kind: metering.PromotionPercentOff, Value: decimal.New(1, 100)}},
		{"value", promotions.PromotionInput{Code: "LONG", Kind: metering.PromotionTrialExtension, Value: decimal.NewFromInt(400)}},
		{"meter", promotions.PromotionInput{Code: "SLUG", Kind: metering.PromotionFreeUnits, Value: decimal.NewFromInt(1), Meter: ptr("Not A Slug")}},
		{"kind", promotions.PromotionInput{Code: "KIND", Kind: "free_lunch", Value: decimal.NewFromInt(1)}},
		{"currency", promotions.PromotionInput{Code: "AMT", Kind: metering.PromotionAmountOff, Value: decimal.NewFromInt(1)}},
		{"value", promotions.PromotionInput{Code: "AMT", Kind: metering.PromotionAmountOff, Value: decimal.RequireFromString("1.005"), Currency: ptr("USD")}},
		{"value", promotions.PromotionInput{Code: "YEN", Kind: metering.PromotionAmountOff, Value: decimal.RequireFromString("1.5"), Currency: ptr("JPY")}},
		{"currency", promotions.PromotionInput{Code: "PCT", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(1), Currency: ptr("USD")}},
		{"meter", promotions.PromotionInput{Code: "FREE", Kind: metering.PromotionFreeUnits, Value: decimal.NewFromInt(1)}},
		{"value", promotions.PromotionInput{Code: "TRIAL", Kind: metering.PromotionTrialExtension, Value: decimal.RequireFromString("1.5")}},
		{"duration_periods", promotions.PromotionInput{Code: "REP", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(1), Duration: "repeating"}},
		{"duration", promotions.PromotionInput{Code: "DUR", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(1), Duration: "sometimes"}},
		{"valid_until", promotions.PromotionInput{Code: "WIN", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(1), ValidUntil: &now}},
		{"max_redemptions", promotions.PromotionInput{Code: "LIM", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(1), MaxRedemptions: ptr(0)}},
		{"priority", promotions.PromotionInput{Code: "PRI", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(1), Priority: 5000}},
	} {
		_, err := f.svc.Create(f.Ctx, f.Provider, tc.in)
		var v *validation.Error
		if !errors.As(err, &v) || v.Fields[0].Field != tc.field {
			t.Errorf("Create(%+v) = %v; want a validation error of %s first", tc.in, err, tc.field)
		}
	}
}

// TestRedeemConcurrentlyHoldsTheTotalLimit: 50 subscriptions redeem a code
// of 10 redemptions at once; exactly 10 succeed.
func TestRedeemConcurrentlyHoldsTheTotalLimit(t *testing.T) {
	f := setup(t)
	in := percent("TEN", 10)
	in.MaxRedemptions = ptr(10)
	p := f.create(in)
	type redeemer struct {
		actor identity.Actor
		sub   uuid.UUID
	}
	var rs []redeemer
	for i := range 50 {
		a, sub := f.consumer(fmt.Sprintf("c%d", i), f.Plan.ID)
		rs = append(rs, redeemer{a, sub.ID})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(rs))
	for i, r := range rs {
		wg.Go(func() {
			_, errs[i] = f.svc.Redeem(f.Ctx, r.actor, r.sub, promotions.RedeemInput{Code: "ten"})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, promotions.ErrLimitReached):
			t.Errorf("Redeem = %v; want nil or ErrLimitReached", err)
		}
	}
	got, err := f.svc.Get(f.Ctx, f.Provider, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	rows := f.count(`SELECT count(*) FROM promotion_redemptions WHERE promotion_id = $1`, p.ID)
	if ok != 10 || got.Redemptions != 10 || rows != 10 {
		t.Errorf("succeeded %d, redemptions %d, rows %d; want 10 each", ok, got.Redemptions, rows)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'promotion.redeem'`); n != 10 {
		t.Errorf("promotion.redeem audit entries = %d; want 10", n)
	}
	// Each redemption goes to the provider's endpoint and the customer's
	// (only the fixture's consumer has one).
	if n := f.count(`SELECT count(*) FROM webhook_deliveries WHERE event_type = 'promotion.redeemed'`); n != 10 {
		t.Errorf("promotion.redeemed deliveries = %d; want 10 (the provider's)", n)
	}
}

// TestRedeemConcurrentlyHoldsTheCustomerLimit: one customer subscribed to
// 8 of the provider's APIs redeems a code of 2 per customer on all of them
// at once; exactly 2 succeed.
func TestRedeemConcurrentlyHoldsTheCustomerLimit(t *testing.T) {
	f := setup(t)
	in := percent("TWICE", 10)
	in.MaxPerCustomer = ptr(2)
	p := f.create(in)
	customer := identity.Actor{Subject: "multi-user", Role: identity.RoleConsumer, OrgID: f.Org("multi", "multi-user", "multi@example.test")}
	var subs []uuid.UUID
	for i := range 8 {
		var api uuid.UUID
		if err := f.Pool.QueryRow(f.Ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
			VALUES ($1, 'API', $2, 'http://127.0.0.1:1', '1', 'active', 'provider-user') RETURNING id`,
			f.Provider.OrgID, fmt.Sprintf("api-%d", i)).Scan(&api); err != nil {
			t.Fatal(err)
		}
		plan, err := f.Svc.CreatePlan(f.Ctx, f.Provider, api, subscriptions.PlanInput{Name: "P", Slug: "p", Terms: subscriptions.Terms{Currency: "USD"}})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := f.Svc.Subscribe(f.Ctx, customer, subscriptions.SubscribeInput{PlanID: plan.ID})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub.ID)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(subs))
	for i, sub := range subs {
		wg.Go(func() { _, errs[i] = f.svc.Redeem(f.Ctx, customer, sub, promotions.RedeemInput{Code: "TWICE"}) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, promotions.ErrCustomerLimit):
			t.Errorf("Redeem = %v; want nil or ErrCustomerLimit", err)
		}
	}
	got, _ := f.svc.Get(f.Ctx, f.Provider, p.ID)
	if ok != 2 || got.Redemptions != 2 {
		t.Errorf("succeeded %d, redemptions %d; want 2", ok, got.Redemptions)
	}
	// Another customer still may.
	if _, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: "TWICE"}); err != nil {
		t.Errorf("Redeem by another customer = %v; want nil", err)
	}
}

// TestRedeemRefuses: each reason a code cannot apply is a validation
// error naming it; stacking and a second redemption are conflicts; only
// the subscriber redeems.
func TestRedeemRefuses(t *testing.T) {
	f := setup(t)
	now := f.Clock.Now()
	later := promotions.PromotionInput{Code: "LATER", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(5), Stackable: true, ValidFrom: ptr(now.Add(time.Hour))}
	f.create(later)
	short := percent("SHORT", 5)
	short.ValidUntil = ptr(now.Add(time.Minute))
	f.create(short)
	off := percent("OFF", 5)
	off.Enabled = ptr(false)
	f.create(off)
	f.create(promotions.PromotionInput{Code: "EURO", Kind: metering.PromotionAmountOff, Value: decimal.NewFromInt(5), Currency: ptr("EUR"), Stackable: true})
	other, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{Name: "Other", Slug: "other", Terms: subscriptions.Terms{Currency: "USD"}})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := percent("ELSEWHERE", 5)
	elsewhere.PlanIDs = []uuid.UUID{other.ID}
	f.create(elsewhere)
	f.create(promotions.PromotionInput{Code: "TRIAL", Kind: metering.PromotionTrialExtension, Value: decimal.NewFromInt(7), Stackable: true})
	f.Clock.Advance(2 * time.Minute)
	redeem := func(code string) error {
		_, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: code})
		return err
	}
	for code, want := range map[string]string{
		"NOPE": "is unknown", "x": "is unknown", "LATER": "not valid yet", "SHORT": "has expired", "OFF": "is disabled",
		"EURO": "is in EUR, the plan in USD", "ELSEWHERE": "does not apply to this plan", "TRIAL": "extends a trial",
	} {
		wantField(t, "Redeem("+code+")", redeem(code), "code", want)
	}
	// A code of another provider is unknown here.
	rival := identity.Actor{Subject: "rival-user", Role: identity.RoleProvider, OrgID: f.Org("rival", "rival-user", "rival@example.test")}
	if _, err := f.svc.Create(f.Ctx, rival, percent("RIVAL", 50)); err != nil {
		t.Fatal(err)
	}
	wantField(t, "Redeem(another provider's code)", redeem("RIVAL"), "code", "is unknown")

	f.create(percent("STACK", 5))
	f.create(promotions.PromotionInput{Code: "SOLO", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(20)})
	if err := redeem("STACK"); err != nil {
		t.Fatal(err)
	}
	if err := redeem("stack"); !errors.Is(err, promotions.ErrAlreadyRedeemed) {
		t.Errorf("Redeem(stack again) = %v; want ErrAlreadyRedeemed", err)
	}
	if err := redeem("SOLO"); !errors.Is(err, promotions.ErrNotStackable) {
		t.Errorf("Redeem(exclusive next to a stackable) = %v; want ErrNotStackable", err)
	}
	// The other way round, on a fresh subscription.
	c2, sub2 := f.consumer("second", f.Plan.ID)
	if _, err := f.svc.Redeem(f.Ctx, c2, sub2.ID, promotions.RedeemInput{Code: "SOLO"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Redeem(f.Ctx, c2, sub2.ID, promotions.RedeemInput{Code: "STACK"}); !errors.Is(err, promotions.ErrNotStackable) {
		t.Errorf("Redeem(stackable next to an exclusive) = %v; want ErrNotStackable", err)
	}
	// Only the subscriber's organization redeems: another one does not see
	// the subscription, the provider sees it but may not.
	if _, err := f.svc.Redeem(f.Ctx, c2, f.Sub.ID, promotions.RedeemInput{Code: "STACK"}); !errors.Is(err, subscriptions.ErrSubscriptionNotFound) {
		t.Errorf("Redeem on another organization's subscription = %v; want ErrSubscriptionNotFound", err)
	}
	if _, err := f.svc.Redeem(f.Ctx, f.Provider, f.Sub.ID, promotions.RedeemInput{Code: "STACK"}); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("Redeem by the provider = %v; want ErrForbidden", err)
	}
	rs, err := f.svc.Redemptions(f.Ctx, f.Provider, f.Sub.ID)
	if err != nil || len(rs) != 1 || rs[0].Code != "STACK" || !rs[0].Active || rs[0].PeriodsApplied != 0 {
		t.Errorf("Redemptions = %+v, %v; want STACK alone, active", rs, err)
	}
	if _, err := f.svc.Redemptions(f.Ctx, c2, f.Sub.ID); !errors.Is(err, subscriptions.ErrSubscriptionNotFound) {
		t.Errorf("Redemptions of another organization's subscription = %v; want ErrSubscriptionNotFound", err)
	}
}

// TestSubscribeWithCodes: codes given at subscribe time are redeemed in
// the subscription's transaction; a trial extension starts a trial on a
// plan without one; a refused code refuses the subscription.
func TestSubscribeWithCodes(t *testing.T) {
	f := setup(t)
	f.create(promotions.PromotionInput{Code: "TRIAL14", Kind: metering.PromotionTrialExtension, Value: decimal.NewFromInt(14), Stackable: true})
	f.create(percent("WELCOME", 20))
	a := identity.Actor{Subject: "new-user", Role: identity.RoleConsumer, OrgID: f.Org("newco", "new-user", "new@example.test")}
	_, err := f.Svc.Subscribe(f.Ctx, a, subscriptions.SubscribeInput{PlanID: f.Plan.ID, PromotionCodes: []string{"WELCOME", "BOGUS"}})
	wantField(t, "Subscribe with a bogus code", err, "promotion_codes[1]", `"BOGUS" is unknown`)
	if n := f.count(`SELECT count(*) FROM subscriptions WHERE organization_id = $1`, a.OrgID); n != 0 {
		t.Errorf("subscriptions after a refused code = %d; want 0", n)
	}
	if got, _ := f.svc.Get(f.Ctx, f.Provider, mustCode(t, f, "WELCOME")); got.Redemptions != 0 {
		t.Errorf("WELCOME redemptions after a refused subscription = %d; want 0", got.Redemptions)
	}
	_, err = f.Svc.Subscribe(f.Ctx, a, subscriptions.SubscribeInput{PlanID: f.Plan.ID, PromotionCodes: []string{"welcome", "WELCOME"}})
	wantField(t, "Subscribe with a code twice", err, "promotion_codes[1]", "twice")

	sub, err := f.Svc.Subscribe(f.Ctx, a, subscriptions.SubscribeInput{PlanID: f.Plan.ID, PromotionCodes: []string{"WELCOME", "trial14"}})
	if err != nil {
		t.Fatal(err)
	}
	wantEnd := f.Clock.Now().AddDate(0, 0, 14)
	if sub.Status != subscriptions.StatusTrialing || sub.TrialEndsAt == nil || !sub.TrialEndsAt.Equal(wantEnd) {
		t.Errorf("Subscribe with TRIAL14 = %s until %v; want trialing until %v", sub.Status, sub.TrialEndsAt, wantEnd)
	}
	if n := f.count(`SELECT count(*) FROM subscription_history WHERE subscription_id = $1 AND status = 'trialing'`, sub.ID); n != 1 {
		t.Errorf("trialing history rows = %d; want 1", n)
	}
	rs, err := f.svc.Redemptions(f.Ctx, a, sub.ID)
	if err != nil || len(rs) != 2 || rs[0].Active == rs[1].Active {
		t.Errorf("Redemptions = %+v, %v; want WELCOME active and TRIAL14 done", rs, err)
	}
}

func mustCode(t *testing.T, f *fixture, code string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := f.Pool.QueryRow(f.Ctx, `SELECT id FROM promotions WHERE code = $1`, code).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestTrialExtension: redeemed later, a trial extension lengthens a
// trialing subscription's trial.
func TestTrialExtension(t *testing.T) {
	f := setup(t)
	plan, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{Name: "Trial", Slug: "trial", Terms: subscriptions.Terms{Currency: "USD", TrialDays: 7}})
	if err != nil {
		t.Fatal(err)
	}
	a, sub := f.consumer("trialer", plan.ID)
	f.create(promotions.PromotionInput{Code: "MORE", Kind: metering.PromotionTrialExtension, Value: decimal.NewFromInt(10), Stackable: true})
	if _, err := f.svc.Redeem(f.Ctx, a, sub.ID, promotions.RedeemInput{Code: "MORE"}); err != nil {
		t.Fatal(err)
	}
	got, err := f.Svc.GetSubscription(f.Ctx, a, sub.ID)
	if err != nil || got.TrialEndsAt == nil || !got.TrialEndsAt.Equal(sub.TrialEndsAt.AddDate(0, 0, 10)) {
		t.Errorf("trial ends %v, %v; want %v", got.TrialEndsAt, err, sub.TrialEndsAt.AddDate(0, 0, 10))
	}
}

// TestUpdate: once redeemed, limits only rise; the window and the state
// may change; other organizations do not find it.
func TestUpdate(t *testing.T) {
	f := setup(t)
	in := percent("CAPPED", 10)
	in.MaxRedemptions = ptr(5)
	p := f.create(in)
	if _, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: "CAPPED"}); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Update(f.Ctx, f.Provider, p.ID, promotions.PromotionPatch{MaxRedemptions: promotions.Optional[int]{Set: true, Value: ptr(4)}})
	wantField(t, "Update lowering the limit", err, "max_redemptions", "may only rise")
	_, err = f.svc.Update(f.Ctx, f.Provider, p.ID, promotions.PromotionPatch{MaxPerCustomer: promotions.Optional[int]{Set: true, Value: ptr(1)}})
	wantField(t, "Update limiting an unlimited customer count", err, "max_per_customer", "may only rise")
	end := f.Clock.Now().Add(time.Hour)
	got, err := f.svc.Update(f.Ctx, f.Provider, p.ID, promotions.PromotionPatch{
		MaxRedemptions: promotions.Optional[int]{Set: true}, ValidUntil: promotions.Optional[time.Time]{Set: true, Value: &end},
		Enabled: ptr(false), Description: ptr("spring"),
	})
	if err != nil || got.MaxRedemptions != nil || got.ValidUntil == nil || !got.ValidUntil.Equal(end) || got.Enabled || got.Description != "spring" {
		t.Errorf("Update = %+v, %v; want unlimited, until %v, disabled, described", got, err, end)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'promotion.update' AND target_id = $1`, p.ID.String()); n != 1 {
		t.Errorf("promotion.update audit entries = %d; want 1", n)
	}
	_, err = f.svc.Update(f.Ctx, f.Provider, p.ID, promotions.PromotionPatch{PlanIDs: &[]uuid.UUID{}})
	wantField(t, "Update with no plans", err, "plan_ids", "at least one plan")
	if got, err := f.svc.Update(f.Ctx, f.Provider, p.ID, promotions.PromotionPatch{PlanIDs: nil}); err != nil || len(got.PlanIDs) != 0 {
		t.Errorf("Update leaving plan_ids out = %+v, %v; want the plans kept", got, err)
	}
	if _, err := f.svc.Update(f.Ctx, f.Consumer, p.ID, promotions.PromotionPatch{Enabled: ptr(true)}); !errors.Is(err, promotions.ErrNotFound) {
		t.Errorf("Update by another organization = %v; want ErrNotFound", err)
	}
}

// TestResolve: codes for a quote, checked and not redeemed.
func TestResolve(t *testing.T) {
	f := setup(t)
	f.create(percent("TEN", 10))
	f.create(promotions.PromotionInput{Code: "FREECALLS", Kind: metering.PromotionFreeUnits, Value: decimal.NewFromInt(1000), Meter: ptr("calls"), Stackable: true})
	got, err := f.svc.Resolve(f.Ctx, f.Plan.ID, []string{"ten", "FreeCalls"}, f.Clock.Now())
	if err != nil || len(got) != 2 || got[0].Code != "TEN" || got[1].Kind != metering.PromotionFreeUnits || got[1].Meter != "calls" {
		t.Errorf("Resolve = %+v, %v; want TEN and FREECALLS", got, err)
	}
	_, err = f.svc.Resolve(f.Ctx, f.Plan.ID, []string{"TEN", "NOPE"}, f.Clock.Now())
	wantField(t, "Resolve(NOPE)", err, "promotion_codes[1]", `"NOPE" cannot be applied to this plan`)
	_, err = f.svc.Resolve(f.Ctx, f.Plan.ID, []string{"TEN", "ten"}, f.Clock.Now())
	wantField(t, "Resolve(twice)", err, "promotion_codes[1]", "twice")
	_, err = f.svc.Resolve(f.Ctx, f.Plan.ID, strings.Split("A,B,C,D,E,F,G,H,I,J,K", ","), f.Clock.Now())
	wantField(t, "Resolve(11 codes)", err, "promotion_codes", "at most 10")
	if n := f.count(`SELECT count(*) FROM promotion_redemptions`); n != 0 {
		t.Errorf("redemptions after Resolve = %d; want 0", n)
	}
}

// TestResolveSaysOneThing: a quote refuses an unknown, disabled, not yet
// valid, other plan's, used up or other currency's code with the same
// detail, so that quoting does not tell which codes exist; Redeem, by the
// subscriber, still says why.
func TestResolveSaysOneThing(t *testing.T) {
	f := setup(t)
	now := f.Clock.Now()
	off := percent("OFF", 10)
	off.Enabled = ptr(false)
	f.create(off)
	later := percent("LATER", 10)
	later.ValidFrom = ptr(now.Add(time.Hour))
	f.create(later)
	plan, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{Name: "Other", Slug: "other", Terms: subscriptions.Terms{Currency: "USD"}})
	if err != nil {
		t.Fatal(err)
	}
	other := percent("OTHER", 10)
	other.PlanIDs = []uuid.UUID{plan.ID}
	f.create(other)
	one := percent("ONE", 10)
	one.MaxRedemptions = ptr(1)
	f.create(one)
	if _, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: "ONE"}); err != nil {
		t.Fatal(err)
	}
	f.create(promotions.PromotionInput{Code: "EUROS", Kind: metering.PromotionAmountOff, Value: decimal.NewFromInt(1), Currency: ptr("EUR"), Stackable: true})
	terms := metering.PlanTerms{Currency: metering.Currency{Code: "USD", Exponent: 2}, BaseFee: decimal.NewFromInt(10)}
	for _, code := range []string{"NOPE", "OFF", "LATER", "OTHER", "ONE", "EUROS"} {
		_, err := f.svc.QuoteWithCodes(f.Ctx, f.Plan.ID, terms, nil, []string{code})
		var v *validation.Error
		want := fmt.Sprintf("promotion code %q cannot be applied to this plan", code)
		if !errors.As(err, &v) || len(v.Fields) != 1 || v.Fields[0].Field != "promotion_codes[0]" || v.Fields[0].Detail != want {
			t.Errorf("QuoteWithCodes(%s) = %v; want promotion_codes[0]: %s", code, err, want)
		}
	}
	_, err = f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: "OFF"})
	wantField(t, "Redeem(OFF)", err, "code", "is disabled")
}

// TestResolveWindow: a quote at a time outside a code's window refuses
// it, naming it; inside, the code applies.
func TestResolveWindow(t *testing.T) {
	f := setup(t)
	now := f.Clock.Now()
	in := percent("WEEK", 10)
	in.ValidFrom, in.ValidUntil = ptr(now.Add(time.Hour)), ptr(now.Add(8*24*time.Hour))
	f.create(in)
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{now, "cannot be applied to this plan"},
		{now.Add(time.Hour - time.Second), "cannot be applied to this plan"},
		{now.Add(time.Hour), ""},
		{now.Add(8*24*time.Hour - time.Second), ""},
		{now.Add(8 * 24 * time.Hour), "cannot be applied to this plan"},
	} {
		got, err := f.svc.Resolve(f.Ctx, f.Plan.ID, []string{"week"}, tc.at)
		if tc.want == "" {
			if err != nil || len(got) != 1 {
				t.Errorf("Resolve at %v = %v, %v; want WEEK", tc.at, got, err)
			}
			continue
		}
		wantField(t, "Resolve at "+tc.at.String(), err, "promotion_codes[0]", tc.want)
	}
}

// TestRedemptionActive: a redemption stays active for its duration, and
// only an active one keeps an exclusive promotion out.
func TestRedemptionActive(t *testing.T) {
	f := setup(t)
	f.create(promotions.PromotionInput{Code: "ONCE", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(5), Stackable: true})
	f.create(promotions.PromotionInput{Code: "THRICE", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(5), Stackable: true,
		Duration: promotions.DurationRepeating, DurationPeriods: ptr(3)})
	f.create(promotions.PromotionInput{Code: "ALWAYS", Kind: metering.PromotionAmountOff, Value: decimal.NewFromInt(1), Currency: ptr("USD"), Stackable: true,
		Duration: promotions.DurationForever})
	f.create(promotions.PromotionInput{Code: "SOLO", Kind: metering.PromotionPercentOff, Value: decimal.NewFromInt(50)})
	for _, code := range []string{"ONCE", "THRICE", "ALWAYS"} {
		if _, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: code}); err != nil {
			t.Fatal(err)
		}
	}
	applied := func(periods int) map[string]bool {
		t.Helper()
		if _, err := f.Pool.Exec(f.Ctx, `UPDATE promotion_redemptions SET periods_applied = $2 WHERE subscription_id = $1`, f.Sub.ID, periods); err != nil {
			t.Fatal(err)
		}
		rs, err := f.svc.Redemptions(f.Ctx, f.Consumer, f.Sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, r := range rs {
			out[r.Code] = r.Active
		}
		return out
	}
	for _, tc := range []struct {
		periods int
		want    map[string]bool
	}{
		{0, map[string]bool{"ONCE": true, "THRICE": true, "ALWAYS": true}},
		{1, map[string]bool{"ONCE": false, "THRICE": true, "ALWAYS": true}},
		{3, map[string]bool{"ONCE": false, "THRICE": false, "ALWAYS": true}},
	} {
		if got := applied(tc.periods); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("active after %d periods = %v; want %v", tc.periods, got, tc.want)
		}
	}
	if _, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: "SOLO"}); !errors.Is(err, promotions.ErrNotStackable) {
		t.Errorf("Redeem(exclusive next to a forever promotion) = %v; want ErrNotStackable", err)
	}
	if _, err := f.Pool.Exec(f.Ctx, `DELETE FROM promotion_redemptions r USING promotions p
		WHERE p.id = r.promotion_id AND p.code = 'ALWAYS'`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: "SOLO"}); err != nil {
		t.Errorf("Redeem(exclusive once the others ran out) = %v; want nil", err)
	}
}

// TestChangePlanEndsInapplicablePromotions: a plan change goes through
// even when an active redemption would not apply on the new plan (a
// promotion of the old plan only, or an amount in another currency): it
// ends those, in its transaction, audited and announced, and keeps the
// others running.
func TestChangePlanEndsInapplicablePromotions(t *testing.T) {
	f := setup(t)
	newPlan := func(slug, currency string) uuid.UUID {
		p, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{Name: slug, Slug: slug, Terms: subscriptions.Terms{Currency: currency}})
		if err != nil {
			t.Fatal(err)
		}
		return p.ID
	}
	gold, euros := newPlan("gold", "USD"), newPlan("euros", "EUR")
	only := percent("ONLY", 10)
	only.PlanIDs = []uuid.UUID{f.Plan.ID}
	only.Duration = promotions.DurationForever
	f.create(only)
	every := percent("EVERY", 5)
	every.Duration = promotions.DurationForever
	f.create(every)
	a, sub := f.consumer("changer", f.Plan.ID)
	for _, code := range []string{"ONLY", "EVERY"} {
		if _, err := f.svc.Redeem(f.Ctx, a, sub.ID, promotions.RedeemInput{Code: code}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Svc.ChangePlan(f.Ctx, a, sub.ID, subscriptions.ChangePlanInput{PlanID: gold}); err != nil {
		t.Fatalf("ChangePlan to a plan ONLY is not for = %v; want it changed", err)
	}
	if got := redemptionStates(t, f, a, sub.ID); got != "EVERY active, ONLY ended" {
		t.Errorf("redemptions after the change = %s; want EVERY active, ONLY ended", got)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'promotion.end' AND after->>'reason' = 'plan_change'`); n != 1 {
		t.Errorf("promotion.end audit entries = %d; want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM webhook_deliveries WHERE event_type = 'promotion.ended'`); n != 1 {
		t.Errorf("promotion.ended deliveries = %d; want 1 (the provider's)", n)
	}

	f.create(promotions.PromotionInput{Code: "DOLLAR", Kind: metering.PromotionAmountOff, Value: decimal.NewFromInt(1), Currency: ptr("USD"), Stackable: true,
		Duration: promotions.DurationForever})
	b, sub2 := f.consumer("payer", f.Plan.ID)
	if _, err := f.svc.Redeem(f.Ctx, b, sub2.ID, promotions.RedeemInput{Code: "DOLLAR"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Svc.ChangePlan(f.Ctx, b, sub2.ID, subscriptions.ChangePlanInput{PlanID: gold}); err != nil {
		t.Fatal(err)
	}
	if got := redemptionStates(t, f, b, sub2.ID); got != "DOLLAR active" {
		t.Errorf("a USD amount after a change to a USD plan = %s; want DOLLAR active", got)
	}
	if _, err := f.Svc.ChangePlan(f.Ctx, b, sub2.ID, subscriptions.ChangePlanInput{PlanID: euros}); err != nil {
		t.Fatalf("ChangePlan of a USD amount to a EUR plan = %v; want it changed", err)
	}
	if got := redemptionStates(t, f, b, sub2.ID); got != "DOLLAR ended" {
		t.Errorf("a USD amount after a change to a EUR plan = %s; want DOLLAR ended", got)
	}
}

// redemptionStates renders a subscription's redemptions as "CODE active"
// or "CODE ended" (ended_at set, not active), by code.
func redemptionStates(t *testing.T, f *fixture, a identity.Actor, sub uuid.UUID) string {
	t.Helper()
	rs, err := f.svc.Redemptions(f.Ctx, a, sub)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		switch {
		case r.EndedAt != nil && !r.Active:
			out = append(out, r.Code+" ended")
		case r.EndedAt == nil && r.Active:
			out = append(out, r.Code+" active")
		default:
			out = append(out, fmt.Sprintf("%s active %t ended_at %v", r.Code, r.Active, r.EndedAt))
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// TestEnd: the subscriber ends a redemption: it is no longer active, an
// exclusive promotion may then be redeemed next to it, and ending it again
// changes nothing; the API's provider may not end it, and a promotion not
// redeemed on the subscription is not found.
func TestEnd(t *testing.T) {
	f := setup(t)
	always := percent("ALWAYS", 10)
	always.Duration = promotions.DurationForever
	p := f.create(always)
	solo := percent("SOLO", 20)
	solo.Stackable = false
	f.create(solo)
	if _, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: "ALWAYS"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.End(f.Ctx, f.Provider, f.Sub.ID, p.ID); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("End by the API's provider = %v; want ErrForbidden", err)
	}
	if _, err := f.svc.End(f.Ctx, f.Consumer, f.Sub.ID, uuid.New()); !errors.Is(err, promotions.ErrNotFound) {
		t.Errorf("End of a promotion not redeemed = %v; want ErrNotFound", err)
	}
	f.Clock.Advance(time.Hour)
	r, err := f.svc.End(f.Ctx, f.Consumer, f.Sub.ID, p.ID)
	if err != nil || r.Active || r.EndedAt == nil || !r.EndedAt.Equal(f.Clock.Now().UTC()) {
		t.Fatalf("End = %+v, %v; want it ended now", r, err)
	}
	f.Clock.Advance(time.Hour)
	if again, err := f.svc.End(f.Ctx, f.Consumer, f.Sub.ID, p.ID); err != nil || again.EndedAt == nil || !again.EndedAt.Equal(*r.EndedAt) {
		t.Errorf("End again = %+v, %v; want it as it was ended", again, err)
	}
	if got := redemptionStates(t, f, f.Consumer, f.Sub.ID); got != "ALWAYS ended" {
		t.Errorf("redemptions after End = %s; want ALWAYS ended", got)
	}
	if _, err := f.svc.Redeem(f.Ctx, f.Consumer, f.Sub.ID, promotions.RedeemInput{Code: "SOLO"}); err != nil {
		t.Errorf("Redeem(exclusive next to an ended promotion) = %v; want nil", err)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'promotion.end' AND after->>'reason' = 'subscriber'`); n != 1 {
		t.Errorf("promotion.end audit entries = %d; want 1", n)
	}
	// Announced to the provider's endpoint and the subscriber's.
	if n := f.count(`SELECT count(*) FROM webhook_deliveries WHERE event_type = 'promotion.ended'`); n != 2 {
		t.Errorf("promotion.ended deliveries = %d; want 2", n)
	}
}
