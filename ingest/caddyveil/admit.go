package caddyveil

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/ratelimit"
)

// refusal is one way a request is turned away.
type refusal struct {
	status int
	typ    string // problem type
	title  string
	reason string // the event's data.refusal
	detail string
	// invoice is the unpaid invoice a payment-required refusal names.
	invoice *unpaidInvoice
}

// unpaidInvoice is what a 402 tells of the invoice to pay.
type unpaidInvoice struct {
	id, number string
}

var (
	refMissingKey   = refusal{http.StatusUnauthorized, "missing-key", "Missing API Key", "missing_key", "send the API key as Authorization: Bearer <key> or X-API-Key", nil}
	refInvalidKey   = refusal{http.StatusUnauthorized, "invalid-key", "Invalid API Key", "invalid_key", "the API key is not valid", nil}
	refRevoked      = refusal{http.StatusUnauthorized, "key-revoked", "API Key Revoked", "key_revoked", "the API key was revoked", nil}
	refExpired      = refusal{http.StatusUnauthorized, "key-expired", "API Key Expired", "key_expired", "the API key has expired", nil}
	refSuspended    = refusal{http.StatusForbidden, "key-suspended", "API Key Suspended", "key_suspended", "the API key is suspended", nil}
	refWrongAPI     = refusal{http.StatusForbidden, "key-not-for-api", "Key Not For This API", "api_mismatch", "the API key belongs to a subscription to another API", nil}
	refMethod       = refusal{http.StatusForbidden, "method-not-permitted", "Method Not Permitted", "method_not_allowed", "the API key may not use this method", nil}
	refRoute        = refusal{http.StatusForbidden, "route-not-permitted", "Route Not Permitted", "route_not_allowed", "the API key may not call this route", nil}
	refSubscription = refusal{http.StatusForbidden, "subscription-inactive", "Subscription Not Active", "subscription_inactive", "the subscription is not active", nil}
	refUnpaid       = refusal{http.StatusPaymentRequired, "payment-required", "Payment Required", "payment_required", "the subscription is suspended until its invoice is paid", nil}
	refQuota        = refusal{http.StatusTooManyRequests, "quota-exhausted", "Quota Exhausted", "quota_exhausted", "the subscription used its quota for this period", nil}
	refBudget       = refusal{http.StatusTooManyRequests, "budget-exceeded", "Budget Exceeded", "budget_exceeded", "the subscription reached its hard budget for this period", nil}
	refRateLimited  = refusal{http.StatusTooManyRequests, "rate-limited", "Rate Limited", "rate_limited", "too many requests; retry after the time in Retry-After", nil}
	refUnavailable  = refusal{http.StatusServiceUnavailable, "gateway-unavailable", "Gateway Unavailable", "gateway_unavailable", "the gateway cannot check API keys right now; retry shortly", nil}
)

// admit runs the checks; ok false names the refusal and, for 429, how long
// to wait.
func (h *Handler) admit(r *http.Request, hdr http.Header, c *call) (ref refusal, retry time.Duration, ok bool) {
	raw := h.extractKey(r)
	if raw == "" {
		return refMissingKey, 0, false
	}
	if _, err := apikey.Parse(raw); err != nil {
		return refInvalidKey, 0, false
	}
	hash := apikey.Hash(raw)
	now := time.Now()
	if h.res.neg.has(hash, now) {
		return refInvalidKey, 0, false
	}
	ctx := r.Context()
	a, ref, retry, ok := h.lookupKey(ctx, hash, now)
	if !ok {
		return ref, retry, false
	}
	c.keyID, c.subject = a.key.KeyID, a.key.SubscriptionID
	if ref, ok := h.checkKey(a.key, r.Method, c.rel, now); !ok {
		return ref, 0, false
	}
	if !a.degraded {
		if a.sub, ref, retry, ok = h.lookupSubscription(ctx, a.key.SubscriptionID); !ok {
			return ref, retry, false
		}
		h.res.known.put(hash, a.key, a.sub, now)
	}
	if ref, ok := checkSubscription(a.sub, hdr); !ok {
		return ref, 0, false
	}
	if a.sub.APIID != h.APIID {
		return refWrongAPI, 0, false
	}
	if a.degraded {
		// Redis is away: the block cannot be read either, and counts as
		// one more Redis error; the rate limits below still hold.
		h.res.m.redisErrors.Inc()
	} else if ref, retry, ok := h.checkBlock(ctx, a.sub, now); !ok {
		return ref, retry, false
	}
	return h.rateLimit(ctx, hdr, now, a)
}

