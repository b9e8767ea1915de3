package httpapi

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/metering"
)

// analyticsRoutes: consumer analytics of a subscription or a key, and
// usage exports of a subscription or an API.
func (a *api) analyticsRoutes(r chi.Router) {
	r.Get(idPath("/v1/subscriptions/{id}/analytics"), a.billingHandle(a.subscriptionAnalytics))
	r.Get(idPath("/v1/keys/{id}/analytics"), a.billingHandle(a.keyAnalytics))
	r.Get(idPath("/v1/subscriptions/{id}/usage/export"), a.handle(a.subscriptionExport))
	r.Get(idPath("/v1/apis/{id}/usage/export"), a.handle(a.apiExport))
}

// subscriptionAnalytics: a subscription's view, priced by day; key_id
// narrows it to one of its keys. Its members, its API's provider and
// admins; others 404.
func (a *api) subscriptionAnalytics(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	win, err := analytics.ParseWindow(q, time.Now(), analytics.AnalyticsWindow)
	if err != nil {
		return err
	}
	keyID, err := optionalUUID(q, "key_id")
	if err != nil {
		return err
	}
	act := actorFrom(r)
	if _, err := a.cfg.Subscriptions.GetSubscription(r.Context(), act, id); err != nil {
		return err
	}
	if keyID != nil {
		// A key of another subscription is not found here, whoever asks.
		k, err := a.cfg.Subscriptions.Keys().GetKey(r.Context(), act, *keyID)
		if err != nil {
			return err
		}
		if k.SubscriptionID != id {
			return keys.ErrKeyNotFound
		}
	}
	view, err := a.cfg.Analytics.Consumer(r.Context(), analytics.Scope{SubscriptionID: id, KeyID: keyID, WithCost: true}, win)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, view)
	return nil
}

// keyAnalytics: a key's view (cost null). Whoever may see the key.
func (a *api) keyAnalytics(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	win, err := analytics.ParseWindow(r.URL.Query(), time.Now(), analytics.AnalyticsWindow)
	if err != nil {
		return err
	}
	k, err := a.cfg.Subscriptions.Keys().GetKey(r.Context(), actorFrom(r), id)
	if err != nil {
		return err
	}
	view, err := a.cfg.Analytics.Consumer(r.Context(), analytics.Scope{SubscriptionID: k.SubscriptionID, KeyID: &id}, win)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, view)
	return nil
}

// subscriptionExport streams a subscription's usage rows: its members, its
// API's provider and admins.
func (a *api) subscriptionExport(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	q, f, err := exportQuery(r, false)
	if err != nil {
		return err
	}
	if _, err := a.cfg.Subscriptions.GetSubscription(r.Context(), actorFrom(r), id); err != nil {
		return err
	}
	q.Subject = id.String()
	return a.export(w, r, q, f, "subscription-"+id.String())
}

// apiExport streams an API's usage rows: its provider's members and
// admins; anyone else, a subscriber included, 404.
func (a *api) apiExport(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	q, f, err := exportQuery(r, true)
	if err != nil {
		return err
	}
	act := actorFrom(r)
	api, err := a.cfg.Catalog.GetAPI(r.Context(), act, id)
	if err != nil {
		return err
	}
	if !act.IsAdmin() && act.OrgID != api.OrganizationID {
		return catalog.ErrAPINotFound
	}
	q.APIID = id.String()
	return a.export(w, r, q, f, "api-"+id.String())
}

