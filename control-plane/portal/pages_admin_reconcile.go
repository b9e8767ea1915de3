package portal

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"
)

// adminReconcileKinds are the reconciliations an admin can run, in the
// page's order: the gateway's routes, its key and subscription records,
// the usage counters.
var adminReconcileKinds = []string{"apis", "keys", "usage"}

// adminReconcile is one reconciliation's card: what it does and its last
// report.
type adminReconcile struct {
	Kind, Title, About string
	// At and By are the last run's, when one is known.
	At time.Time
	By string
	// Facts are the last report's counts; Unhealed what it could not
	// repair; Drift the usage report's drifted subscriptions.
	Facts    []adminCount
	Unhealed []string
	Drift    []adminUsageDrift
	// Missing says why there is no report to show.
	Missing string
}

// adminAuditEntry is an audit log entry as the API answers it.
type adminAuditEntry struct {
	ID             int64           `json:"id"`
	CreatedAt      time.Time       `json:"created_at"`
	Actor          string          `json:"actor"`
	ActorRole      string          `json:"actor_role"`
	OrganizationID *string         `json:"organization_id"`
	Action         string          `json:"action"`
	TargetType     string          `json:"target_type"`
	TargetID       string          `json:"target_id"`
	Before         json.RawMessage `json:"before"`
	After          json.RawMessage `json:"after"`
	SourceIP       string          `json:"source_ip"`
	UserAgent      string          `json:"user_agent"`
	RequestID      string          `json:"request_id"`
}

type adminGatewayReport struct {
	Checked    int      `json:"checked"`
	Missing    int      `json:"missing"`
	Mismatched int      `json:"mismatched"`
	Orphans    int      `json:"orphans"`
	Requeued   int      `json:"requeued"`
	Refused    int      `json:"refused"`
	Healed     int      `json:"healed"`
	Unhealed   []string `json:"unhealed"`
}

type adminKeysReport struct {
	KeysChecked            int `json:"keys_checked"`
	Missing                int `json:"missing"`
	Different              int `json:"different"`
	Orphaned               int `json:"orphaned"`
	Corrupt                int `json:"corrupt"`
	SubscriptionsChecked   int `json:"subscriptions_checked"`
	SubscriptionsMissing   int `json:"subscriptions_missing"`
	SubscriptionsDifferent int `json:"subscriptions_different"`
	Healed                 int `json:"healed"`
	Unhealed               []struct {
		Kind  string `json:"kind"`
		ID    string `json:"id"`
		Error string `json:"error"`
	} `json:"unhealed"`
}

type adminUsageReport struct {
	StartedAt  time.Time         `json:"started_at"`
	FinishedAt time.Time         `json:"finished_at"`
	Checked    int               `json:"checked"`
	InFlight   int               `json:"in_flight"`
	Drifted    int               `json:"drifted"`
	Healed     int               `json:"healed"`
	Drift      []adminUsageDrift `json:"drift"`
	MeterDrift []json.RawMessage `json:"meter_drift"`
	Unhealed   []struct {
		SubscriptionID string `json:"subscription_id"`
		Reason         string `json:"reason"`
	} `json:"unhealed"`
}

type adminUsageDrift struct {
	SubscriptionID     string `json:"subscription_id"`
	RedisRequests      int64  `json:"redis_requests"`
	ClickHouseRequests int64  `json:"clickhouse_requests"`
	RedisUnits         string `json:"redis_units"`
	ClickHouseUnits    string `json:"clickhouse_units"`
	Healed             bool   `json:"healed"`
}

// lastGatewayRun is the last audited result of the API or key
// reconciliation (the API keeps no other record of it).
func (p *portal) lastGatewayRun(r *http.Request, kind string, c *adminReconcile) error {
	var list page[adminAuditEntry]
	q := url.Values{"action": {"gateway.reconcile.result"}, "target_type": {"gateway"}, "target_id": {kind}, "limit": {"1"}}
	if err := p.api.get(r, "/v1/audit", q, &list); err != nil {
		return err
	}
	if len(list.Data) == 0 {
		c.Missing = "Runs started here keep a report; the scheduled runs do not."
		return nil
	}
	e := list.Data[0]
	c.At, c.By = e.CreatedAt, e.Actor
	switch kind {
	case "apis":
		var rep adminGatewayReport
		if err := json.Unmarshal(e.After, &rep); err != nil {
			c.Missing = "The last report could not be read."
			return nil
		}
		c.Facts = []adminCount{{"APIs checked", rep.Checked}, {"Routes missing", rep.Missing}, {"Routes different", rep.Mismatched},
			{"Orphan routes", rep.Orphans}, {"Registrations queued again", rep.Requeued}, {"Suspended (upstream refused)", rep.Refused}, {"Healed", rep.Healed}}
		c.Unhealed = rep.Unhealed
	case "keys":
		var rep adminKeysReport
		if err := json.Unmarshal(e.After, &rep); err != nil {
			c.Missing = "The last report could not be read."
			return nil
		}
		c.Facts = []adminCount{{"Keys checked", rep.KeysChecked}, {"Keys missing", rep.Missing}, {"Keys different", rep.Different},
			{"Orphan records", rep.Orphaned}, {"Corrupt records", rep.Corrupt}, {"Subscriptions checked", rep.SubscriptionsChecked},
			{"Subscriptions missing", rep.SubscriptionsMissing}, {"Subscriptions different", rep.SubscriptionsDifferent}, {"Healed", rep.Healed}}
		for _, u := range rep.Unhealed {
			c.Unhealed = append(c.Unhealed, u.Kind+" "+u.ID+": "+u.Error)
		}
	}
	return nil
}

