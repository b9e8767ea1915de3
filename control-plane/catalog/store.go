package catalog

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/catalog/internal/db"
)

// apiRow is a generated row holding an API's columns; sqlc gives each
// query a type of its own, all with the fields of db.APIGetByIDRow.
type apiRow interface {
	db.APIGetByIDRow | db.APIGetByIDForUpdateRow | db.APIInsertRow | db.APIUpdateRow |
		db.APIUpdateVersionRow | db.APIUpdateStateRow
}

// rowErr translates the error of a query that reads one row: no row is
// notFound, another error says it failed to read what.
func rowErr(err, notFound error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound
	}
	if err != nil {
		return fmt.Errorf("scan %s: %w", what, err)
	}
	return nil
}

// toAPI converts the row of a query that reads an API; no row is
// ErrAPINotFound.
func toAPI[R apiRow](r R, err error) (API, error) {
	if err := rowErr(err, ErrAPINotFound, "api"); err != nil {
		return API{}, err
	}
	row := db.APIGetByIDRow(r)
	a := API{
		ID: row.ID, OrganizationID: row.OrganizationID,
		APIInput: APIInput{
			Name: row.Name, Slug: row.Slug, Description: row.Description, UpstreamURL: row.UpstreamUrl, Version: row.Version,
			HealthCheckPath: row.HealthCheckPath, DocsURL: row.DocsUrl, Visibility: Visibility(row.Visibility),
		},
		State: State(row.State), StateReason: row.StateReason, CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt,
	}
	if err := json.Unmarshal(row.Routes, &a.Routes); err != nil {
		return API{}, fmt.Errorf("decode api routes: %w", err)
	}
	if a.Routes == nil {
		a.Routes = []Route{}
	}
	a.GatewayPath = "/" + a.Slug
	return a, nil
}

// servedRow is a generated row holding an API as the gateway serves it.
type servedRow interface {
	db.APIServedGetByIDRow | db.APIServedListRoutingRow
}

// approvedSnapshot is what a review approved (apis.approved_snapshot); a
// field the snapshot lacks stays nil.
type approvedSnapshot struct {
	Slug            *string         `json:"slug"`
	UpstreamURL     *string         `json:"upstream_url"`
	Routes          json.RawMessage `json:"routes"`
	HealthCheckPath *string         `json:"health_check_path"`
}

// toServed converts the row of a query that reads a served API: the slug,
// upstream, routes and health path come from the approved snapshot. An API
// without one is returned with ErrNotApproved, its id and state set.
func toServed[R servedRow](r R, err error) (API, error) {
	if err := rowErr(err, ErrAPINotFound, "served api"); err != nil {
		return API{}, err
	}
	row := db.APIServedGetByIDRow(r)
	a := API{
		ID: row.ID, OrganizationID: row.OrganizationID,
		APIInput: APIInput{
			Name: row.Name, Description: row.Description, Version: row.Version, DocsURL: row.DocsUrl, Visibility: Visibility(row.Visibility),
		},
		State: State(row.State), StateReason: row.StateReason, CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt,
	}
	var snap approvedSnapshot
	if row.ApprovedSnapshot != nil {
		if err := json.Unmarshal(row.ApprovedSnapshot, &snap); err != nil {
			return API{}, fmt.Errorf("decode approved snapshot: %w", err)
		}
	}
	if row.ApprovedSnapshot == nil || snap.Slug == nil || snap.UpstreamURL == nil || snap.HealthCheckPath == nil {
		return a, fmt.Errorf("api %s: %w", a.ID, ErrNotApproved)
	}
	a.Slug, a.UpstreamURL, a.HealthCheckPath = *snap.Slug, *snap.UpstreamURL, *snap.HealthCheckPath
	if err := json.Unmarshal(snap.Routes, &a.Routes); err != nil {
		return API{}, fmt.Errorf("decode approved routes: %w", err)
	}
	a.GatewayPath = "/" + a.Slug
	if row.Secret != nil {
		a.signing = &signing{secret: *row.Secret, previousUntil: row.PreviousUntil}
		if row.PreviousSecret != nil {
			a.signing.previous = *row.PreviousSecret
		}
	}
	return a, nil
}

// approvalRow is a generated row holding an approval request.
type approvalRow interface {
	db.ApprovalGetByIDRow | db.ApprovalGetByIDForUpdateRow | db.ApprovalListRow
}

// toApproval converts the row of a query that reads an approval request;
// no row is ErrApprovalNotFound. Overdue is left to withOverdue.
func toApproval[R approvalRow](r R, err error) (Approval, error) {
	if err := rowErr(err, ErrApprovalNotFound, "approval"); err != nil {
		return Approval{}, err
	}
	row := db.ApprovalGetByIDRow(r)
	return Approval{
		ID: row.ID, APIID: row.ApiID, APIName: row.Name, OrganizationID: row.OrganizationID,
		Status: ApprovalStatus(row.Status), Priority: Priority(row.Priority), EscalationLevel: int(row.EscalationLevel),
		SubmittedBy: row.SubmittedBy, DueAt: row.DueAt, DecidedBy: row.DecidedBy, DecidedAt: row.DecidedAt,
		DecisionReason: row.DecisionReason, CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt,
	}, nil
}

// withOverdue sets r.Overdue by the service's clock.
func (s *Service) withOverdue(r Approval, err error) (Approval, error) {
	if err != nil {
		return Approval{}, err
	}
	r.Overdue = r.Status.open() && s.now().After(r.DueAt)
	return r, nil
}
