package httpapi

import (
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/validation"
)

func (a *api) listAudit(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 50
	}
	q := r.URL.Query()
	// One row more than asked tells whether a next page exists.
	f := audit.Filter{TargetType: q.Get("target_type"), TargetID: q.Get("target_id"), Action: q.Get("action"), Actor: q.Get("actor"), Limit: limit + 1}
	if err := auditCursor(r, &f); err != nil {
		return err
	}
	act := actorFrom(r)
	var v validation.Error
	org := queryUUID(r, "organization_id", &v)
	f.Since, f.Until = queryTime(r, "since", &v), queryTime(r, "until", &v)
	if f.Since != nil && f.Until != nil && !f.Until.After(*f.Since) {
		v.Add("until", "must be after since")
	}
	if err := v.Err(); err != nil {
		return err
	}
	switch {
	case act.Role != identity.RoleAdmin:
		f.OrganizationID = &act.OrgID
	case org != uuid.Nil:
		f.OrganizationID = &org
	}
	items, err := audit.List(r.Context(), a.cfg.Pool, f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, auditPage(items, limit))
	return nil
}

// auditCursor reads an audit list's cursor: the id below which to list.
func auditCursor(r *http.Request, f *audit.Filter) error {
	q := r.URL.Query()
	if !q.Has("cursor") {
		return nil
	}
	n, err := strconv.ParseInt(q.Get("cursor"), 10, 64)
	if err != nil || n <= 0 {
		return pagination.ErrBadCursor
	}
	f.BeforeID = n
	return nil
}

// auditPage trims one page from items fetched with limit+1.
func auditPage(items []audit.Entry, limit int) list[audit.Entry] {
	next := ""
	if len(items) > limit {
		items = items[:limit]
		next = strconv.FormatInt(items[len(items)-1].ID, 10)
	}
	return newList(items, next)
}