// billingWarningHeader tells the caller of a past_due subscription, which
// is still admitted, which invoice to pay and by when.
const billingWarningHeader = "Veil-Billing-Warning"

// checkSubscription admits trialing, active and past_due subscriptions,
// warning a past_due one's caller in hdr. A subscription suspended for an
// unpaid invoice is refused with 402 naming the invoice; any other
// suspension, a cancellation or an unknown status with 403.
func checkSubscription(sub enforcement.SubscriptionRecord, hdr http.Header) (refusal, bool) {
	switch sub.Status {
	case enforcement.SubscriptionActive, enforcement.SubscriptionTrialing:
		return refusal{}, true
	case enforcement.SubscriptionPastDue:
		if sub.UnpaidInvoiceNumber != "" {
			w := "invoice " + sub.UnpaidInvoiceNumber + " is past due"
			if !sub.SuspendAt.IsZero() {
				w += "; pay by " + sub.SuspendAt.UTC().Format(time.RFC3339) + " to avoid suspension"
			}
			hdr.Set(billingWarningHeader, w)
		}
		return refusal{}, true
	case enforcement.SubscriptionSuspended:
		if sub.UnpaidInvoiceID != "" {
			ref := refUnpaid
			ref.detail = "the subscription is suspended until invoice " + sub.UnpaidInvoiceNumber + " is paid"
			ref.invoice = &unpaidInvoice{id: sub.UnpaidInvoiceID, number: sub.UnpaidInvoiceNumber}
			return ref, false
		}
	}
	return refSubscription, false
}

// admission is what the checks read: a key's record, its subscription's
// (from Redis, or from the outage-grace cache when degraded).
type admission struct {
	key      enforcement.KeyRecord
	sub      enforcement.SubscriptionRecord
	degraded bool
}

// lookupKey reads the key's record; while Redis is unreachable, a key seen
// valid a moment ago keeps working for a short grace on its last known
// records, under the limiter's local limits.
func (h *Handler) lookupKey(ctx context.Context, hash string, now time.Time) (a admission, ref refusal, retry time.Duration, ok bool) {
	rec, err := h.res.store.GetKeyCached(ctx, hash, time.Duration(h.app.CacheTTL))
	switch {
	case err == nil:
		return admission{key: rec}, refusal{}, 0, true
	case errors.Is(err, enforcement.ErrNotFound):
		h.res.neg.add(hash, now)
		return a, refInvalidKey, 0, false
	case errors.Is(err, enforcement.ErrCorruptRecord):
		h.res.log.ErrorContext(ctx, "corrupt key record; refusing the key", "error", err)
		return a, refInvalidKey, 0, false
	}
	h.res.m.redisErrors.Inc()
	k, found := h.res.known.get(hash, now, time.Duration(h.app.RedisOutageGrace))
	if !found {
		h.res.log.WarnContext(ctx, "key lookup failed", "error", err)
		return a, refUnavailable, time.Second, false
	}
	h.res.m.degraded.Inc()
	return admission{key: k.key, sub: k.sub, degraded: true}, refusal{}, 0, true
}

// checkKey holds the key to this API and to its status, expiry, methods
// and routes.
func (h *Handler) checkKey(rec enforcement.KeyRecord, method, rel string, now time.Time) (refusal, bool) {
	if rec.APIID != h.APIID {
		return refWrongAPI, false
	}
	err := rec.Allows(method, rel, now)
	switch {
	case err == nil:
		return refusal{}, true
	case errors.Is(err, enforcement.ErrKeyExpired):
		return refExpired, false
	case errors.Is(err, enforcement.ErrMethodNotAllowed):
		return refMethod, false
	case errors.Is(err, enforcement.ErrRouteNotAllowed):
		return refRoute, false
	case rec.Status == enforcement.KeySuspended:
		return refSuspended, false
	default:
		return refRevoked, false
	}
}

