package httpapi

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering"
)

// previewJSON is GET /v1/subscriptions/{id}/preview's answer: the
// invoice draft of the period so far, and where the period is heading.
type previewJSON struct {
	invoiceJSON
	AsOf       time.Time          `json:"as_of"`
	CostSoFar  string             `json:"cost_so_far"`
	Projection projectionJSON     `json:"projection"`
	Meters     []meterOutlookJSON `json:"meters"`
}

// projectionJSON is the period's total at its end, point and range.
type projectionJSON struct {
	Total      string `json:"total"`
	TotalLow   string `json:"total_low"`
	TotalHigh  string `json:"total_high"`
	Confidence string `json:"confidence"`
	Method     string `json:"method"`
}

type meterOutlookJSON struct {
	Meter         string     `json:"meter"`
	Used          string     `json:"used"`
	Projected     string     `json:"projected"`
	ProjectedLow  string     `json:"projected_low"`
	ProjectedHigh string     `json:"projected_high"`
	Quota         *string    `json:"quota"`
	QuotaHard     bool       `json:"quota_hard"`
	RunsOutAt     *time.Time `json:"runs_out_at"`
}

// previewOut answers the preview with its outlook.
func (a *api) previewOut(ctx context.Context, act identity.Actor, id uuid.UUID) (previewJSON, error) {
	inv, o, err := a.cfg.Billing.PreviewOutlook(ctx, act, id)
	if err != nil {
		return previewJSON{}, err
	}
	return toPreviewJSON(inv, o), nil
}

func toPreviewJSON(inv billing.Invoice, o billing.Outlook) previewJSON {
	out := previewJSON{
		invoiceJSON: toInvoiceJSON(inv), AsOf: o.AsOf.UTC(), CostSoFar: money(o.Currency, o.CostSoFar),
		Projection: projectionJSON{
			Total: money(o.Currency, o.Projected), TotalLow: money(o.Currency, o.ProjectedLow), TotalHigh: money(o.Currency, o.ProjectedHigh),
			Confidence: metering.ForecastConfidence, Method: o.Method,
		},
		Meters: make([]meterOutlookJSON, len(o.Meters)),
	}
	for i, m := range o.Meters {
		mj := meterOutlookJSON{
			Meter: m.Meter, Used: m.Used.String(), Projected: m.Projected.String(), ProjectedLow: m.ProjectedLow.String(),
			ProjectedHigh: m.ProjectedHigh.String(), QuotaHard: m.QuotaHard,
		}
		if m.Quota != nil {
			q := m.Quota.String()
			mj.Quota = &q
		}
		if m.RunsOutAt != nil {
			t := m.RunsOutAt.UTC()
			mj.RunsOutAt = &t
		}
		out.Meters[i] = mj
	}
	return out
}
