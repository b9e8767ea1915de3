package portal

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// subscriptionView is what the pages show of a subscription.
type subscriptionView struct {
	ID                 string     `json:"id"`
	APIID              string     `json:"api_id"`
	PlanID             string     `json:"plan_id"`
	PlanVersion        int        `json:"plan_version"`
	Status             string     `json:"status"`
	TrialEndsAt        *time.Time `json:"trial_ends_at"`
	CurrentPeriodStart time.Time  `json:"current_period_start"`
	CurrentPeriodEnd   time.Time  `json:"current_period_end"`
	CancelAtPeriodEnd  bool       `json:"cancel_at_period_end"`
	MaxActiveKeys      int        `json:"max_active_keys"`
	CreatedAt          time.Time  `json:"created_at"`
}

// keyView is what the pages show of a key.
type keyView struct {
	ID             string     `json:"id"`
	SubscriptionID string     `json:"subscription_id"`
	Name           string     `json:"name"`
	Masked         string     `json:"masked"`
	State          string     `json:"state"`
	ExpiresAt      *time.Time `json:"expires_at"`
	CreatedAt      time.Time  `json:"created_at"`
	// Key is the plaintext, in the answer that issued it only.
	Key string `json:"key"`
}

// quotaView is what the pages show of a subscription's quota.
type quotaView struct {
	Unlimited    bool       `json:"unlimited"`
	Limit        *int64     `json:"limit"`
	Used         int64      `json:"used"`
	Remaining    *int64     `json:"remaining"`
	Hard         bool       `json:"hard"`
	Blocked      bool       `json:"blocked"`
	BlockedUntil *time.Time `json:"blocked_until"`
	ResetsAt     time.Time  `json:"resets_at"`
}

// Percent is the share of the limit used, 0 to 100.
func (q quotaView) Percent() int64 {
	if q.Unlimited || q.Limit == nil || *q.Limit <= 0 {
		return 0
	}
	return min(100, q.Used*100 / *q.Limit)
}

func (p *portal) subscriptionRoutes(r chi.Router) {
	r.Post("/catalog/{id}/subscribe", p.subscribe)
	r.Get("/subscriptions", p.subscriptions)
	r.Get("/subscriptions/{id}", p.subscriptionPage)
	r.Post("/subscriptions/{id}/keys", p.issueKey)
	r.Post("/keys/{id}/{action}", p.keyAction)
}

