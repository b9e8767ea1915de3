package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/veil-platform/veil/control-plane/identity"
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
		return errNoPlanDirectory
	}
	actor := actorFrom(r)
	rep, err := a.cfg.PlanFiles.ReloadRequested(r.Context(), &actor)
	if errors.Is(err, planfiles.ErrInvalid) {
		return &invalidPlanFiles{rep: rep}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

var errNoPlanDirectory = errors.New("this control plane loads no plan files: set VEIL_PRICING_DIR")

// invalidPlanFiles is a reload refused for its files' errors, which its
// problem lists with what was applied and left unchanged.
type invalidPlanFiles struct{ rep planfiles.Report }

func (e *invalidPlanFiles) Error() string {
	return "reload plan files: " + planfiles.ErrInvalid.Error()
}

// problem is the 422 fail answers for e.
func (e *invalidPlanFiles) problem() problem.Details {
	d := problem.New(http.StatusUnprocessableEntity, "invalid-plan-files", "Invalid Plan Files",
		"a plan file is wrong; nothing was reloaded and the running pricing is unchanged")
	return d.With("applied", e.rep.Applied).With("unchanged", e.rep.Unchanged).With("errors", e.rep.Errors)
}
