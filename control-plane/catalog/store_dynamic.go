package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/catalog/internal/db"
	"github.com/veil-platform/veil/internal/pagination"
)

// The catalog's statements that sqlc cannot generate: the API list, whose
// scope depends on the caller's role; the queue statistics, whose median is
// NULL when nothing was decided (sqlc types an aggregate as never NULL);
// and the look-up of River's jobs, whose tables are River's migrations,
// not ours.

// listAPIsSQL lists APIs by cursor; scopeSQL is apiScope or adminScope.
const listAPIsSQL = `SELECT id, organization_id, name, slug, description, upstream_url, version, routes, health_check_path,
	docs_url, visibility, state, state_reason, created_by, created_at, updated_at FROM apis
		WHERE %s AND ($2 = '' OR state = $2::api_state)
		  AND ($3 = '' OR name ILIKE '%%' || $3 || '%%' OR slug ILIKE '%%' || $3 || '%%')
		  AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
		ORDER BY created_at, id LIMIT $6`

// Admins see everything ($1 is still typed, so the query plans alike);
// everyone else their organization's APIs and the public catalog: VisibleTo's
// rule, in SQL, which must change with it.
const (
	apiScope   = "(organization_id = $1::uuid OR (visibility = 'public' AND state IN ('active', 'deprecated')))"
	adminScope = "($1::uuid IS NULL OR true)"
)

// apiList returns one page (limit+1 rows) of the APIs in scope.
func apiList(ctx context.Context, q db.DBTX, admin bool, org uuid.UUID, state State, search string, after pagination.Cursor, limit int) ([]API, error) {
	scope := apiScope
	if admin {
		scope = adminScope
	}
	rows, err := q.Query(ctx, fmt.Sprintf(listAPIsSQL, scope), org, string(state), search, after.Time(), after.ID, limit)
	if err != nil {
		return nil, fmt.Errorf("list apis: %w", err)
	}
	defer rows.Close()
	var out []API
	for rows.Next() {
		var r db.APIGetByIDRow
		err := rows.Scan(&r.ID, &r.OrganizationID, &r.Name, &r.Slug, &r.Description, &r.UpstreamUrl, &r.Version, &r.Routes,
			&r.HealthCheckPath, &r.DocsUrl, &r.Visibility, &r.State, &r.StateReason, &r.CreatedBy, &r.CreatedAt, &r.UpdatedAt)
		a, err := toAPI(r, err)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list apis: %w", err)
	}
	return out, nil
}

// approvalStatsAt fills the overdue count, the median decision time and the
// count of decisions after their due time.
func approvalStatsAt(ctx context.Context, q db.DBTX, now time.Time, st *Stats) error {
	return q.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE status IN ('pending', 'escalated') AND due_at < $1),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)) FILTER (WHERE decided_at IS NOT NULL),
			count(*) FILTER (WHERE decided_at > due_at)
		FROM approval_requests`, now).Scan(&st.Overdue, &st.MedianDecisionSeconds, &st.DecidedAfterDue)
}

// registrationJobOpen reports whether an API has a registration job
// waiting or running.
func registrationJobOpen(ctx context.Context, tx pgx.Tx, id uuid.UUID) (bool, error) {
	var open bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM river_job WHERE kind = $1 AND args->>'api_id' = $2
			AND state IN ('available', 'pending', 'retryable', 'running', 'scheduled'))`, RegisterArgs{}.Kind(), id.String()).Scan(&open)
	return open, err
}
