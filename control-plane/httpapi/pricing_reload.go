package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/control-plane/planfiles"
	"github.com/veil-platform/veil/internal/problem"
)

// PlanFilesReloader reloads the plan directory (a *planfiles.Loader).
type PlanFilesReloader interface {
	ReloadRequested(ctx context.Context, actor *identity.Actor) (planfiles.Report, error)
}

var _ PlanFilesReloader = (*planfiles.Loader)(nil)

// reloadPlanFiles is an admin's POST /v1/admin/pricing/reload: the plan
// directory is loaded now, as the watcher would on a change. The answer
// lists the files applied and unchanged; a wrong file makes it a 422
// problem listing every error by file, line and field, and nothing is
// applied.
func (a *api) reloadPlanFiles(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.PlanFiles == nil {
		writeProblem(w, r, problem.New(http.StatusConflict, "no-plan-directory", "No Plan Directory",
			"this control plane loads no plan files: set VEIL_PRICING_DIR"))
		return nil
	}
	actor := actorFrom(r)
	rep, err := a.cfg.PlanFiles.ReloadRequested(r.Context(), &actor)
	if errors.Is(err, planfiles.ErrInvalid) {
		d := problem.New(http.StatusUnprocessableEntity, "invalid-plan-files", "Invalid Plan Files",
			"a plan file is wrong; nothing was reloaded and the running pricing is unchanged")
		writeProblem(w, r, d.With("applied", rep.Applied).With("unchanged", rep.Unchanged).With("errors", rep.Errors))
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// writeProblem sends d as fail does: with the request's path and id.
func writeProblem(w http.ResponseWriter, r *http.Request, d problem.Details) {
	d.Instance = r.URL.Path
	problem.Write(w, d.With("request_id", middleware.RequestIDFrom(r.Context())))
}
