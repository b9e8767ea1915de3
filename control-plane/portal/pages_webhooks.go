package portal

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// endpointView is a webhook endpoint as the API answers it; Secret only in
// the answer that created it.
type endpointView struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Description string    `json:"description"`
	EventTypes  []string  `json:"event_types"`
	Enabled     bool      `json:"enabled"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Secret      string    `json:"secret"`
}

// deliveryView is one event on its way to an endpoint.
type deliveryView struct {
	ID             string          `json:"id"`
	EndpointID     string          `json:"endpoint_id"`
	MessageID      string          `json:"message_id"`
	EventType      string          `json:"event_type"`
	Payload        json.RawMessage `json:"payload"`
	Status         string          `json:"status"`
	Attempts       int             `json:"attempts"`
	LastStatusCode *int            `json:"last_status_code"`
	LastError      string          `json:"last_error"`
	CreatedAt      time.Time       `json:"created_at"`
	DeliveredAt    *time.Time      `json:"delivered_at"`
	History        []struct {
		StatusCode *int      `json:"status_code"`
		Error      string    `json:"error"`
		DurationMS int64     `json:"duration_ms"`
		CreatedAt  time.Time `json:"created_at"`
	} `json:"history"`
}

// PayloadText is the payload indented, for reading.
func (d deliveryView) PayloadText() string {
	var v any
	if json.Unmarshal(d.Payload, &v) != nil {
		return string(d.Payload)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return string(d.Payload)
	}
	return string(b)
}

// webhookForm is what the create form sent.
type webhookForm struct {
	URL, Description string
	EventTypes       []string
}

// Has says whether the form has event type t checked.
func (f webhookForm) Has(t string) bool { return slices.Contains(f.EventTypes, t) }

type webhooksPage struct {
	Endpoints  []endpointView
	EventTypes []string
	Form       webhookForm
	// Created is the endpoint this request created, with its secret,
	// shown once.
	Created *endpointView
	Idem    string
}

func (p *portal) webhooksPage(w http.ResponseWriter, r *http.Request) {
	p.showWebhooks(w, r, http.StatusOK, webhookForm{}, nil, nil)
}

// showWebhooks renders the endpoints and the create form holding form,
// with an endpoint just created (its secret shown once) or the problem of
// the form that was sent.
func (p *portal) showWebhooks(w http.ResponseWriter, r *http.Request, status int, form webhookForm, created *endpointView, pr *Problem) {
	out := webhooksPage{Form: form, Created: created, Idem: formKey()}
	var list page[endpointView]
	if err := p.api.get(r, "/v1/webhooks", url.Values{"limit": {"100"}}, &list); err != nil {
		p.failAPI(w, r, err)
		return
	}
	var types page[string]
	if err := p.api.get(r, "/v1/webhooks/event-types", nil, &types); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Endpoints, out.EventTypes = list.Data, types.Data
	if created != nil {
		// The secret is on this page alone: never kept by a cache.
		w.Header().Set("Cache-Control", "no-store")
	}
	p.render(w, r, status, "webhooks", view{Title: "Webhooks", Nav: "webhooks", Data: out, Problem: pr})
}

// createWebhook registers an endpoint and shows its signing secret once.
func (p *portal) createWebhook(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		p.fail(w, r, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return
	}
	form := webhookForm{URL: strings.TrimSpace(r.PostForm.Get("url")), Description: strings.TrimSpace(r.PostForm.Get("description")),
		EventTypes: r.PostForm["event_types"]}
	if form.Has("*") {
		form.EventTypes = []string{"*"}
	}
	in := map[string]any{"url": form.URL, "description": form.Description, "event_types": form.EventTypes}
	if form.EventTypes == nil {
		in["event_types"] = []string{}
	}
	var out endpointView
	if err := p.api.post(r, "/v1/webhooks", idemOf(r), in, &out); err != nil {
		if pr, ok := consumerRefusal(err); ok {
			p.showWebhooks(w, r, pr.Status, form, nil, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	p.showWebhooks(w, r, http.StatusCreated, webhookForm{}, &out, nil)
}

type webhookPage struct {
	Endpoint   endpointView
	Deliveries []deliveryView
	Next       string
	// Secret is a secret this request rotated to, shown once.
	Secret string
}

func (p *portal) webhookPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.noSuch(w, r, "webhook endpoint")
		return
	}
	p.showWebhook(w, r, id, http.StatusOK, "", nil)
}

// showWebhook renders an endpoint with its deliveries, a secret it was
// just given (shown once) or the problem of a form that was sent.
func (p *portal) showWebhook(w http.ResponseWriter, r *http.Request, id string, status int, secret string, pr *Problem) {
	out := webhookPage{Secret: secret}
	if err := p.api.get(r, "/v1/webhooks/"+id, nil, &out.Endpoint); err != nil {
		p.failAPI(w, r, err)
		return
	}
	q := url.Values{"limit": {"50"}}
	if c := r.URL.Query().Get("cursor"); cursorPattern.MatchString(c) {
		q.Set("cursor", c)
	}
	var list page[deliveryView]
	if err := p.api.get(r, "/v1/webhooks/"+id+"/deliveries", q, &list); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Deliveries, out.Next = list.Data, list.NextCursor
	if secret != "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	p.render(w, r, status, "webhooks_endpoint", view{Title: "Webhook endpoint", Nav: "webhooks", Data: out, Problem: pr})
}

// webhookAction enables, disables or deletes an endpoint, or rotates its
// secret (shown once).
func (p *portal) webhookAction(w http.ResponseWriter, r *http.Request) {
	id, action := pathID(r), chi.URLParam(r, "action")
	if id == "" {
		p.noSuch(w, r, "webhook endpoint")
		return
	}
	var err error
	switch action {
	case "enable", "disable":
		err = p.api.patch(r, "/v1/webhooks/"+id, map[string]any{"enabled": action == "enable"}, nil)
	case "delete":
		if err = p.api.delete(r, "/v1/webhooks/"+id); err == nil {
			http.Redirect(w, r, "/webhooks", http.StatusSeeOther)
			return
		}
	case "rotate-secret":
		var out struct {
			Secret string `json:"secret"`
		}
		if err = p.api.post(r, "/v1/webhooks/"+id+"/rotate-secret", idemOf(r), nil, &out); err == nil {
			p.showWebhook(w, r, id, http.StatusOK, out.Secret, nil)
			return
		}
	default:
		p.noSuch(w, r, "webhook action")
		return
	}
	if err != nil {
		if pr, ok := consumerRefusal(err); ok {
			p.showWebhook(w, r, id, pr.Status, "", pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/webhooks/"+id, http.StatusSeeOther)
}

// deliveryIDs are the path's endpoint and delivery ids, "" if either is
// not a UUID.
func deliveryIDs(r *http.Request) (endpoint, delivery string) {
	endpoint, delivery = pathID(r), chi.URLParam(r, "delivery")
	if endpoint == "" || !uuidPattern.MatchString(delivery) {
		return "", ""
	}
	return endpoint, delivery
}

type deliveryPage struct {
	Endpoint endpointView
	Delivery deliveryView
}

// deliveryPage shows a delivery with its payload and every attempt.
func (p *portal) deliveryPage(w http.ResponseWriter, r *http.Request) {
	id, del := deliveryIDs(r)
	if id == "" {
		p.noSuch(w, r, "delivery")
		return
	}
	var out deliveryPage
	if err := p.api.get(r, "/v1/webhooks/"+id, nil, &out.Endpoint); err != nil {
		p.failAPI(w, r, err)
		return
	}
	if err := p.api.get(r, "/v1/webhooks/"+id+"/deliveries/"+del, nil, &out.Delivery); err != nil {
		p.failAPI(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "webhooks_delivery", view{Title: "Delivery " + out.Delivery.MessageID, Nav: "webhooks", Data: out})
}

// redeliver sends a delivery again.
func (p *portal) redeliver(w http.ResponseWriter, r *http.Request) {
	id, del := deliveryIDs(r)
	if id == "" {
		p.noSuch(w, r, "delivery")
		return
	}
	if err := p.api.post(r, "/v1/webhooks/"+id+"/deliveries/"+del+"/redeliver", idemOf(r), nil, nil); err != nil {
		if pr, ok := consumerRefusal(err); ok {
			p.showWebhook(w, r, id, pr.Status, "", pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/webhooks/"+id+"/deliveries/"+del, http.StatusSeeOther)
}
