package demo

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
)

// pricing walks a priced plan: the provider's hybrid plan comes from a
// YAML file dropped into the plan directory veil dev watches, a promotion
// code discounts it, a consumer subscribes with the code and calls, the
// quote prices the usage the processors metered so far, and the period,
// once ended, is invoiced.
func (w *walk) pricing(ctx context.Context, api demoAPI) error {
	if w.cfg.PricingDir == "" {
		w.step("no plan directory (VEIL_PRICING_DIR): the priced plan from a YAML file is left out")
		return nil
	}
	now := time.Now()
	admin, err := w.mint(identity.Principal{Subject: "ops", Org: "veil-platform", Role: identity.RoleAdmin, Name: "Platform operator"}, now)
	if err != nil {
		return err
	}
	s := &consumerSide{api: api, url: w.cfg.GatewayURL + "/" + api.slug + "/forecast?city=Porto"}
	if s.provider, err = w.mint(identity.Principal{Subject: "dana", Org: "demo-weather", Role: identity.RoleProvider, Name: "Dana (provider)"}, now); err != nil {
		return err
	}
	kim := fmt.Sprintf("kim-%d", now.UnixNano())
	if s.consumer, err = w.mint(identity.Principal{Subject: kim, Org: "demo-hotels", Role: identity.RoleConsumer, Name: "Kim (consumer)"}, now); err != nil {
		return err
	}
	planID, err := w.planFromFile(ctx, api, admin)
	if err != nil {
		return err
	}
	code, err := w.promotion(ctx, s, planID, now)
	if err != nil {
		return err
	}
	w.step("a third organization (demo-hotels) subscribes with the code: POST /v1/subscriptions {\"promotion_codes\": [%q]}", code)
	subscribed, err := w.cp.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: planID, PromotionCodes: &[]string{code}}, client.Bearer(s.consumer))
	if err := client.Check(subscribed, err); err != nil {
		return fmt.Errorf("POST /v1/subscriptions: %w", err)
	}
	s.subID = subscribed.JSON201.Id
	fmt.Fprintf(w.out, "  subscription %s is %s on plan version %d; the code is redeemed with it\n",
		s.subID, subscribed.JSON201.Status, subscribed.JSON201.PlanVersion)
	if err := w.issueKey(ctx, s); err != nil {
		return err
	}
	const calls = 25
	w.step("%d calls with the key: GET %s", calls, s.url)
	for range calls {
		status, body, err := gatewayCall(ctx, w.http, s.url, s.key.Key)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("call with the key through the gateway: %d %s; want 200", status, body)
		}
	}
	used, err := w.metered(ctx, s, "forecasts", calls)
	if err != nil {
		return err
	}
	if err := w.quotes(ctx, s, planID, code, used); err != nil {
		return err
	}
	if err := w.invoice(ctx, s, calls); err != nil {
		return err
	}
	return w.payments(ctx, s, planID, admin)
}

