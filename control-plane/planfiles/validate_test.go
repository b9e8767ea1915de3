package planfiles

import (
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/subscriptions"
)

// A plan file and a REST request with the same terms get the same verdict:
// both go through subscriptions.Terms.Validate.
func TestTermsVerdictsMatchREST(t *testing.T) {
	dec := func(s string) decimal.Decimal { return decimal.RequireFromString(s) }
	cases := []struct {
		name     string
		old, new string
		rest     func(*subscriptions.Terms)
	}{
		{"valid", "", "", func(*subscriptions.Terms) {}},
		{"base fee with 7 decimals", "base_fee: 19.00", `base_fee: "19.0000000"`, func(t *subscriptions.Terms) { t.BaseFee = dec("19.0000000") }},
		{"base fee with 6 decimals", "base_fee: 19.00", `base_fee: "19.000000"`, func(t *subscriptions.Terms) { t.BaseFee = dec("19.000000") }},
		{"base fee too large", "base_fee: 19.00", `base_fee: "100000000000000"`, func(t *subscriptions.Terms) { t.BaseFee = dec("100000000000000") }},
		{"unknown currency", "currency: USD", "currency: XXX", func(t *subscriptions.Terms) { t.Currency = "XXX" }},
		{"weekly", "type: hybrid", "type: hybrid\ninterval: week", func(t *subscriptions.Terms) { t.Interval = "week" }},
		{"subscription with charges", "type: hybrid", "type: subscription", func(t *subscriptions.Terms) { t.Type = "subscription" }},
		{"unknown type", "type: hybrid", "type: metered", func(t *subscriptions.Terms) { t.Type = "metered" }},
		{"yearly", "type: hybrid", "type: hybrid\ninterval: year", func(t *subscriptions.Terms) { t.Interval = "year" }},
	}
	base, errs := Parse("pro.yaml", []byte(validPlan))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			content := validPlan
			if c.old != "" {
				content = replace(t, c.old, c.new)
			}
			_, fileErrs := Parse("pro.yaml", []byte(content))
			in := subscriptions.PlanInput{Name: base.Name, Slug: base.Slug, Terms: base.terms()}
			c.rest(&in.Terms)
			restErr := in.Validate()
			if (len(fileErrs) == 0) != (restErr == nil) {
				t.Fatalf("file errors %v, REST error %v; want the same verdict", fileErrs, restErr)
			}
		})
	}
}
