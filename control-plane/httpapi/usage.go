package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// UsageReader reads metered usage (a *metering.Reader).
type UsageReader interface {
	Usage(ctx context.Context, q metering.Query) (metering.Report, error)
}

// errUsageUnavailable: ClickHouse did not answer a usage read, or this
// control plane has no usage reader; the cause is logged, not shown.
var errUsageUnavailable = errors.New("usage is not available right now")

// usage answers a usage report for the subscription (and key) that scope
// resolves the path's id to, after checking the caller may see it.
// Query: from, to (RFC 3339; default the last 24 hours) and granularity
// (minute, hour (default), day).
func (a *api) usage(scope func(ctx context.Context, act identity.Actor, id uuid.UUID) (uuid.UUID, string, error)) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		q := r.URL.Query()
		var v validation.Error
		to := time.Now().UTC()
		from := to.Add(-24 * time.Hour)
		for _, p := range []struct {
			name string
			dst  *time.Time
		}{{"from", &from}, {"to", &to}} {
			if !q.Has(p.name) {
				continue
			}
			t, err := time.Parse(time.RFC3339, q.Get(p.name))
			if err != nil {
				v.Add(p.name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			*p.dst = t
		}
		g := metering.Hour
		if q.Has("granularity") {
			g = metering.Granularity(q.Get("granularity"))
			if !g.Valid() {
				v.Add("granularity", "must be minute, hour or day")
			}
		}
		if err := v.Err(); err != nil {
			return err
		}
		sub, key, err := scope(r.Context(), actorFrom(r), id)
		if err != nil {
			return err
		}
		if a.cfg.Usage == nil {
			return errUsageUnavailable
		}
		rep, err := a.cfg.Usage.Usage(r.Context(), metering.Query{Subject: sub.String(), KeyID: key, From: from, To: to, Granularity: g})
		if err != nil && !errors.Is(err, metering.ErrBadQuery) && r.Context().Err() == nil {
			a.log.ErrorContext(r.Context(), "usage read failed", "error", err)
			return fmt.Errorf("%w: %w", errUsageUnavailable, err)
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, rep)
		return nil
	}
}