// lookupSubscription reads the key's subscription record.
func (h *Handler) lookupSubscription(ctx context.Context, id string) (sub enforcement.SubscriptionRecord, ref refusal, retry time.Duration, ok bool) {
	sub, err := h.res.store.GetSubscriptionCached(ctx, id, time.Duration(h.app.CacheTTL))
	switch {
	case errors.Is(err, enforcement.ErrNotFound), errors.Is(err, enforcement.ErrCorruptRecord):
		return sub, refSubscription, 0, false
	case err != nil:
		h.res.m.redisErrors.Inc()
		return sub, refUnavailable, time.Second, false
	}
	return sub, refusal{}, 0, true
}

// checkBlock refuses a subscription whose hard quota or hard budget is
// used up (one block for both). A block that cannot be read admits: the
// quota is the processors' estimate anyway, the rate limits still hold.
// Only a blocked subscription with a budget costs one more (cached) read,
// of the period counter's budget mark, to say which limit refused it: a
// budget used up is named even when a hard quota is used up too.
func (h *Handler) checkBlock(ctx context.Context, sub enforcement.SubscriptionRecord, now time.Time) (ref refusal, retry time.Duration, ok bool) {
	ttl := time.Duration(h.app.CacheTTL)
	until, err := h.res.store.BlockedUntilCached(ctx, sub.ID, ttl)
	if err != nil {
		h.res.m.redisErrors.Inc()
		return refusal{}, 0, true
	}
	if !until.After(now) {
		return refusal{}, 0, true
	}
	if sub.Budget != nil {
		over, err := h.res.store.BudgetOverCached(ctx, sub.ID, sub.PeriodStart, sub.BudgetKey(), ttl)
		if err != nil {
			h.res.m.redisErrors.Inc()
		}
		if over {
			return refBudget, until.Sub(now), false
		}
	}
	return refQuota, until.Sub(now), false
}

// rateLimit checks the key's and the subscription's rate limits and sets
// the RateLimit headers.
func (h *Handler) rateLimit(ctx context.Context, hdr http.Header, now time.Time, a admission) (ref refusal, retry time.Duration, ok bool) {
	limits := h.limits(a.key, a.sub)
	if len(limits) == 0 {
		return refusal{}, 0, true
	}
	d, err := h.res.limiter.Allow(ctx, now, limits...)
	if err != nil {
		if ctx.Err() != nil {
			return refUnavailable, time.Second, false
		}
		h.res.log.ErrorContext(ctx, "rate limit check failed", "error", err)
		return refUnavailable, time.Second, false
	}
	d.SetHeaders(hdr)
	if !d.Allowed {
		// Under on_redis_error deny an outage refuses everything: that is
		// the gateway's failure, not the caller's rate.
		if d.Degraded && h.app.OnRedisError == ratelimit.OnRedisErrorDeny {
			return refUnavailable, d.RetryAfter, false
		}
		return refRateLimited, d.RetryAfter, false
	}
	return refusal{}, 0, true
}

// limits are the rate limits a request falls under: the key's own (when
// it overrides the plan) and the subscription's, all under the
// subscription's hash tag so one script decides them together.
func (h *Handler) limits(k enforcement.KeyRecord, s enforcement.SubscriptionRecord) []ratelimit.Limit {
	var out []ratelimit.Limit
	tag := enforcement.RateLimitPrefix(s.ID)
	add := func(key, name string, rate int, period time.Duration) {
		if rate > 0 {
			out = append(out, ratelimit.Limit{Key: tag + key, Name: name, Rate: rate, Period: period})
		}
	}
	add("k:"+k.KeyID+":s", "key-second", k.RatePerSecond, time.Second)
	add("k:"+k.KeyID+":m", "key-minute", k.RatePerMinute, time.Minute)
	add("s:s", "second", s.RatePerSecond, time.Second)
	add("s:m", "minute", s.RatePerMinute, time.Minute)
	return out
}
