package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/budgets"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/ingesttokens"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/control-plane/promotions"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// fail maps an error to its problem: the field and JSON errors here, every
// sentinel through problems, the one table of them. Unknown errors are
// logged and answered as a 500 without detail.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var v *validation.Error
	var bj *badJSON
	var pf *invalidPlanFiles
	var d problem.Details
	switch {
	case errors.As(err, &v):
		d = problem.New(http.StatusUnprocessableEntity, "validation", "Invalid Request", "one or more fields are invalid").With("errors", v.Fields)
	case errors.As(err, &bj):
		d = problem.New(http.StatusBadRequest, "malformed-json", "Malformed JSON", bj.msg)
	case errors.As(err, &pf):
		d = pf.problem()
	case errors.Is(err, context.Canceled):
		return
	default:
		p, ok := problemOf(err)
		if !ok {
			a.log.ErrorContext(r.Context(), "request failed", "request_id", middleware.RequestIDFrom(r.Context()),
				"method", r.Method, "path", r.URL.Path, "error", err)
			d = problem.New(http.StatusInternalServerError, "internal", "Internal Server Error", "the request failed; quote the request id when reporting it")
			break
		}
		if p.retryAfter != "" {
			w.Header().Set("Retry-After", p.retryAfter)
		}
		d = p.d
		if d.Detail == "" {
			d.Detail = err.Error() + p.suffix
		}
	}
	d.Instance = r.URL.Path
	problem.Write(w, d.With("request_id", middleware.RequestIDFrom(r.Context())))
}

// sentinelProblem is the problem of the errors that wrap one of errs: d,
// whose detail is the error's text (and suffix) when d has none.
type sentinelProblem struct {
	errs       []error
	d          problem.Details
	suffix     string
	retryAfter string
}

// problemOf finds err's problem in problems, the first row that matches.
func problemOf(err error) (sentinelProblem, bool) {
	for _, p := range problems {
		for _, e := range p.errs {
			if errors.Is(err, e) {
				return p, true
			}
		}
	}
	return sentinelProblem{}, false
}

// errs lists sentinels.
func errs(e ...error) []error { return e }

