package planfiles

import (
	"gopkg.in/yaml.v3"

	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/metering"
)

// MaxMeters bounds the meters a file defines; charges and tiers are
// bounded as over REST (pricing.MaxCharges, pricing.MaxTiers).
const MaxMeters = 50

// decodePlan decodes the plan's keys. Defaults are set first, so that an
// absent key keeps its default.
func (d *decoder) decodePlan(root *yaml.Node) {
	p := d.plan
	// quota_hard defaults to false, as over REST: a plan that wants calls
	// blocked at its quota says so.
	p.Status, p.Interval = "active", "month"
	var quota *int64
	var perSecond, perMinute *int64
	d.mapping(root, "", map[string]func(*yaml.Node, string){
		"api":         d.str(&p.API),
		"plan":        d.str(&p.Slug),
		"name":        d.str(&p.Name),
		"description": d.str(&p.Description),
		"status":      d.str(&p.Status),
		"type":        d.str(&p.Type),
		"currency":    d.str(&p.Currency),
		"interval":    d.str(&p.Interval),
		"base_fee":    d.dec(&p.BaseFee),
		"trial_days": func(n *yaml.Node, path string) {
			var v *int64
			d.optInt(&v, 0, 365, " days")(n, path)
			if v != nil {
				p.TrialDays = int(*v)
			}
		},
		"limits": func(n *yaml.Node, path string) {
			d.mapping(n, path, map[string]func(*yaml.Node, string){
				"quota_requests":  d.optInt(&quota, 1, 1<<62, " requests per period"),
				"quota_hard":      d.boolean(&p.Limits.QuotaHard),
				"rate_per_second": d.optInt(&perSecond, 1, 1_000_000, ""),
				"rate_per_minute": d.optInt(&perMinute, 1, 1_000_000, ""),
			})
		},
		"meters": func(n *yaml.Node, path string) {
			d.sequence(n, path, MaxMeters, func(item *yaml.Node, field string) {
				p.Meters = append(p.Meters, d.meter(item, field))
			})
		},
		"charges": func(n *yaml.Node, path string) {
			d.sequence(n, path, pricing.MaxCharges, func(item *yaml.Node, field string) {
				p.Charges = append(p.Charges, d.charge(item, field))
			})
		},
	})
	p.Limits.QuotaRequests = quota
	p.Limits.RatePerSecond, p.Limits.RatePerMinute = intPtr(perSecond), intPtr(perMinute)
}

func intPtr(v *int64) *int {
	if v == nil {
		return nil
	}
	i := int(*v)
	return &i
}

func (d *decoder) meter(n *yaml.Node, path string) metering.Meter {
	var m metering.Meter
	var agg string
	d.mapping(n, path, map[string]func(*yaml.Node, string){
		"slug":        d.str(&m.Slug),
		"name":        d.str(&m.Name),
		"aggregation": d.str(&agg),
		"field":       d.str(&m.Field),
		"filter": func(n *yaml.Node, path string) {
			if isNull(n) {
				return
			}
			d.mapping(n, path, map[string]func(*yaml.Node, string){
				"methods":        d.strList(&m.Filter.Methods),
				"routes":         d.strList(&m.Filter.Routes),
				"status_classes": d.strList(&m.Filter.StatusClasses),
			})
		},
	})
	m.Aggregation = metering.Aggregation(agg)
	return m
}

func (d *decoder) charge(n *yaml.Node, path string) pricing.Charge {
	var c pricing.Charge
	var model string
	d.mapping(n, path, map[string]func(*yaml.Node, string){
		"meter":          d.str(&c.Meter),
		"model":          d.str(&model),
		"included_units": d.dec(&c.IncludedUnits),
		"unit_price":     d.optDec(&c.UnitPrice),
		"package_size":   d.optDec(&c.PackageSize),
		"quota":          d.optDec(&c.Quota),
		"quota_hard":     d.boolean(&c.QuotaHard),
		"tiers": func(n *yaml.Node, path string) {
			c.Tiers = []pricing.Tier{}
			d.sequence(n, path, pricing.MaxTiers, func(item *yaml.Node, field string) {
				c.Tiers = append(c.Tiers, d.tier(item, field))
			})
		},
	})
	c.Model = metering.ChargeModel(model)
	return c
}

// tier decodes one tier; up_to is required, a number, or null or
// "unlimited" for an unbounded last tier (a nil UpTo).
func (d *decoder) tier(n *yaml.Node, path string) pricing.Tier {
	var t pricing.Tier
	upTo := false
	d.mapping(n, path, map[string]func(*yaml.Node, string){
		"up_to": func(n *yaml.Node, path string) {
			upTo = true
			if isNull(n) || (n.Kind == yaml.ScalarNode && n.Value == "unlimited") {
				return
			}
			if v, ok := d.decimalOf(n, path); ok {
				t.UpTo = &v
			}
		},
		"unit_price":  d.dec(&t.UnitPrice),
		"flat_amount": d.dec(&t.FlatAmount),
	})
	if !upTo && n.Kind == yaml.MappingNode {
		d.fail(n, join(path, "up_to"), "is required: a bound, or unlimited on the last tier")
	}
	return t
}