// formKey is a fresh idempotency key for a form.
func formKey() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// formKeyPattern is what a form's idempotency key looks like (formKey).
var formKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{24}$`)

// idemOf is the form's idempotency key, or "" when it has none (a form
// that is not ours).
func idemOf(r *http.Request) string {
	if k := r.PostFormValue("idem"); formKeyPattern.MatchString(k) {
		return k
	}
	return ""
}

// pathID is the page path's {id}, a UUID, or "" (the caller answers 404).
func pathID(r *http.Request) string {
	if id := chi.URLParam(r, "id"); uuidPattern.MatchString(id) {
		return id
	}
	return ""
}

// subscribe subscribes the user's organization to a plan of the API, with
// a promotion code if one was given.
func (p *portal) subscribe(w http.ResponseWriter, r *http.Request) {
	apiID := pathID(r)
	if apiID == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	in := map[string]any{"plan_id": r.PostFormValue("plan_id")}
	if code := strings.TrimSpace(r.PostFormValue("promotion_code")); code != "" {
		in["promotion_codes"] = []string{code}
	}
	var out subscriptionView
	if err := p.api.post(r, "/v1/subscriptions", idemOf(r), in, &out); err != nil {
		pr, ok := asProblem(err)
		if !ok || pr.Status >= 500 || pr.Status == http.StatusForbidden || pr.Status == http.StatusUnauthorized {
			p.failAPI(w, r, err)
			return
		}
		p.renderAPI(w, r, apiID, pr)
		return
	}
	http.Redirect(w, r, "/subscriptions/"+out.ID, http.StatusSeeOther)
}

type subscriptionRow struct {
	Sub     subscriptionView
	APIName string
}

func (p *portal) subscriptions(w http.ResponseWriter, r *http.Request) {
	var list page[subscriptionView]
	if err := p.api.get(r, "/v1/subscriptions", url.Values{"limit": {"100"}}, &list); err != nil {
		p.failAPI(w, r, err)
		return
	}
	names := map[string]string{}
	var rows []subscriptionRow
	for _, s := range list.Data {
		name, ok := names[s.APIID]
		if !ok {
			var a apiView
			if err := p.api.get(r, "/v1/apis/"+s.APIID, nil, &a); err == nil {
				name = a.Name
			}
			names[s.APIID] = name
		}
		rows = append(rows, subscriptionRow{Sub: s, APIName: name})
	}
	p.render(w, r, http.StatusOK, "subscriptions", view{Title: "Subscriptions", Nav: "subscriptions", Data: rows})
}

type subscriptionPage struct {
	Sub   subscriptionView
	API   apiView
	Plan  planView
	Quota quotaView
	Keys  []keyView
	// Issued is a key issued or rotated by this request, with its
	// plaintext, shown once.
	Issued *keyView
	Idem   string
}

// loadSubscription reads what the subscription page shows.
func (p *portal) loadSubscription(r *http.Request, id string) (subscriptionPage, error) {
	var out subscriptionPage
	if err := p.api.get(r, "/v1/subscriptions/"+id, nil, &out.Sub); err != nil {
		return out, err
	}
	if err := p.api.get(r, "/v1/apis/"+out.Sub.APIID, nil, &out.API); err != nil {
		return out, err
	}
	if err := p.api.get(r, "/v1/plans/"+out.Sub.PlanID, nil, &out.Plan); err != nil {
		return out, err
	}
	if err := p.api.get(r, "/v1/subscriptions/"+id+"/quota", nil, &out.Quota); err != nil {
		return out, err
	}
	var keys page[keyView]
	if err := p.api.get(r, "/v1/subscriptions/"+id+"/keys", url.Values{"limit": {"100"}}, &keys); err != nil {
		return out, err
	}
	out.Keys, out.Idem = keys.Data, formKey()
	return out, nil
}

func (p *portal) subscriptionPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such subscription.")
		return
	}
	p.showSubscription(w, r, id, http.StatusOK, nil, nil)
}

// showSubscription renders subscription id's page, with a key just issued
// (shown once) or a problem of the form that was sent.
func (p *portal) showSubscription(w http.ResponseWriter, r *http.Request, id string, status int, issued *keyView, pr *Problem) {
	out, err := p.loadSubscription(r, id)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Issued = issued
	if issued != nil {
		// The plaintext is on this page alone: never kept by a cache.
		w.Header().Set("Cache-Control", "no-store")
	}
	p.render(w, r, status, "subscription", view{Title: out.API.Name, Nav: "subscriptions", Data: out, Problem: pr})
}

// issueKey issues a key and shows its plaintext once.
func (p *portal) issueKey(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such subscription.")
		return
	}
	var out keyView
	in := map[string]any{"name": strings.TrimSpace(r.PostFormValue("name"))}
	if err := p.api.post(r, "/v1/subscriptions/"+id+"/keys", idemOf(r), in, &out); err != nil {
		if pr, ok := asProblem(err); ok && pr.Status < 500 && pr.Status != http.StatusNotFound && pr.Status != http.StatusForbidden {
			p.showSubscription(w, r, id, pr.Status, nil, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	p.showSubscription(w, r, id, http.StatusCreated, &out, nil)
}

// keyActions are what a key's buttons do.
var keyActions = map[string]bool{"suspend": true, "resume": true, "revoke": true, "rotate": true}

// keyAction suspends, resumes, revokes or rotates a key, then shows its
// subscription (with the successor's plaintext after a rotation).
func (p *portal) keyAction(w http.ResponseWriter, r *http.Request) {
	id, action := pathID(r), chi.URLParam(r, "action")
	if id == "" || !keyActions[action] {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such key action.")
		return
	}
	var key keyView
	if err := p.api.get(r, "/v1/keys/"+id, nil, &key); err != nil {
		p.failAPI(w, r, err)
		return
	}
	var out keyView
	var in any
	if action != "rotate" {
		in = map[string]any{}
	}
	if err := p.api.post(r, "/v1/keys/"+id+"/"+action, idemOf(r), in, &out); err != nil {
		pr, ok := asProblem(err)
		if !ok || pr.Status >= 500 || pr.Status == http.StatusNotFound || pr.Status == http.StatusForbidden {
			p.failAPI(w, r, err)
			return
		}
		p.showSubscription(w, r, key.SubscriptionID, pr.Status, nil, pr)
		return
	}
	if action == "rotate" {
		p.showSubscription(w, r, key.SubscriptionID, http.StatusCreated, &out, nil)
		return
	}
	http.Redirect(w, r, "/subscriptions/"+key.SubscriptionID, http.StatusSeeOther)
}