// problems is every sentinel the API answers and its problem, in the order
// they are tried (an error wrapping two gets the first).
var problems = []sentinelProblem{
	{errs: errs(errTooLarge), d: problem.New(http.StatusRequestEntityTooLarge, "request-too-large", "Request Too Large", "the body is larger than 1 MiB")},
	{errs: errs(errUnsupportedMedia), d: problem.New(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported Media Type", "send application/json")},
	{errs: errs(pagination.ErrBadCursor), d: problem.New(http.StatusBadRequest, "bad-cursor", "Bad Cursor", "the cursor was not issued by this API")},
	{errs: errs(catalog.ErrAPINotFound, catalog.ErrApprovalNotFound, webhooks.ErrEndpointNotFound, webhooks.ErrDeliveryNotFound,
		subscriptions.ErrPlanNotFound, subscriptions.ErrSubscriptionNotFound, keys.ErrKeyNotFound, ingesttokens.ErrNotFound, errNoUsageReconcile, analytics.ErrSubscriptionNotFound, analytics.ErrProviderNotFound,
		pricing.ErrMeterNotFound, pricing.ErrVersionNotFound, promotions.ErrNotFound, budgets.ErrNotFound, budgets.ErrSubscriptionNotFound), d: problem.New(http.StatusNotFound, "not-found", "Not Found", "")},
	{errs: errs(keys.ErrInvalidTransition, subscriptions.ErrSubscriptionTransition, catalog.ErrInvalidTransition),
		d: problem.New(http.StatusConflict, "invalid-transition", "Invalid State Transition", "")},
	{errs: errs(keys.ErrKeyLimit), d: problem.New(http.StatusConflict, "key-limit", "Key Limit Reached", ""), suffix: "; revoke or delete a key first"},
	{errs: errs(budgets.ErrExists), d: problem.New(http.StatusConflict, "budget-exists", "Budget Exists", ""),
		suffix: "; a subscription has one budget, an organization one organization-wide budget per currency: change that one"},
	{errs: errs(subscriptions.ErrAlreadySubscribed), d: problem.New(http.StatusConflict, "already-subscribed", "Already Subscribed", "")},
	{errs: errs(subscriptions.ErrSubscriptionHeld), d: problem.New(http.StatusConflict, "subscription-held", "Subscription Held", "")},
	{errs: errs(keys.ErrAdminPlaintext), d: problem.New(http.StatusForbidden, "plaintext-refused", "Plaintext Refused", ""),
		suffix: "; suspend or revoke the key instead, and let its organization issue or rotate it"},
	{errs: errs(keys.ErrAdminSuspended), d: problem.New(http.StatusForbidden, "admin-suspended", "Suspended By An Admin", "")},
	{errs: errs(subscriptions.ErrPlanUnavailable), d: problem.New(http.StatusConflict, "plan-unavailable", "Plan Unavailable", "")},
	{errs: errs(subscriptions.ErrSubscriptionInactive), d: problem.New(http.StatusConflict, "subscription-inactive", "Subscription Not Active", "")},
	{errs: errs(keys.ErrAlreadyRotated), d: problem.New(http.StatusConflict, "already-rotated", "Already Rotated", "")},
	{errs: errs(keys.ErrNothingToReveal), d: problem.New(http.StatusConflict, "nothing-to-reveal", "Nothing To Reveal",
		"this key holds no sealed successor to reveal; it was revealed already or was issued in a response")},
	{errs: errs(quota.ErrNoQuota), d: problem.New(http.StatusConflict, "no-quota", "No Quota", "the subscription's plan has no request quota to adjust")},
	{errs: errs(subscriptions.ErrSamePlan), d: problem.New(http.StatusConflict, "same-plan", "Same Plan", "the subscription is on that plan's latest version already")},
	{errs: errs(subscriptions.ErrPlanChangeLimit), d: problem.New(http.StatusConflict, "plan-change-limit", "Plan Change Limit", "the subscription changed plans 3 times in this billing period already; change again in the next")},
	{errs: errs(errQuotaUnavailable), d: problem.New(http.StatusServiceUnavailable, "quota-unavailable", "Quota Unavailable", ""), suffix: "; retry later", retryAfter: "30"},
	{errs: errs(errNoUsageCheck), d: problem.New(http.StatusServiceUnavailable, "quota-unavailable", "Quota Unavailable", "")},
	{errs: errs(pricing.ErrFileManaged), d: problem.New(http.StatusConflict, "file-managed", "Managed By A Plan File", "")},
	{errs: errs(pricing.ErrMeterInUse), d: problem.New(http.StatusConflict, "meter-in-use", "Meter In Use", "")},
	{errs: errs(pricing.ErrMeterLimit), d: problem.New(http.StatusConflict, "meter-limit", "Meter Limit Reached", "")},
	{errs: errs(pricing.ErrMeterSlugTaken, subscriptions.ErrSlugTaken), d: problem.New(http.StatusConflict, "slug-taken", "Slug Taken", "")},
	{errs: errs(errNoPlanDirectory), d: problem.New(http.StatusConflict, "no-plan-directory", "No Plan Directory", "")},
	// A version priced in a currency Veil no longer knows cannot be
	// quoted or billed until it is replaced; it is not the caller's fault.
	{errs: errs(metering.ErrUnknownCurrency), d: problem.New(http.StatusConflict, "unknown-currency", "Currency Not Priced", "")},
	{errs: errs(promotions.ErrCodeTaken), d: problem.New(http.StatusConflict, "code-taken", "Code Taken", "")},
	{errs: errs(promotions.ErrLimitReached, promotions.ErrCustomerLimit), d: problem.New(http.StatusConflict, "promotion-limit", "Promotion Limit Reached", "")},
	{errs: errs(promotions.ErrAlreadyRedeemed), d: problem.New(http.StatusConflict, "already-redeemed", "Already Redeemed", "")},
	{errs: errs(promotions.ErrNotStackable), d: problem.New(http.StatusConflict, "not-stackable", "Promotion Does Not Stack", "")},
	{errs: errs(metering.ErrBadQuery), d: problem.New(http.StatusBadRequest, "bad-usage-query", "Bad Usage Query", "")},
	{errs: errs(analytics.ErrInvalidParameter), d: problem.New(http.StatusBadRequest, "invalid-parameter", "Invalid Parameter", "")},
	// Cost by day answers one currency: a window across a plan change to
	// another currency is the caller's to narrow.
	{errs: errs(billing.ErrCurrencyChange), d: problem.New(http.StatusUnprocessableEntity, "currency-change", "Window Spans A Currency Change", "")},
	// A hard budget the gateway could not enforce is refused rather than
	// kept as a cap that blocks nothing.
	{errs: errs(budgets.ErrCurrencyMismatch), d: problem.New(http.StatusUnprocessableEntity, "currency-mismatch", "Currency Mismatch", "")},
	{errs: errs(analytics.ErrTooManyExports), d: problem.New(http.StatusTooManyRequests, "too-many-exports", "Too Many Exports", ""), suffix: "; retry when one ends", retryAfter: "30"},
	{errs: errs(errUsageUnavailable, analytics.ErrUnavailable), d: problem.New(http.StatusServiceUnavailable, "usage-unavailable", "Usage Unavailable", ""), retryAfter: "30"},
	{errs: errs(identity.ErrForbidden), d: problem.New(http.StatusForbidden, "forbidden", "Forbidden", "your role may not do this")},
	{errs: errs(catalog.ErrSelfApproval), d: problem.New(http.StatusForbidden, "self-approval", "Self-Approval Refused", "")},
	{errs: errs(catalog.ErrNotEditable), d: problem.New(http.StatusConflict, "not-editable", "Not Editable", "")},
	{errs: errs(catalog.ErrSlugTaken), d: problem.New(http.StatusConflict, "slug-taken", "Slug Taken", "another API already uses this slug")},
	{errs: errs(catalog.ErrVersionExists), d: problem.New(http.StatusConflict, "version-exists", "Version Exists", "this API already has that version")},
	{errs: errs(catalog.ErrApprovalClosed), d: problem.New(http.StatusConflict, "approval-closed", "Approval Closed", "")},
	{errs: errs(catalog.ErrAPIInUse), d: problem.New(http.StatusConflict, "api-in-use", "API In Use", "")},
	{errs: errs(catalog.ErrConflict), d: problem.New(http.StatusConflict, "conflict", "Conflict", "the resource changed concurrently; retry")},
	{errs: errs(catalog.ErrGatewayUnavailable), d: problem.New(http.StatusServiceUnavailable, "gateway-unavailable", "Gateway Unavailable", ""), retryAfter: "5"},
}
