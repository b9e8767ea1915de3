package portal

import (
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// adminRoutes are the admins' pages, under /admin: the approval queue,
// the reconciliation reports, the audit log, the pipeline's health, and
// the issuers' tax rules and platform fees.
func (p *portal) adminRoutes(r chi.Router) {
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/approvals", http.StatusSeeOther)
	})
	r.Get("/approvals", p.adminApprovals)
	r.Post("/approvals/bulk", p.adminBulkDecide)
	r.Get("/approvals/{id}", p.adminApprovalPage)
	r.Post("/approvals/{id}/decide", p.adminDecide)
	r.Post("/approvals/{id}/comment", p.adminComment)
	r.Get("/reconciliation", p.adminReconciliation)
	r.Post("/reconciliation/{kind}", p.adminRunReconciliation)
	r.Get("/audit", p.adminAudit)
	r.Get("/pipeline", p.adminPipeline)
	r.Get("/tax", p.adminTax)
	r.Post("/tax/{id}/rules", p.adminCreateTaxRule)
	r.Post("/tax/{id}/rules/{rule}/delete", p.adminDeleteTaxRule)
	r.Post("/tax/{id}/fee", p.adminPlatformFee)
}

// adminFormProblem is the API's refusal of a form that the form's page
// shows next to its fields: a 4xx other than 401, 403 and 404, which are
// the error page's.
func adminFormProblem(err error) (*Problem, bool) {
	pr, ok := asProblem(err)
	if !ok || pr.Status >= 500 || pr.Status == http.StatusUnauthorized || pr.Status == http.StatusForbidden || pr.Status == http.StatusNotFound {
		return nil, false
	}
	return pr, true
}

// adminInvalid is a problem the portal finds in a form before sending it
// (a date it cannot read), shown as the API's would be.
func adminInvalid(field, detail string) *Problem {
	return &Problem{Status: http.StatusUnprocessableEntity, Title: "Invalid request", Detail: "Check the fields below.",
		Errors: []FieldError{{Field: field, Detail: detail}}}
}

// adminDuration writes d in its two largest units: "3d 4h", "2h 5m",
// "45m", "under a minute".
func adminDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	days, hours, mins := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, hours)
	case hours > 0:
		return fmt.Sprintf("%dh %dm", hours, mins)
	case mins > 0:
		return fmt.Sprintf("%dm", mins)
	default:
		return "under a minute"
	}
}

// adminChart is the JSON a chart's <script type="application/json">
// holds for portal.js (html/template writes it escaped for a script).
type adminChart struct {
	ID     string             `json:"-"`
	Title  string             `json:"-"`
	X      []int64            `json:"x"`
	Series []adminChartSeries `json:"series"`
	Y      string             `json:"y"`
	Bars   bool               `json:"bars"`
}

type adminChartSeries struct {
	Label  string    `json:"label"`
	Values []float64 `json:"values"`
}
