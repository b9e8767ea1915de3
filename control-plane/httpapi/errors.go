package httpapi

import (
	"context"
	"errors"
	"net/http"

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

// fail maps an error to its problem. Unknown errors are logged and answered
// as a 500 without detail.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var v *validation.Error
	var bj *badJSON
	var d problem.Details
	switch {
	case errors.As(err, &v):
		d = problem.New(http.StatusUnprocessableEntity, "validation", "Invalid Request", "one or more fields are invalid").With("errors", v.Fields)
	case errors.As(err, &bj):
		d = problem.New(http.StatusBadRequest, "malformed-json", "Malformed JSON", bj.msg)
	case errors.Is(err, errTooLarge):
		d = problem.New(http.StatusRequestEntityTooLarge, "request-too-large", "Request Too Large", "the body is larger than 1 MiB")
	case errors.Is(err, errUnsupportedMedia):
		d = problem.New(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported Media Type", "send application/json")
	case errors.Is(err, pagination.ErrBadCursor):
		d = problem.New(http.StatusBadRequest, "bad-cursor", "Bad Cursor", "the cursor was not issued by this API")
	case errors.Is(err, catalog.ErrAPINotFound), errors.Is(err, catalog.ErrApprovalNotFound),
		errors.Is(err, webhooks.ErrEndpointNotFound), errors.Is(err, webhooks.ErrDeliveryNotFound),
		errors.Is(err, subscriptions.ErrPlanNotFound), errors.Is(err, subscriptions.ErrSubscriptionNotFound),
		errors.Is(err, keys.ErrKeyNotFound), errors.Is(err, ingesttokens.ErrNotFound), errors.Is(err, errNoUsageReconcile),
		errors.Is(err, pricing.ErrMeterNotFound), errors.Is(err, pricing.ErrVersionNotFound), errors.Is(err, promotions.ErrNotFound):
		d = problem.New(http.StatusNotFound, "not-found", "Not Found", err.Error())
	case errors.Is(err, keys.ErrInvalidTransition), errors.Is(err, subscriptions.ErrSubscriptionTransition),
		errors.Is(err, catalog.ErrInvalidTransition):
		d = problem.New(http.StatusConflict, "invalid-transition", "Invalid State Transition", err.Error())
	case errors.Is(err, keys.ErrKeyLimit):
		d = problem.New(http.StatusConflict, "key-limit", "Key Limit Reached", err.Error()+"; revoke or delete a key first")
	case errors.Is(err, subscriptions.ErrAlreadySubscribed):
		d = problem.New(http.StatusConflict, "already-subscribed", "Already Subscribed", err.Error())
	case errors.Is(err, subscriptions.ErrSubscriptionHeld):
		d = problem.New(http.StatusConflict, "subscription-held", "Subscription Held", err.Error())
	case errors.Is(err, keys.ErrAdminPlaintext):
		d = problem.New(http.StatusForbidden, "plaintext-refused", "Plaintext Refused",
			err.Error()+"; suspend or revoke the key instead, and let its organization issue or rotate it")
	case errors.Is(err, keys.ErrAdminSuspended):
		d = problem.New(http.StatusForbidden, "admin-suspended", "Suspended By An Admin", err.Error())
	case errors.Is(err, subscriptions.ErrPlanUnavailable):
		d = problem.New(http.StatusConflict, "plan-unavailable", "Plan Unavailable", err.Error())
	case errors.Is(err, subscriptions.ErrSubscriptionInactive):
		d = problem.New(http.StatusConflict, "subscription-inactive", "Subscription Not Active", err.Error())
	case errors.Is(err, keys.ErrAlreadyRotated):
		d = problem.New(http.StatusConflict, "already-rotated", "Already Rotated", err.Error())
	case errors.Is(err, keys.ErrNothingToReveal):
		d = problem.New(http.StatusConflict, "nothing-to-reveal", "Nothing To Reveal", "this key holds no sealed successor to reveal; it was revealed already or was issued in a response")
	case errors.Is(err, quota.ErrNoQuota):
		d = problem.New(http.StatusConflict, "no-quota", "No Quota", "the subscription's plan has no request quota to adjust")
	case errors.Is(err, subscriptions.ErrSamePlan):
		d = problem.New(http.StatusConflict, "same-plan", "Same Plan", "the subscription is on that plan's latest version already")
	case errors.Is(err, errQuotaUnavailable):
		w.Header().Set("Retry-After", "30")
		d = problem.New(http.StatusServiceUnavailable, "quota-unavailable", "Quota Unavailable", err.Error()+"; retry later")
	case errors.Is(err, errNoUsageCheck):
		d = problem.New(http.StatusServiceUnavailable, "quota-unavailable", "Quota Unavailable", err.Error())
	case errors.Is(err, pricing.ErrFileManaged), errors.Is(err, pricing.ErrMeterInUse), errors.Is(err, pricing.ErrMeterLimit),
		errors.Is(err, pricing.ErrMeterSlugTaken):
		d = pricingConflict(err)
	case errors.Is(err, promotions.ErrCodeTaken), errors.Is(err, promotions.ErrLimitReached), errors.Is(err, promotions.ErrCustomerLimit),
		errors.Is(err, promotions.ErrAlreadyRedeemed), errors.Is(err, promotions.ErrNotStackable):
		d = promotionConflict(err)
	case errors.Is(err, subscriptions.ErrSlugTaken):
		d = problem.New(http.StatusConflict, "slug-taken", "Slug Taken", err.Error())
	case errors.Is(err, metering.ErrBadQuery):
		d = problem.New(http.StatusBadRequest, "bad-usage-query", "Bad Usage Query", err.Error())
	case errors.Is(err, errUsageUnavailable):
		w.Header().Set("Retry-After", "30")
		d = problem.New(http.StatusServiceUnavailable, "usage-unavailable", "Usage Unavailable", err.Error())
	case errors.Is(err, identity.ErrForbidden):
		d = problem.New(http.StatusForbidden, "forbidden", "Forbidden", "your role may not do this")
	case errors.Is(err, catalog.ErrSelfApproval):
		d = problem.New(http.StatusForbidden, "self-approval", "Self-Approval Refused", err.Error())
	case errors.Is(err, catalog.ErrNotEditable):
		d = problem.New(http.StatusConflict, "not-editable", "Not Editable", err.Error())
	case errors.Is(err, catalog.ErrSlugTaken):
		d = problem.New(http.StatusConflict, "slug-taken", "Slug Taken", "another API already uses this slug")
	case errors.Is(err, catalog.ErrVersionExists):
		d = problem.New(http.StatusConflict, "version-exists", "Version Exists", "this API already has that version")
	case errors.Is(err, catalog.ErrApprovalClosed):
		d = problem.New(http.StatusConflict, "approval-closed", "Approval Closed", err.Error())
	case errors.Is(err, catalog.ErrAPIInUse):
		d = problem.New(http.StatusConflict, "api-in-use", "API In Use", err.Error())
	case errors.Is(err, catalog.ErrConflict):
		d = problem.New(http.StatusConflict, "conflict", "Conflict", "the resource changed concurrently; retry")
	case errors.Is(err, catalog.ErrGatewayUnavailable):
		w.Header().Set("Retry-After", "5")
		d = problem.New(http.StatusServiceUnavailable, "gateway-unavailable", "Gateway Unavailable", err.Error())
	case errors.Is(err, context.Canceled):
		return
	default:
		a.log.ErrorContext(r.Context(), "request failed", "request_id", middleware.RequestIDFrom(r.Context()),
			"method", r.Method, "path", r.URL.Path, "error", err)
		d = problem.New(http.StatusInternalServerError, "internal", "Internal Server Error", "the request failed; quote the request id when reporting it")
	}
	d.Instance = r.URL.Path
	problem.Write(w, d.With("request_id", middleware.RequestIDFrom(r.Context())))
}
