package enforcement

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// encodeKey returns r's hash fields as field, value pairs.
func encodeKey(r KeyRecord) []string {
	return []string{
		"key_id", r.KeyID,
		"subscription_id", r.SubscriptionID,
		"api_id", r.APIID,
		"status", r.Status,
		"methods", jsonList(r.Methods),
		"routes", jsonList(r.Routes),
		"rate_per_second", strconv.Itoa(r.RatePerSecond),
		"rate_per_minute", strconv.Itoa(r.RatePerMinute),
		"expires_at", strconv.FormatInt(unixOrZero(r.ExpiresAt), 10),
		"grace_until", strconv.FormatInt(unixOrZero(r.GraceUntil), 10),
		"version", strconv.FormatInt(r.Version, 10),
	}
}

// encodeSubscription returns r's hash fields as field, value pairs.
func encodeSubscription(r SubscriptionRecord) []string {
	hard := "0"
	if r.QuotaHard {
		hard = "1"
	}
	return []string{
		"api_id", r.APIID,
		"plan_id", r.PlanID,
		"status", r.Status,
		"period_start", strconv.FormatInt(r.PeriodStart.Unix(), 10),
		"period_end", strconv.FormatInt(r.PeriodEnd.Unix(), 10),
		"period_anchor", strconv.FormatInt(unixOrZero(r.PeriodAnchor), 10),
		"quota_requests", strconv.FormatInt(r.QuotaRequests, 10),
		"quota_hard", hard,
		"rate_per_second", strconv.Itoa(r.RatePerSecond),
		"rate_per_minute", strconv.Itoa(r.RatePerMinute),
		"meters", encodeMeters(r.Meters),
		// Written empty when there is none, so that a paid invoice's
		// number does not stay behind in the hash.
		"unpaid_invoice_id", r.UnpaidInvoiceID,
		"unpaid_invoice_number", r.UnpaidInvoiceNumber,
		"suspend_at", strconv.FormatInt(unixOrZero(r.SuspendAt), 10),
		// Written empty when there is none, so that a removed budget
		// does not stay behind in the hash.
		"budget", encodeBudget(r.Budget),
		"version", strconv.FormatInt(r.Version, 10),
	}
}

func jsonList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(l) // a []string always marshals
	return string(b)
}

// DecodeKey decodes the fields of the key record stored under hash (as
// HGETALL returns them), strictly: every field must be present and well
// formed, or the error, wrapping ErrCorruptRecord, names every bad field.
// The record holds what could be decoded even then, for reconciliation,
// except its Status, left empty so that a partial record allows nothing. No
// fields at all is ErrNotFound. Readers that cache HGETALL themselves use
// it to decode.
func DecodeKey(hash string, fields map[string]string) (KeyRecord, error) {
	r := KeyRecord{Hash: hash}
	if len(fields) == 0 {
		return r, ErrNotFound
	}
	d := decoder{fields: fields}
	if err := validHash(hash); err != nil {
		d.fail("hash", err)
	}
	r.KeyID = d.id("key_id")
	r.SubscriptionID = d.id("subscription_id")
	r.APIID = d.id("api_id")
	r.Status = d.status("status", knownKeyStatus)
	r.Methods = d.list("methods", validMethod)
	r.Routes = d.list("routes", ValidRoute)
	r.RatePerSecond = int(d.int("rate_per_second", 0, 1<<31-1))
	r.RatePerMinute = int(d.int("rate_per_minute", 0, 1<<31-1))
	r.ExpiresAt = timeOrZero(d.int("expires_at", 0, 1<<62))
	r.GraceUntil = timeOrZero(d.int("grace_until", 0, 1<<62))
	r.Version = d.int("version", 1, 1<<63-1)
	if len(d.bad) > 0 {
		r.Status = "" // a partial record must allow nothing
	}
	return r, d.err("key record " + hash)
}

