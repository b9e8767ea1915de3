package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/schemas/usage"
)

// ReasonSubjectNotAllowed refuses, for a token scoped to APIs, an event
// whose subject is not a subscription of the event's API: a producer
// allowed to write for one API may not spend or bill another API's
// subscription.
const ReasonSubjectNotAllowed usage.Reason = "subject_not_allowed"

// Subscriptions never change API, so a found subscription is cached long;
// an id that is no subscription (yet) apart and only for TokenCacheTTL, so
// a new subscription is usable within it and unknown ids never displace
// known ones.
const (
	subscriptionCacheTTL   = time.Hour
	maxCachedSubscriptions = 100_000
)

// checked is an event that passed check, waiting for the subject check.
type checked struct {
	index   int
	id      string
	subject string
	apiID   string
}

// refuseForeignSubjects returns the rejections of the events whose subject
// is not a subscription of their API, for a token scoped to APIs; nil for
// any other token. The subscriptions not cached are looked up in one query.
func (h *Handler) refuseForeignSubjects(ctx context.Context, scope ingesttoken.Scope, events []checked) ([]Rejection, error) {
	if len(scope.APIIDs) == 0 || len(events) == 0 {
		return nil, nil
	}
	now := time.Now()
	apis := make(map[string]string, len(events))
	var missing []string
	for _, e := range events {
		if _, ok := apis[e.subject]; ok {
			continue
		}
		if !usage.IsSubscriptionID(e.subject) {
			// The gateway's anonymous refusals: no subscription of any
			// API, and nothing for the lookup (it takes UUIDs only).
			apis[e.subject] = ""
			continue
		}
		api, ok := h.subscriptions.get(e.subject, now)
		if !ok {
			if _, ok = h.unknownSubscriptions.get(e.subject, now); !ok {
				missing = append(missing, e.subject)
			}
		}
		apis[e.subject] = api
	}
	if len(missing) > 0 {
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		found, err := h.cfg.Lookup.SubscriptionAPIs(lctx, missing)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, id := range missing {
			api := found[id]
			apis[id] = api
			if api == "" {
				h.unknownSubscriptions.put(id, struct{}{}, now)
			} else {
				h.subscriptions.put(id, api, now)
			}
		}
	}
	var out []Rejection
	for _, e := range events {
		if api := apis[e.subject]; api == "" || api != e.apiID {
			out = append(out, Rejection{Index: e.index, ID: e.id, Reason: ReasonSubjectNotAllowed, Field: "subject",
				Detail: fmt.Sprintf("subject %s is not a subscription of API %q", e.subject, e.apiID)})
		}
	}
	return out, nil
}
