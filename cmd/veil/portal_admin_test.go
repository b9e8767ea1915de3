package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// submittedAPI registers an API as the demo's provider and submits it for
// approval: it returns the API's id and organization and the approval
// request's id.
func (pp *portalPlane) submittedAPI(name, priority string) (apiID, orgID, approvalID string) {
	pp.t.Helper()
	prov := devPersonas()[1].Principal
	var api struct {
		ID             string `json:"id"`
		OrganizationID string `json:"organization_id"`
	}
	pp.api(prov, http.MethodPost, "/v1/apis", map[string]any{"name": name, "slug": fmt.Sprintf("review-%d", time.Now().UnixNano()),
		"upstream_url": "http://127.0.0.1:9/v1", "version": "1.0", "description": "Forecasts for " + name,
		"routes": []map[string]any{{"methods": []string{"GET"}, "path": "/forecast"}}}, &api)
	var approval struct{ ID string }
	pp.api(prov, http.MethodPost, "/v1/apis/"+api.ID+"/submit", map[string]any{"priority": priority, "note": "please review"}, &approval)
	return api.ID, api.OrganizationID, approval.ID
}

// apiState is the API's state as its provider reads it through REST.
func (pp *portalPlane) apiState(id string) string {
	pp.t.Helper()
	var api struct{ State string }
	pp.api(devPersonas()[1].Principal, http.MethodGet, "/v1/apis/"+id, nil, &api)
	return api.State
}

