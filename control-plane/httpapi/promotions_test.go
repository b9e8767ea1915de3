package httpapi_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/promotions"
	"github.com/veil-platform/veil/control-plane/webhooks/webhookstest"
	"github.com/veil-platform/veil/internal/testenv"
)

// The HTTP behaviour of promotions: codes given when subscribing, a patch
// that sets members to null, and a quote's discount lines.

// promotionsWorld is subsWorld with acme's plan at a base fee of 20 USD and
// the subscriptions service redeeming codes given at subscribe time.
func promotionsWorld(t *testing.T) *subsWorld {
	t.Helper()
	e := newTestEnv(t)
	p, err := promotions.New(promotions.Config{Pool: e.Pool, Subscriptions: e.Subs, Publisher: webhookstest.New(t, e.Pool, testenv.River(t, e.Pool, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.Subs.SetPromotions(p)
	w := &subsWorld{e: e, provider: e.token("acme", "alice", "provider"), buyer: e.token("initech", "bob", "consumer"), outsider: e.token("globex", "dave", "provider")}
	w.apiID = w.activeAPI(t, "weather")
	w.planID = w.plan(t, w.apiID, "basic", "active", map[string]any{"type": "subscription", "currency": "USD", "base_fee": "20"})
	return w
}

// TestSubscribeWithPromotionCodes: a refused code refuses the subscription
// with a problem naming it; accepted codes are redeemed with it.
func TestSubscribeWithPromotionCodes(t *testing.T) {
	w := promotionsWorld(t)
	e := w.e
	e.must(http.StatusCreated, "POST", "/v1/promotions", w.provider, map[string]any{"code": "WELCOME", "kind": "percent_off", "value": "25", "stackable": true}, nil)
	p := e.problem(http.StatusUnprocessableEntity, "validation", "POST", "/v1/subscriptions", w.buyer,
		map[string]any{"plan_id": w.planID, "promotion_codes": []string{"welcome", "NOPE"}})
	if got := p.fields(); !slices.Equal(got, []string{"promotion_codes[1]"}) {
		t.Errorf("subscribe with NOPE: fields %v; want promotion_codes[1]", got)
	}
	var list struct{ Data []struct{ ID string } }
	e.must(http.StatusOK, "GET", "/v1/subscriptions", w.buyer, nil, &list)
	if len(list.Data) != 0 {
		t.Fatalf("subscriptions after a refused code = %d; want none", len(list.Data))
	}
	var sub struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/subscriptions", w.buyer, map[string]any{"plan_id": w.planID, "promotion_codes": []string{"welcome"}}, &sub)
	var redeemed struct {
		Data []struct {
			Code, Kind, Value string
			Active            bool
		}
	}
	e.must(http.StatusOK, "GET", "/v1/subscriptions/"+sub.ID+"/promotions", w.provider, nil, &redeemed)
	if len(redeemed.Data) != 1 || redeemed.Data[0].Code != "WELCOME" || redeemed.Data[0].Value != "25" || !redeemed.Data[0].Active {
		t.Errorf("redemptions = %+v; want WELCOME (25), active", redeemed.Data)
	}
	e.must(http.StatusNotFound, "GET", "/v1/subscriptions/"+sub.ID+"/promotions", w.outsider, nil, nil)
}

// TestPatchPromotionToNull: null clears an end or a limit; a member left
// out stays.
func TestPatchPromotionToNull(t *testing.T) {
	w := promotionsWorld(t)
	var p struct {
		ID             string
		ValidUntil     *string `json:"valid_until"`
		MaxRedemptions *int    `json:"max_redemptions"`
		MaxPerCustomer *int    `json:"max_per_customer"`
	}
	w.e.must(http.StatusCreated, "POST", "/v1/promotions", w.provider, map[string]any{
		"code": "SPRING", "kind": "amount_off", "value": "5", "currency": "USD",
		"valid_until": "2099-01-01T00:00:00Z", "max_redemptions": 10, "max_per_customer": 1,
	}, &p)
	w.e.must(http.StatusOK, "PATCH", "/v1/promotions/"+p.ID, w.provider, map[string]any{"valid_until": nil, "max_redemptions": nil}, &p)
	if p.ValidUntil != nil || p.MaxRedemptions != nil || p.MaxPerCustomer == nil || *p.MaxPerCustomer != 1 {
		t.Errorf("after the patch: valid_until %v, max_redemptions %v, max_per_customer %v; want null, null, 1", p.ValidUntil, p.MaxRedemptions, p.MaxPerCustomer)
	}
	w.e.problem(http.StatusBadRequest, "malformed-json", "PATCH", "/v1/promotions/"+p.ID, w.provider, map[string]any{"value": "6"})
}

// TestQuoteWithPromotionCodes: a quote's discount lines, in the currency's
// precision, and the total they leave.
func TestQuoteWithPromotionCodes(t *testing.T) {
	w := promotionsWorld(t)
	e := w.e
	e.must(http.StatusCreated, "POST", "/v1/promotions", w.provider, map[string]any{"code": "FIVE", "kind": "amount_off", "value": "5", "currency": "USD", "stackable": true}, nil)
	e.must(http.StatusCreated, "POST", "/v1/promotions", w.provider, map[string]any{"code": "THIRD", "kind": "percent_off", "value": "33.333333", "stackable": true}, nil)
	var q struct {
		Lines []struct {
			Kind, Amount string
			Promotion    *string
		}
		Subtotal, Discount, Total string
	}
	e.must(http.StatusOK, "POST", "/v1/plans/"+w.planID+"/quote", w.buyer, map[string]any{"promotion_codes": []string{"third", "five"}}, &q)
	// 20 − 5 = 15; a third of 15 is 4.99999995 → 5.00.
	var lines []string
	for _, l := range q.Lines {
		line := l.Kind + " " + l.Amount
		if l.Promotion != nil {
			line += " " + *l.Promotion
		}
		lines = append(lines, line)
	}
	if !slices.Equal(lines, []string{"base_fee 20.00", "discount -5.00 FIVE", "discount -5.00 THIRD"}) || q.Subtotal != "20.00" || q.Discount != "10.00" || q.Total != "10.00" {
		t.Errorf("quote = %v, subtotal %s, discount %s, total %s; want 20.00 − 5.00 − 5.00 = 10.00", lines, q.Subtotal, q.Discount, q.Total)
	}
	p := e.problem(http.StatusUnprocessableEntity, "validation", "POST", "/v1/plans/"+w.planID+"/quote", w.buyer, map[string]any{"promotion_codes": []string{"FIVE", "GONE"}})
	if got := p.fields(); !slices.Equal(got, []string{"promotion_codes[1]"}) {
		t.Errorf("quote with GONE: fields %v; want promotion_codes[1]", got)
	}
	var redemptions int
	if err := e.Pool.QueryRow(t.Context(), `SELECT count(*) FROM promotion_redemptions`).Scan(&redemptions); err != nil || redemptions != 0 {
		t.Errorf("redemptions after quotes = %d, %v; want 0", redemptions, err)
	}
}

// TestLongDecimalsRefused: a decimal longer than 40 characters, as a
// number or a string, is refused before it is parsed, and a caller who may
// not create a promotion is refused before its body is read; 40 characters
// still decode.
func TestLongDecimalsRefused(t *testing.T) {
	w := promotionsWorld(t)
	e := w.e
	digits := strings.Repeat("9", 100_000)
	for _, value := range []any{digits, json.RawMessage(digits), strings.Repeat("1", 41)} {
		e.problem(http.StatusBadRequest, "malformed-json", "POST", "/v1/promotions", w.provider,
			map[string]any{"code": "HUGE", "kind": "percent_off", "value": value})
	}
	e.problem(http.StatusForbidden, "forbidden", "POST", "/v1/promotions", w.buyer,
		map[string]any{"code": "HUGE", "kind": "percent_off", "value": json.RawMessage(digits)})
	e.problem(http.StatusBadRequest, "malformed-json", "POST", "/v1/plans/"+w.planID+"/versions", w.provider,
		map[string]any{"terms": map[string]any{"type": "subscription", "currency": "USD", "base_fee": digits}})
	var p struct{ Value string }
	e.must(http.StatusCreated, "POST", "/v1/promotions", w.provider,
		map[string]any{"code": "FORTY", "kind": "percent_off", "value": strings.Repeat("0", 38) + "10"}, &p)
	if p.Value != "10" {
		t.Errorf("created value = %s; want 10", p.Value)
	}
}

// TestPatchPromotionPlansEmpty: an empty plan_ids would widen the
// promotion to every plan; it is refused naming the field.
func TestPatchPromotionPlansEmpty(t *testing.T) {
	w := promotionsWorld(t)
	var p struct{ ID string }
	w.e.must(http.StatusCreated, "POST", "/v1/promotions", w.provider,
		map[string]any{"code": "BASIC", "kind": "percent_off", "value": "5", "plan_ids": []string{w.planID}}, &p)
	d := w.e.problem(http.StatusUnprocessableEntity, "validation", "PATCH", "/v1/promotions/"+p.ID, w.provider, map[string]any{"plan_ids": []string{}})
	if got := d.fields(); !slices.Equal(got, []string{"plan_ids"}) {
		t.Errorf("patch with plan_ids []: fields %v; want plan_ids", got)
	}
	var after struct {
		PlanIDs []string `json:"plan_ids"`
	}
	w.e.must(http.StatusOK, "PATCH", "/v1/promotions/"+p.ID, w.provider, map[string]any{"plan_ids": nil}, &after)
	if !slices.Equal(after.PlanIDs, []string{w.planID}) {
		t.Errorf("plan_ids after a null patch = %v; want %s", after.PlanIDs, w.planID)
	}
}

// TestQuoteUnknownCurrency: a version priced in a currency Veil no longer
// knows (written before it was dropped) cannot be quoted: a 409 naming it,
// not a 500.
func TestQuoteUnknownCurrency(t *testing.T) {
	w := promotionsWorld(t)
	if _, err := w.e.Pool.Exec(t.Context(), `UPDATE plan_versions SET currency = 'XTS' WHERE plan_id = $1`, w.planID); err != nil {
		t.Fatal(err)
	}
	d := w.e.problem(http.StatusConflict, "unknown-currency", "POST", "/v1/plans/"+w.planID+"/quote", w.buyer, map[string]any{})
	if !strings.Contains(d.Detail, "XTS") {
		t.Errorf("quote in XTS: detail %q; want it to name XTS", d.Detail)
	}
}