// exportQuery reads an export's window, format and filters.
func exportQuery(r *http.Request, byAPI bool) (metering.ExportQuery, analytics.Format, error) {
	v := r.URL.Query()
	win, err := analytics.ParseWindow(v, time.Now(), analytics.ExportWindow)
	if err != nil {
		return metering.ExportQuery{}, "", err
	}
	q := metering.ExportQuery{From: win.From, To: win.To, Route: v.Get("route"), Method: v.Get("method")}
	f, err := exportFormat(r)
	if err != nil {
		return q, "", err
	}
	if len(q.Route) > 1024 || !strings.HasPrefix(q.Route, "/") && q.Route != "" {
		return q, "", analytics.InvalidParameter("route", "must be a route template such as /v1/items/{id}, at most 1024 bytes")
	}
	if len(q.Method) > 16 || strings.Trim(q.Method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return q, "", analytics.InvalidParameter("method", "must be an HTTP method in capitals, such as GET")
	}
	if s := strings.TrimSuffix(v.Get("status_class"), "xx"); s != "" {
		c, err := strconv.Atoi(s)
		if err != nil || c < 1 || c > 5 {
			return q, "", analytics.InvalidParameter("status_class", "must be 1xx, 2xx, 3xx, 4xx or 5xx")
		}
		q.StatusClass = uint8(c)
	}
	names := []string{"key_id"}
	if byAPI {
		names = append(names, "subscription_id")
	} else if v.Has("subscription_id") {
		return q, "", analytics.InvalidParameter("subscription_id", "filters an API's export only")
	}
	for _, name := range names {
		id, err := optionalUUID(v, name)
		if err != nil {
			return q, "", err
		}
		if id != nil && name == "key_id" {
			q.KeyID = id.String()
		} else if id != nil {
			q.Subject = id.String()
		}
	}
	return q, f, nil
}

// exportFormat is format's (csv or ndjson), else what Accept prefers of
// text/csv and application/x-ndjson, else NDJSON.
func exportFormat(r *http.Request) (analytics.Format, error) {
	if r.URL.Query().Has("format") {
		switch f := analytics.Format(r.URL.Query().Get("format")); f {
		case analytics.CSV, analytics.NDJSON:
			return f, nil
		}
		return "", analytics.InvalidParameter("format", "must be csv or ndjson")
	}
	if strings.Contains(r.Header.Get("Accept"), "text/csv") {
		return analytics.CSV, nil
	}
	return analytics.NDJSON, nil
}

// export streams q's rows to w. A failure before the first byte is
// answered as a problem; after it the status is sent already, so the
// connection is cut before the closing chunk and the client reads a
// truncated body (an unexpected EOF), never a complete-looking one. A
// complete export ends with the trailer Veil-Export-Rows, its row count.
func (a *api) export(w http.ResponseWriter, r *http.Request, q metering.ExportQuery, f analytics.Format, name string) error {
	release, err := a.cfg.Analytics.StartExport(actorFrom(r).OrgID)
	if err != nil {
		return err
	}
	defer release()
	return a.stream(w, r, f, name, func(sink analytics.Sink) (int, error) { return a.cfg.Analytics.Export(r.Context(), q, f, sink) })
}

// stream answers what run writes to its sink as an export named name in
// format f (export's rules).
func (a *api) stream(w http.ResponseWriter, r *http.Request, f analytics.Format, name string, run func(analytics.Sink) (int, error)) error {
	rc := http.NewResponseController(w)
	ext := map[analytics.Format]string{analytics.CSV: "csv", analytics.NDJSON: "ndjson"}[f]
	lw := &lazyWriter{w: w, start: func() {
		h := w.Header()
		h.Set("Content-Type", f.ContentType())
		h.Set("Content-Disposition", `attachment; filename="usage-`+name+"."+ext+`"`)
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Trailer", "Veil-Export-Rows")
	}}
	flush := func() error {
		// A client that stops reading holds the export a minute at
		// most; one that reads is given the next minute at each flush.
		_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		return rc.Flush()
	}
	n, err := run(analytics.Sink{W: lw, Flush: flush})
	if err != nil && !lw.started {
		return err
	}
	if err != nil {
		if r.Context().Err() == nil {
			a.log.ErrorContext(r.Context(), "usage export cut short", "rows", n, "error", err)
		}
		panic(http.ErrAbortHandler)
	}
	if !lw.started {
		lw.start()
		lw.started = true
	}
	w.Header().Set("Veil-Export-Rows", strconv.Itoa(n))
	return nil
}

// lazyWriter sets the export's headers at its first byte, so that a
// failure before it can still be a problem document.
type lazyWriter struct {
	w       http.ResponseWriter
	start   func()
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.start()
		l.started = true
	}
	return l.w.Write(p)
}

// optionalUUID reads a UUID query parameter, nil when absent.
func optionalUUID(v url.Values, name string) (*uuid.UUID, error) {
	if !v.Has(name) {
		return nil, nil
	}
	id, err := uuid.Parse(v.Get(name))
	if err != nil {
		return nil, analytics.InvalidParameter(name, "must be a UUID")
	}
	return &id, nil
}