// planFromFile writes deploy/pricing/hybrid.yaml, for the demo's API, into
// the plan directory, and has the admin reload it (the directory's watcher
// may have loaded it first: then the reload finds it unchanged).
func (w *walk) planFromFile(ctx context.Context, api demoAPI, admin string) (uuid.UUID, error) {
	content, err := os.ReadFile(w.cfg.PlanFile)
	if err != nil {
		return uuid.Nil, fmt.Errorf("read the demo's plan file: %w", err)
	}
	text := strings.Replace(string(content), "\napi: weather\n", "\napi: "+api.slug+"\n", 1)
	if text == string(content) {
		return uuid.Nil, fmt.Errorf("%s declares no plan of the API weather", w.cfg.PlanFile)
	}
	name := api.slug + ".yaml"
	w.step("the provider's hybrid plan is a YAML file: %s, for API %s, saved into VEIL_PRICING_DIR as %s", w.cfg.PlanFile, api.slug, name)
	tmp := filepath.Join(w.cfg.PricingDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return uuid.Nil, fmt.Errorf("write the plan file: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(w.cfg.PricingDir, name)); err != nil {
		return uuid.Nil, fmt.Errorf("write the plan file: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			fmt.Fprintf(w.out, "    %s\n", line)
		}
	}

	w.step("an admin reloads the plan files now: POST /v1/admin/pricing/reload (the watcher reloads on every change too)")
	reloaded, err := w.cp.ReloadPlanFilesWithResponse(ctx, nil, client.Bearer(admin))
	if err := client.Check(reloaded, err); err != nil {
		return uuid.Nil, fmt.Errorf("POST /v1/admin/pricing/reload: %w", err)
	}
	rep := reloaded.JSON200
	for _, r := range append(rep.Applied, rep.Unchanged...) {
		if r.File == name {
			fmt.Fprintf(w.out, "  %s: plan %s (%s), version %d; applied %d file(s), %d unchanged\n",
				r.File, r.PlanId, r.Plan, r.Version, len(rep.Applied), len(rep.Unchanged))
			return r.PlanId, nil
		}
	}
	return uuid.Nil, fmt.Errorf("POST /v1/admin/pricing/reload = %s; it does not list %s", reloaded.Body, name)
}

// promotion has the provider create a code for the plan: 20% off, for the
// first three periods.
func (w *walk) promotion(ctx context.Context, s *consumerSide, planID uuid.UUID, now time.Time) (string, error) {
	code := fmt.Sprintf("LAUNCH20-%d", now.Unix()%100000)
	w.step("the provider creates a promotion code: POST /v1/promotions (%s: 20%% off the first 3 periods of the plan)", code)
	created, err := w.cp.CreatePromotionWithResponse(ctx, nil, client.PromotionInput{
		Code: code, Kind: client.PercentOff, Value: "20", Duration: client.Ptr(client.Repeating), DurationPeriods: client.Ptr(3),
		PlanIds: &[]uuid.UUID{planID}, MaxRedemptions: client.Ptr(100), MaxPerCustomer: client.Ptr(1),
		Description: client.Ptr("Launch offer"),
	}, client.Bearer(s.provider))
	if err := client.Check(created, err); err != nil {
		return "", fmt.Errorf("POST /v1/promotions: %w", err)
	}
	p := created.JSON201
	fmt.Fprintf(w.out, "  promotion %s: %s %s, %s\n", p.Code, p.Kind, p.Value, p.Duration)
	return code, nil
}

// metered waits until the processors have counted want on the meter, and
// returns every meter's use this period.
func (w *walk) metered(ctx context.Context, s *consumerSide, meter string, want int) (map[string]string, error) {
	w.step("the processors meter the calls: GET /v1/subscriptions/%s/quota", s.subID)
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := w.cp.GetSubscriptionQuotaWithResponse(ctx, s.subID, nil, client.Bearer(s.consumer))
		if err := client.Check(got, err); err != nil {
			return nil, fmt.Errorf("GET /v1/subscriptions/%s/quota: %w", s.subID, err)
		}
		used := map[string]string{}
		for _, m := range got.JSON200.Meters {
			used[m.Meter] = m.Used
		}
		if n, err := decimal.NewFromString(used[meter]); err == nil && n.Equal(decimal.NewFromInt(int64(want))) {
			for _, m := range got.JSON200.Meters {
				fmt.Fprintf(w.out, "  meter %-13s used %s this period\n", m.Meter, m.Used)
			}
			return used, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("meter %s shows %q after 60s; want %d", meter, used[meter], want)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// quotes prices the usage so far with the code, then what 250,000
// forecasts would cost, which reaches every tier.
func (w *walk) quotes(ctx context.Context, s *consumerSide, planID uuid.UUID, code string, used map[string]string) error {
	w.step("a quote for the usage so far, with the code: POST /v1/plans/%s/quote", planID)
	if err := w.quote(ctx, s, planID, code, used); err != nil {
		return err
	}
	w.step("and for 250000 forecasts in a month: the first 1000 are included, each tier prices its own calls, tier 2 adds its flat 2.00")
	projected := map[string]string{}
	for k, v := range used {
		projected[k] = v
	}
	projected["forecasts"] = "250000"
	return w.quote(ctx, s, planID, code, projected)
}

func (w *walk) quote(ctx context.Context, s *consumerSide, planID uuid.UUID, code string, usage map[string]string) error {
	got, err := w.cp.QuotePlanWithResponse(ctx, planID, nil, client.QuoteInput{Usage: &usage, PromotionCodes: &[]string{code}}, client.Bearer(s.consumer))
	if err := client.Check(got, err); err != nil {
		return fmt.Errorf("POST /v1/plans/%s/quote: %w", planID, err)
	}
	q := got.JSON200
	fmt.Fprintf(w.out, "  usage %v\n", usage)
	for _, l := range q.Lines {
		what := string(l.Kind)
		if l.Meter != nil {
			what += " " + *l.Meter
		}
		if l.Tier != nil {
			what += fmt.Sprintf(" tier %d", *l.Tier)
		}
		if l.Promotion != nil {
			what += " " + *l.Promotion
		}
		fmt.Fprintf(w.out, "    %-28s %14s × %-14s %10s %s\n", what, l.Quantity, l.UnitPrice, l.Amount, q.Currency)
	}
	fmt.Fprintf(w.out, "    %-28s %43s %s\n    %-28s %43s %s\n    %-28s %43s %s\n",
		"subtotal", q.Subtotal, q.Currency, "discount", q.Discount, q.Currency, "total", q.Total, q.Currency)
	return nil
}
