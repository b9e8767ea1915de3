package planfiles

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

var (
	apiSlugRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
	planSlugRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// validate checks the decoded plan: the plan's own fields here, its meters
// by metering.Meter.Validate, and its terms by the REST API's one validator
// (subscriptions.Terms.Validate), so a file and a request are held to the
// same.
func (d *decoder) validate() {
	p := d.plan
	req := func(field, value string, re *regexp.Regexp) {
		if value == "" {
			d.failAt(field, "is required")
		} else if !re.MatchString(value) {
			d.failAt(field, "must match %s", re)
		}
	}
	req("api", p.API, apiSlugRe)
	req("plan", p.Slug, planSlugRe)
	if n := utf8.RuneCountInString(strings.TrimSpace(p.Name)); n == 0 || n > 200 {
		d.failAt("name", "must be 1 to 200 characters")
	}
	p.Name = strings.TrimSpace(p.Name)
	if utf8.RuneCountInString(p.Description) > 5000 {
		d.failAt("description", "must be at most 5000 characters")
	}
	switch p.Status {
	case "draft", "active", "archived":
	default:
		d.failAt("status", "must be draft, active or archived")
	}
	// REST defaults an absent type to subscription; a file names it.
	if p.Type == "" {
		d.failAt("type", "is required")
		return
	}
	d.validateCharges(d.validateMeters())
	d.validateTerms()
}

// validateTerms checks the plan's terms by subscriptions.Terms.Validate,
// naming each field by its path in the file.
func (d *decoder) validateTerms() {
	t := d.plan.terms()
	var v validation.Error
	t.Validate(&v, "")
	for _, f := range v.Fields {
		field := strings.TrimPrefix(f.Field, ".")
		switch {
		case field == "quota_requests" || field == "rate_per_second" || field == "rate_per_minute":
			field = "limits." + field
		case field == "charges" && len(d.plan.Charges) == 0:
			// No charges key to point at: the type is what is wrong.
			field = "type"
		}
		d.failAt(field, "%s", f.Detail)
	}
}

func (d *decoder) validateMeters() map[string]bool {
	slugs := map[string]bool{}
	for i, m := range d.plan.Meters {
		path := fmt.Sprintf("meters[%d]", i)
		if err := m.Validate(); err != nil {
			field, msg := meterField(err)
			d.failAt(join(path, field), "%s", msg)
			continue
		}
		if slugs[m.Slug] {
			d.failAt(path+".slug", "meter %q is defined twice", m.Slug)
		}
		slugs[m.Slug] = true
	}
	return slugs
}

// meterField splits metering.Meter.Validate's "invalid meter: field:
// message" into its field and message.
func meterField(err error) (field, msg string) {
	s := strings.TrimPrefix(err.Error(), metering.ErrInvalidMeter.Error()+": ")
	field, msg, ok := strings.Cut(s, ": ")
	if !ok {
		return "", s
	}
	return field, msg
}

// validateCharges checks that each charge charges a meter the file
// defines; the charges themselves are the terms' (validateTerms).
func (d *decoder) validateCharges(meters map[string]bool) {
	for i, c := range d.plan.Charges {
		if c.Meter != "" && !meters[c.Meter] {
			d.failAt(fmt.Sprintf("charges[%d].meter", i), "meter %q is not defined under meters", c.Meter)
		}
	}
}