// TestPortalAdminApprovals: a provider submits two APIs through the REST
// API; the admin finds both in the queue with their SLA clocks and the
// statistics, opens one, is told a rejection needs a reason next to its
// field, approves it with a reason (the API moves on to approved and its
// gateway registration), and rejects the other through the bulk form,
// which reports each request's outcome. The audit page lists the
// decisions and its filters narrow the list; consumers and providers get
// the 403 page.
func TestPortalAdminApprovals(t *testing.T) {
	pp := newPortalPlane(t)
	apiA, _, reqA := pp.submittedAPI("Admin Review Weather", "high")
	apiB, _, reqB := pp.submittedAPI("Admin Review Tides", "normal")

	for _, who := range []string{"consumer", "provider"} {
		b := pp.browser()
		b.signIn(who)
		if p := b.get("/admin/approvals"); p.status != http.StatusForbidden || !strings.Contains(p.body, "Not allowed") {
			t.Errorf("%s on /admin/approvals: %d; want the 403 page", who, p.status)
		}
	}

	b := pp.browser()
	b.signIn("admin")
	queue := b.get("/admin/approvals")
	if queue.status != http.StatusOK {
		t.Fatalf("queue: %d %s", queue.status, queue.body)
	}
	for _, want := range []string{"Admin Review Weather", "Admin Review Tides", `href="/admin/approvals/` + reqA + `"`, " left", "Open, high",
		"Median time to decide", `name="ids" value="` + reqB + `"`} {
		if !strings.Contains(queue.body, want) {
			t.Errorf("queue does not show %q: %s", want, queue.body)
		}
	}
	if strings.Contains(queue.body, " style=") || strings.Contains(queue.body, "onclick") {
		t.Errorf("queue has inline styles or handlers, which the CSP forbids")
	}
	if p := b.get("/admin/approvals?priority=urgent"); !strings.Contains(p.body, "No request matches this filter") {
		t.Errorf("the urgent filter lists requests: %s", p.body)
	}
	if p := b.get("/admin/approvals?priority=high"); !strings.Contains(p.body, "Admin Review Weather") || strings.Contains(p.body, "Admin Review Tides") {
		t.Errorf("the high filter does not list only the high request: %s", p.body)
	}

	review := b.get("/admin/approvals/" + reqA)
	if review.status != http.StatusOK || !strings.Contains(review.body, "Forecasts for Admin Review Weather") || !strings.Contains(review.body, "/forecast") ||
		!strings.Contains(review.body, "please review") {
		t.Fatalf("review page: %d; want the API, its routes and the submission's note: %s", review.status, review.body)
	}
	csrf := review.field(t, "csrf")
	noReason := b.post("/admin/approvals/"+reqA+"/decide", url.Values{"csrf": {csrf}, "idem": {review.field(t, "idem")}, "action": {"reject"}})
	if noReason.status != http.StatusUnprocessableEntity || !strings.Contains(noReason.body, `id="decide-reason-error"`) {
		t.Fatalf("reject without a reason: %d; want 422 with the error next to the reason: %s", noReason.status, noReason.body)
	}
	approved := b.post("/admin/approvals/"+reqA+"/decide", url.Values{"csrf": {csrf}, "idem": {noReason.field(t, "idem")},
		"action": {"approve"}, "reason": {"Upstream checked"}})
	if approved.status != http.StatusSeeOther || approved.header.Get("Location") != "/admin/approvals/"+reqA {
		t.Fatalf("approve: %d %q %s", approved.status, approved.header.Get("Location"), approved.body)
	}
	if st := pp.apiState(apiA); !slices.Contains([]string{"approved", "active", "failed"}, st) {
		t.Errorf("the approved API is %s; want approved or beyond", st)
	}
	after := b.get("/admin/approvals/" + reqA)
	if !strings.Contains(after.body, "state-approved") || !strings.Contains(after.body, "Upstream checked") || strings.Contains(after.body, `action="/admin/approvals/`+reqA+`/decide"`) {
		t.Errorf("the decided request's page: want approved with its reason and no decision form: %s", after.body)
	}
	commented := b.post("/admin/approvals/"+reqA+"/comment", url.Values{"csrf": {csrf}, "idem": {after.field(t, "idem")}, "comment": {"Registration queued"}})
	if commented.status != http.StatusSeeOther {
		t.Fatalf("comment: %d %s", commented.status, commented.body)
	}
	if p := b.get("/admin/approvals/" + reqA); !strings.Contains(p.body, "Registration queued") {
		t.Errorf("the comment is not in the history: %s", p.body)
	}

	queue = b.get("/admin/approvals")
	if strings.Contains(queue.body, `value="`+reqA+`"`) {
		t.Errorf("the open queue still offers the approved request")
	}
	bulk := b.post("/admin/approvals/bulk", url.Values{"csrf": {csrf}, "idem": {queue.field(t, "idem")}, "ids": {reqB, reqA},
		"action": {"reject"}, "reason": {"Missing documentation"}})
	if bulk.status != http.StatusOK || !regexp.MustCompile(`Admin Review Tides:\s*<span class="state state-active">done</span>`).MatchString(bulk.body) ||
		!regexp.MustCompile(`Admin Review Weather:\s*<span class="state state-rejected">not done</span>`).MatchString(bulk.body) {
		t.Fatalf("bulk reject: %d; want Tides done and Weather (already decided) refused: %s", bulk.status, bulk.body)
	}
	if st := pp.apiState(apiB); st != "rejected" {
		t.Errorf("the API rejected in bulk is %s; want rejected", st)
	}
	if p := b.post("/admin/approvals/bulk", url.Values{"csrf": {csrf}, "action": {"approve"}}); p.status != http.StatusUnprocessableEntity ||
		!strings.Contains(p.body, "ids: select at least one request") {
		t.Errorf("bulk form without a selection: %d; want 422 saying so", p.status)
	}

	audit := b.get("/admin/audit")
	if audit.status != http.StatusOK || !strings.Contains(audit.body, "approval.approve") || !strings.Contains(audit.body, "approval.reject") {
		t.Fatalf("audit log: %d; want both decisions: %s", audit.status, audit.body)
	}
	rejects := b.get("/admin/audit?action=approval.reject")
	if !strings.Contains(rejects.body, "<code>approval.reject</code>") || strings.Contains(rejects.body, "<code>approval.approve</code>") {
		t.Errorf("the action filter does not narrow the list: %s", rejects.body)
	}
	if p := b.get("/admin/audit?actor=dana&action=approval.approve"); !strings.Contains(p.body, "No entry matches this filter") {
		t.Errorf("the actor filter lists the admin's decision under the provider: %s", p.body)
	}
	if p := b.get("/admin/audit?actor=ops&target_type=approval&target_id=" + reqA); !strings.Contains(p.body, "<code>approval.approve</code>") ||
		strings.Contains(p.body, "<code>approval.reject</code>") {
		t.Errorf("the actor and resource filters do not find the approval: %s", p.body)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	if p := b.get("/admin/audit?since=" + today + "&until=" + today + "&action=approval.approve"); !strings.Contains(p.body, "<code>approval.approve</code>") {
		t.Errorf("today's range does not list today's decision: %s", p.body)
	}
	if p := b.get("/admin/audit?until=2001-01-01"); !strings.Contains(p.body, "No entry matches this filter") {
		t.Errorf("a range in 2000 lists entries: %s", p.body)
	}
	if p := b.get("/admin/audit?since=soon"); p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="a-since-error"`) {
		t.Errorf("an unreadable date: %d; want 422 next to the field", p.status)
	}

	// 50 entries a page: the admin's comment is the 51st newest comment.
	for i := range 50 {
		pp.api(devPersonas()[1].Principal, http.MethodPost, "/v1/approvals/"+reqB+"/comments", map[string]any{"comment": fmt.Sprintf("note %d", i)}, nil)
	}
	first := b.get("/admin/audit?action=approval.comment")
	older := regexp.MustCompile(`href="(/admin/audit\?[^"]*cursor=[0-9]+[^"]*)">Older entries`).FindStringSubmatch(first.body)
	if older == nil || strings.Contains(first.body, "Registration queued") {
		t.Fatalf("the first page of comments: want 50 and a link to older entries: %s", first.body)
	}
	second := b.get(strings.ReplaceAll(older[1], "&amp;", "&"))
	if !strings.Contains(second.body, "Registration queued") || strings.Contains(second.body, "note 49") || strings.Contains(second.body, "Older entries") {
		t.Errorf("the second page of comments: want the admin's comment alone: %s", second.body)
	}
}

// TestPortalAdminOperations: the admin runs the key reconciliation and
// sees its report, reads the pipeline's health, and adds a tax rule and a
// platform fee for the provider's organization through the forms, which
// REST then reads back; a bad rate is refused next to its field.
func TestPortalAdminOperations(t *testing.T) {
	pp := newPortalPlane(t)
	_, org, _ := pp.submittedAPI("Admin Tax Weather", "normal")

	b := pp.browser()
	b.signIn("admin")
	rec := b.get("/admin/reconciliation")
	if rec.status != http.StatusOK || !strings.Contains(rec.body, "Keys and subscriptions") || !strings.Contains(rec.body, "No report yet") {
		t.Fatalf("reconciliation page: %d %s", rec.status, rec.body)
	}
	csrf := rec.field(t, "csrf")
	ran := b.post("/admin/reconciliation/keys", url.Values{"csrf": {csrf}})
	if ran.status != http.StatusSeeOther {
		t.Fatalf("run the key reconciliation: %d %s", ran.status, ran.body)
	}
	report := b.get(ran.header.Get("Location"))
	if !strings.Contains(report.body, "Just run.") || !strings.Contains(report.body, "<dt>Keys checked</dt>") || !strings.Contains(report.body, "by ops") {
		t.Errorf("the key reconciliation's report does not show: %s", report.body)
	}
	if p := b.post("/admin/reconciliation/everything", url.Values{"csrf": {csrf}}); p.status != http.StatusNotFound {
		t.Errorf("an unknown reconciliation: %d; want 404", p.status)
	}

	pipe := b.get("/admin/pipeline")
	if pipe.status != http.StatusOK || !strings.Contains(pipe.body, "Pipeline health") || !strings.Contains(pipe.body, "1 request waiting") {
		t.Fatalf("pipeline page: %d; want the overview with the one pending request: %s", pipe.status, pipe.body)
	}
	if m := regexp.MustCompile(`(?s)<script type="application/json" id="chart-volume">(.*?)</script>`).FindStringSubmatch(pipe.body); m != nil {
		var chart struct {
			X      []int64 `json:"x"`
			Series []struct {
				Label  string    `json:"label"`
				Values []float64 `json:"values"`
			} `json:"series"`
		}
		if err := json.Unmarshal([]byte(m[1]), &chart); err != nil || len(chart.Series) != 1 || len(chart.Series[0].Values) != len(chart.X) {
			t.Errorf("the volume chart's data = %s (%v); want JSON with one series as long as x", m[1], err)
		}
	} else if !strings.Contains(pipe.body, "The call volume is unavailable") {
		t.Errorf("the pipeline page has neither the volume chart nor why not: %s", pipe.body)
	}

	tax := b.get("/admin/tax")
	if !strings.Contains(tax.body, `<option value="`+org+`"`) || !strings.Contains(tax.body, "Admin Tax Weather") {
		t.Fatalf("the tax page does not offer the provider's organization: %s", tax.body)
	}
	orgPage := b.get("/admin/tax?org=" + org)
	if orgPage.status != http.StatusOK || !strings.Contains(orgPage.body, "No tax rule") {
		t.Fatalf("the organization's tax page: %d %s", orgPage.status, orgPage.body)
	}
	form := url.Values{"csrf": {csrf}, "idem": {orgPage.field(t, "idem")}, "country": {"de"}, "name": {"MwSt"}, "rate_percent": {"nineteen"}, "reverse_charge": {"1"}}
	bad := b.post("/admin/tax/"+org+"/rules", form)
	if bad.status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, `id="tax-rate-error"`) || !strings.Contains(bad.body, `value="MwSt"`) {
		t.Fatalf("a bad rate: %d; want 422 next to the field with the form kept: %s", bad.status, bad.body)
	}
	form.Set("rate_percent", "19")
	form.Set("effective_from", "2025-01-01")
	created := b.post("/admin/tax/"+org+"/rules", form)
	if created.status != http.StatusSeeOther {
		t.Fatalf("create a tax rule: %d %s", created.status, created.body)
	}
	var rules struct {
		Data []struct {
			ID, Country, Name string
			RatePercent       string    `json:"rate_percent"`
			ReverseCharge     bool      `json:"reverse_charge"`
			EffectiveFrom     time.Time `json:"effective_from"`
		}
	}
	pp.api(devPersonas()[1].Principal, http.MethodGet, "/v1/organizations/"+org+"/tax-rules", nil, &rules)
	if len(rules.Data) != 1 || rules.Data[0].Country != "DE" || rules.Data[0].Name != "MwSt" || rules.Data[0].RatePercent != "19" ||
		!rules.Data[0].ReverseCharge || !rules.Data[0].EffectiveFrom.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("tax rules through REST = %+v; want DE MwSt 19%% from 2025-01-01 with reverse charge", rules.Data)
	}
	listed := b.get("/admin/tax?org=" + org)
	if !strings.Contains(listed.body, "<td>19%</td>") || !strings.Contains(listed.body, "edit="+rules.Data[0].ID) {
		t.Errorf("the tax page does not list the rule with a change link: %s", listed.body)
	}
	change := b.get("/admin/tax?org=" + org + "&edit=" + rules.Data[0].ID)
	if !strings.Contains(change.body, "Change the MwSt rule of DE") || !strings.Contains(change.body, `name="rate_percent" value="19"`) {
		t.Errorf("the change form is not filled with the rule: %s", change.body)
	}

	fee := b.post("/admin/tax/"+org+"/fee", url.Values{"csrf": {csrf}, "platform_fee_percent": {"2.5"}})
	if fee.status != http.StatusSeeOther {
		t.Fatalf("set the platform fee: %d %s", fee.status, fee.body)
	}
	var settings struct {
		Fee string `json:"platform_fee_percent"`
	}
	pp.api(devPersonas()[1].Principal, http.MethodGet, "/v1/organizations/"+org+"/billing-settings", nil, &settings)
	if settings.Fee != "2.5" {
		t.Errorf("platform fee through REST = %q; want 2.5", settings.Fee)
	}
	if p := b.post("/admin/tax/"+org+"/fee", url.Values{"csrf": {csrf}, "platform_fee_percent": {"150"}}); p.status != http.StatusUnprocessableEntity ||
		!strings.Contains(p.body, `id="fee-error"`) {
		t.Errorf("a fee of 150%%: %d; want 422 next to the field: %s", p.status, p.body)
	}
}