// DecodeSubscription decodes the fields of the subscription record stored
// under id, as strictly as [DecodeKey].
func DecodeSubscription(id string, fields map[string]string) (SubscriptionRecord, error) {
	r := SubscriptionRecord{ID: id}
	if len(fields) == 0 {
		return r, ErrNotFound
	}
	d := decoder{fields: fields}
	r.APIID = d.id("api_id")
	r.PlanID = d.id("plan_id")
	r.Status = d.status("status", knownSubscriptionStatus)
	r.PeriodStart = timeOrZero(d.int("period_start", 1, 1<<62))
	r.PeriodEnd = timeOrZero(d.int("period_end", 1, 1<<62))
	if len(d.bad) == 0 && !r.PeriodEnd.After(r.PeriodStart) {
		d.fail("period_end", errors.New("not after period_start"))
	}
	// Records written before anchors existed lack period_anchor: the
	// processors step them unanchored until the control plane rewrites
	// them, so they are not refused either. A garbled one is refused (the
	// processors, which cannot refuse, step unanchored: RecordedPeriods).
	if v, ok := d.fields["period_anchor"]; ok {
		anchor, err := parseAnchor(v)
		if err != nil {
			d.fail("period_anchor", err)
		}
		r.PeriodAnchor = anchor
	}
	r.QuotaRequests = d.int("quota_requests", -1, 1<<63-1)
	switch v := d.get("quota_hard"); v {
	case "0", "1":
		r.QuotaHard = v == "1"
	case "":
	default:
		d.fail("quota_hard", fmt.Errorf("%q, want 0 or 1", v))
	}
	r.RatePerSecond = int(d.int("rate_per_second", 0, 1<<31-1))
	r.RatePerMinute = int(d.int("rate_per_minute", 0, 1<<31-1))
	// The one field a record may lack: records written before meters
	// existed price none, and failing them closed would refuse every
	// subscription at the gateway until each was rewritten. What is there
	// is decoded as strictly as any other field.
	if v, ok := d.fields["meters"]; ok {
		if ms, err := decodeMeters(v); err != nil {
			d.fail("meters", err)
		} else {
			r.Meters = ms
		}
	}
	d.unpaid(&r)
	// Records written before budgets lack the field: none, then.
	if v := d.fields["budget"]; v != "" {
		if b, err := decodeBudget(v); err != nil {
			d.fail("budget", err)
		} else {
			r.Budget, r.budgetKey = b, budgetKey(v)
		}
	}
	r.Version = d.int("version", 1, 1<<63-1)
	if len(d.bad) > 0 {
		r.Status = ""
	}
	return r, d.err("subscription record " + id)
}

// unpaid decodes the dunning fields, which records written before dunning
// lack (none, then); what is there is decoded strictly.
func (d *decoder) unpaid(r *SubscriptionRecord) {
	r.UnpaidInvoiceID, r.UnpaidInvoiceNumber = d.fields["unpaid_invoice_id"], d.fields["unpaid_invoice_number"]
	if err := validUnpaid(r.UnpaidInvoiceID, r.UnpaidInvoiceNumber); err != nil {
		d.fail("unpaid_invoice_id", err)
	}
	if _, ok := d.fields["suspend_at"]; ok {
		r.SuspendAt = timeOrZero(d.int("suspend_at", 0, 1<<62))
	}
}

// decoder collects every bad field rather than stopping at the first, so
// an operator sees the whole damage at once.
type decoder struct {
	fields map[string]string
	bad    []string
}

func (d *decoder) fail(field string, err error) {
	d.bad = append(d.bad, fmt.Sprintf("field %s: %v", field, err))
}

// get returns the field, recording it as missing when absent.
func (d *decoder) get(field string) string {
	v, ok := d.fields[field]
	if !ok {
		d.fail(field, errors.New("missing"))
		return ""
	}
	return v
}

func (d *decoder) id(field string) string {
	v, ok := d.fields[field]
	switch {
	case !ok:
		d.fail(field, errors.New("missing"))
	case v == "":
		d.fail(field, errors.New("empty"))
	}
	return v
}

func (d *decoder) status(field string, known func(string) bool) string {
	v, ok := d.fields[field]
	switch {
	case !ok:
		d.fail(field, errors.New("missing"))
	case !known(v):
		d.fail(field, fmt.Errorf("unknown status %q", v))
		return ""
	}
	return v
}

func (d *decoder) int(field string, lo, hi int64) int64 {
	v, ok := d.fields[field]
	if !ok {
		d.fail(field, errors.New("missing"))
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		d.fail(field, fmt.Errorf("%q, want an integer in [%d, %d]", v, lo, hi))
		return 0
	}
	return n
}

func (d *decoder) list(field string, valid func(string) error) []string {
	v, ok := d.fields[field]
	if !ok {
		d.fail(field, errors.New("missing"))
		return nil
	}
	var l []string
	// json.Unmarshal accepts null for a slice: demand an array.
	if !strings.HasPrefix(v, "[") {
		d.fail(field, fmt.Errorf("%q, want a JSON array", v))
		return nil
	}
	if err := json.Unmarshal([]byte(v), &l); err != nil {
		d.fail(field, fmt.Errorf("want a JSON array of strings: %w", err))
		return nil
	}
	for _, s := range l {
		if err := valid(s); err != nil {
			d.fail(field, err)
			return nil
		}
	}
	if len(l) == 0 {
		return nil
	}
	return l
}

func (d *decoder) err(what string) error {
	if len(d.bad) == 0 {
		return nil
	}
	return fmt.Errorf("decode %s: %w: %s", what, ErrCorruptRecord, strings.Join(d.bad, "; "))
}
