// Package ingesttokens issues, lists and revokes the bearer tokens that
// producers other than the gateway post usage events to ingest with. Only
// platform admins reach it (the HTTP layer checks the role). A token's
// plaintext is returned once, by Create; the database keeps its SHA-256.
// Every change is audited in the same transaction. The queries are in
// internal/db (sqlc).
package ingesttokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/ingesttokens/internal/db"
	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/internal/validation"
)

// ErrNotFound reports a token id that does not exist.
var ErrNotFound = errors.New("ingest token not found")

// Token is an issued token without its secret. Its fields are the columns
// of the token queries (internal/db), in their order, so that a row
// converts to it.
type Token struct {
	ID        uuid.UUID  `json:"id"`
	Name      string     `json:"name"`
	Prefix    string     `json:"prefix"`
	Sources   []string   `json:"sources"`
	APIIDs    []string   `json:"api_ids"`
	CreatedBy string     `json:"created_by"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
}

// Issued is a new token with its plaintext, shown once.
type Issued struct {
	Token
	Secret string `json:"token"`
}

// CreateInput describes a token to issue.
type CreateInput struct {
	Name string `json:"name"`
	// Sources the token may write: exact CloudEvents sources, or prefixes
	// ending in *. A gateway's source (/gateway/...) is matched only by an
	// entry that names it.
	Sources []string `json:"sources"`
	// APIIDs restricts the token to these APIs; empty means any.
	APIIDs []string `json:"api_ids"`
}

// Validate reports every wrong field.
func (in CreateInput) Validate() error {
	var v validation.Error
	if n := len([]rune(in.Name)); n < 1 || n > 200 {
		v.Add("name", "must be 1 to 200 characters")
	}
	if len(in.Sources) < 1 || len(in.Sources) > 100 {
		v.Add("sources", "must list 1 to 100 sources")
	}
	for i, s := range in.Sources {
		if d := ingesttoken.CheckSource(s); d != "" {
			v.Add(fmt.Sprintf("sources[%d]", i), "%s", d)
		}
	}
	if len(in.APIIDs) > 100 {
		v.Add("api_ids", "must list at most 100 APIs")
	}
	for i, id := range in.APIIDs {
		if _, err := uuid.Parse(id); err != nil {
			v.Add(fmt.Sprintf("api_ids[%d]", i), "must be a UUID")
		}
	}
	return v.Err()
}

// Service manages ingest tokens.
type Service struct {
	pool *pgxpool.Pool
}

// New returns a Service on pool.
func New(pool *pgxpool.Pool) *Service { return &Service{pool: pool} }

// readErr translates the error of reading a token: no row is ErrNotFound.
func readErr(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return fmt.Errorf("read ingest token: %w", err)
}

// Create issues a token. Its plaintext is in the answer only.
func (s *Service) Create(ctx context.Context, actor identity.Actor, in CreateInput) (Issued, error) {
	if err := in.Validate(); err != nil {
		return Issued{}, err
	}
	// Stored as Postgres writes UUIDs (lower case, no braces or urn:uuid:),
	// the form events and subscriptions carry: scopes compare as strings.
	apiIDs := make([]string, 0, len(in.APIIDs))
	for _, id := range in.APIIDs {
		u, _ := uuid.Parse(id) // Validate parsed it
		apiIDs = append(apiIDs, u.String())
	}
	in.APIIDs = apiIDs
	secret, err := ingesttoken.Generate()
	if err != nil {
		return Issued{}, err
	}
	hash := ingesttoken.Hash(secret)
	var out Token
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		row, err := db.New(tx).TokenInsert(ctx, db.TokenInsertParams{
			Name: in.Name, Prefix: secret[:ingesttoken.ShownPrefixLen], TokenHash: hash[:],
			Sources: in.Sources, APIIDs: in.APIIDs, CreatedBy: actor.Subject,
		})
		if err != nil {
			return readErr(err)
		}
		out = Token(row)
		return record(ctx, tx, actor, "ingest_token.create", out.ID, nil, out)
	})
	if err != nil {
		return Issued{}, err
	}
	return Issued{Token: out, Secret: secret}, nil
}

// List returns every token, revoked ones included, oldest first.
func (s *Service) List(ctx context.Context) ([]Token, error) {
	rows, err := db.New(s.pool).TokenList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list ingest tokens: %w", err)
	}
	out := make([]Token, 0, len(rows))
	for _, r := range rows {
		out = append(out, Token(r))
	}
	return out, nil
}

// Revoke revokes a token; ingest refuses it once its cache entry expires.
// Revoking a revoked token changes nothing.
func (s *Service) Revoke(ctx context.Context, actor identity.Actor, id uuid.UUID) (Token, error) {
	var out Token
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		row, err := q.TokenGetByIDForUpdate(ctx, id)
		if err != nil {
			return readErr(err)
		}
		before := Token(row)
		if before.RevokedAt != nil {
			out = before
			return nil
		}
		revoked, err := q.TokenRevoke(ctx, db.TokenRevokeParams{ID: id, RevokedBy: actor.Subject})
		if err != nil {
			return readErr(err)
		}
		out = Token(revoked)
		return record(ctx, tx, actor, "ingest_token.revoke", id, before, out)
	})
	return out, err
}

func record(ctx context.Context, tx pgx.Tx, actor identity.Actor, action string, id uuid.UUID, before, after any) error {
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), Action: action,
		TargetType: "ingest_token", TargetID: id.String(), Before: before, After: after,
	}); err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}
