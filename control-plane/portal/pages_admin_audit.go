package portal

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// adminAuditFilter is the audit page's filter, as its form sends it:
// dates are whole UTC days, until included.
type adminAuditFilter struct {
	Actor, Action, TargetType, TargetID, Org, Since, Until string
}

// Any says whether any filter is set.
func (f adminAuditFilter) Any() bool { return f != adminAuditFilter{} }

func (f adminAuditFilter) query() url.Values {
	q := url.Values{}
	for name, v := range map[string]string{"actor": f.Actor, "action": f.Action, "target_type": f.TargetType,
		"target_id": f.TargetID, "organization_id": f.Org, "since": f.Since, "until": f.Until} {
		if v != "" {
			q.Set(name, v)
		}
	}
	return q
}

// auditCursorPattern is what the audit log's cursor looks like (an entry
// id).
var auditCursorPattern = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)

type adminAuditRow struct {
	adminAuditEntry
	// BeforeJSON and AfterJSON are the snapshots, indented.
	BeforeJSON, AfterJSON string
}

type adminAuditPage struct {
	Filter  adminAuditFilter
	Entries []adminAuditRow
	Next    string
	// First: this is the newest page of the filter.
	First bool
}

// NextHref links the next (older) page, or is "".
func (a adminAuditPage) NextHref() string {
	if a.Next == "" {
		return ""
	}
	q := a.Filter.query()
	q.Set("cursor", a.Next)
	return "/admin/audit?" + q.Encode()
}

// FirstHref links the newest page of the filter.
func (a adminAuditPage) FirstHref() string {
	if q := a.Filter.query().Encode(); q != "" {
		return "/admin/audit?" + q
	}
	return "/admin/audit"
}

// indentJSON is raw indented for reading, or "" when empty or null.
func indentJSON(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		return string(raw)
	}
	return b.String()
}

// adminAudit lists the audit log, newest first, filtered by actor,
// action, target, organization and days, a page at a time with the API's
// cursor.
func (p *portal) adminAudit(w http.ResponseWriter, r *http.Request) {
	in := r.URL.Query()
	f := adminAuditFilter{
		Actor: strings.TrimSpace(in.Get("actor")), Action: strings.TrimSpace(in.Get("action")),
		TargetType: strings.TrimSpace(in.Get("target_type")), TargetID: strings.TrimSpace(in.Get("target_id")),
		Org: strings.TrimSpace(in.Get("organization_id")), Since: in.Get("since"), Until: in.Get("until"),
	}
	q := f.query()
	q.Set("limit", "50")
	// The form's days are whole UTC days; the API takes times, until
	// excluded.
	var pr *Problem
	for _, d := range []struct {
		name, value string
		next        bool
	}{{"since", f.Since, false}, {"until", f.Until, true}} {
		if d.value == "" {
			continue
		}
		t, ok := adminDate(d.value)
		if !ok {
			pr = adminInvalid(d.name, "must be a date (YYYY-MM-DD)")
			break
		}
		if d.next {
			*t = t.AddDate(0, 0, 1)
		}
		q.Set(d.name, t.Format(time.RFC3339))
	}
	c := in.Get("cursor")
	if auditCursorPattern.MatchString(c) {
		q.Set("cursor", c)
	}
	out := adminAuditPage{Filter: f, First: c == ""}
	status := http.StatusOK
	if pr == nil {
		var list page[adminAuditEntry]
		if err := p.api.get(r, "/v1/audit", q, &list); err != nil {
			var ok bool
			if pr, ok = adminFormProblem(err); !ok {
				p.failAPI(w, r, err)
				return
			}
		}
		for _, e := range list.Data {
			out.Entries = append(out.Entries, adminAuditRow{adminAuditEntry: e, BeforeJSON: indentJSON(e.Before), AfterJSON: indentJSON(e.After)})
		}
		out.Next = list.NextCursor
	}
	if pr != nil {
		status = pr.Status
	}
	p.render(w, r, status, "admin_audit", view{Title: "Audit log", Nav: "audit", Data: out, Problem: pr})
}