// lastUsageRun is the usage reconciliation's last report.
func (p *portal) lastUsageRun(r *http.Request, c *adminReconcile) error {
	var rep adminUsageReport
	if err := p.api.get(r, "/v1/admin/reconcile/usage", nil, &rep); err != nil {
		pr, ok := asProblem(err)
		if !ok || pr.Status == http.StatusUnauthorized || pr.Status == http.StatusForbidden {
			return err
		}
		// None yet (404), or the usage stores are not configured.
		if pr.Status != http.StatusNotFound {
			c.Missing = pr.Title
			if pr.Detail != "" {
				c.Missing += ": " + pr.Detail
			}
		}
		return nil
	}
	c.At = rep.FinishedAt
	c.Facts = []adminCount{{"Subscriptions checked", rep.Checked}, {"Left for the next run (in flight)", rep.InFlight},
		{"Drifted", rep.Drifted}, {"Healed", rep.Healed}, {"Meter counters drifted", len(rep.MeterDrift)}}
	c.Drift = rep.Drift
	for _, u := range rep.Unhealed {
		c.Unhealed = append(c.Unhealed, "subscription "+u.SubscriptionID+": "+u.Reason)
	}
	return nil
}

type adminReconcilePage struct {
	Runs []adminReconcile
	// Ran is the kind just run, whose card the page points to.
	Ran string
}

func (p *portal) adminReconciliation(w http.ResponseWriter, r *http.Request) {
	p.showReconciliation(w, r, http.StatusOK, r.URL.Query().Get("ran"), nil)
}

func (p *portal) showReconciliation(w http.ResponseWriter, r *http.Request, status int, ran string, pr *Problem) {
	out := adminReconcilePage{Runs: []adminReconcile{
		{Kind: "apis", Title: "APIs and gateway routes", About: "Compares the APIs that should be served with the gateway's routes, puts missing or different routes again, removes orphans and queues lost registrations again."},
		{Kind: "keys", Title: "Keys and subscriptions", About: "Compares every key and subscription in Postgres with the gateway's records in Redis and repairs those missing, different or orphaned."},
		{Kind: "usage", Title: "Usage counters", About: "Compares each live subscription's period counters in Redis with the usage in ClickHouse and heals the drift."},
	}}
	for i := range out.Runs {
		c := &out.Runs[i]
		var err error
		if c.Kind == "usage" {
			err = p.lastUsageRun(r, c)
		} else {
			err = p.lastGatewayRun(r, c.Kind, c)
		}
		if err != nil {
			p.failAPI(w, r, err)
			return
		}
	}
	for _, k := range adminReconcileKinds {
		if k == ran {
			out.Ran = ran
		}
	}
	p.render(w, r, status, "admin_reconciliation", view{Title: "Reconciliation", Nav: "reconciliation", Data: out, Problem: pr})
}

// adminRunReconciliation runs one reconciliation now, then shows its
// report; a run that fails shows why above the reports.
func (p *portal) adminRunReconciliation(w http.ResponseWriter, r *http.Request) {
	kind := chi.URLParam(r, "kind")
	known := false
	for _, k := range adminReconcileKinds {
		known = known || k == kind
	}
	if !known {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such reconciliation.")
		return
	}
	if err := p.api.post(r, "/v1/admin/reconcile/"+kind, "", nil, nil); err != nil {
		pr, ok := asProblem(err)
		if !ok || pr.Status == http.StatusUnauthorized || pr.Status == http.StatusForbidden {
			p.failAPI(w, r, err)
			return
		}
		if pr.Title == "" {
			pr.Title = "The reconciliation failed"
		}
		p.showReconciliation(w, r, pr.Status, kind, pr)
		return
	}
	http.Redirect(w, r, "/admin/reconciliation?ran="+url.QueryEscape(kind)+"#run-"+kind, http.StatusSeeOther)
}
