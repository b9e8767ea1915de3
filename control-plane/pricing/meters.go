package pricing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/pricing/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Meter is a meter of an API, as the API shows it.
type Meter struct {
	ID    uuid.UUID `json:"id"`
	APIID uuid.UUID `json:"api_id"`
	metering.Meter
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// MeterInput creates a meter; an empty name is the slug.
type MeterInput struct {
	Slug        string               `json:"slug"`
	Name        string               `json:"name"`
	Aggregation metering.Aggregation `json:"aggregation"`
	Field       string               `json:"field"`
	Filter      *metering.Filter     `json:"filter"`
}

// MeterPatch changes a meter. The name may always change; the
// aggregation, field and filter only while no plan version a subscription
// has used charges the meter, since they change what its invoices count.
type MeterPatch struct {
	Name        *string               `json:"name"`
	Aggregation *metering.Aggregation `json:"aggregation"`
	Field       *string               `json:"field"`
	Filter      *metering.Filter      `json:"filter"`
}

// validateMeter checks m with metering's rules, naming the field at fault.
func validateMeter(m *metering.Meter) error {
	m.Name = strings.TrimSpace(m.Name)
	if m.Name == "" {
		m.Name = m.Slug
	}
	for _, l := range []*[]string{&m.Filter.Methods, &m.Filter.Routes, &m.Filter.StatusClasses} {
		if *l == nil {
			*l = []string{}
		}
	}
	err := m.Validate()
	if err == nil {
		return nil
	}
	// metering's reasons read "invalid meter: <field>: <detail>".
	field, detail, ok := strings.Cut(strings.TrimPrefix(err.Error(), metering.ErrInvalidMeter.Error()+": "), ": ")
	if !ok {
		return validation.One("meter", err.Error())
	}
	return validation.One(field, detail)
}

func toMeter(r db.Meter) Meter {
	return Meter{
		ID: r.ID, APIID: r.ApiID, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		Meter: metering.Meter{
			Slug: r.Slug, Name: r.Name, Aggregation: metering.Aggregation(r.Aggregation), Field: r.Field,
			Filter: metering.Filter{Methods: r.FilterMethods, Routes: r.FilterRoutes, StatusClasses: r.FilterStatusClasses},
		},
	}
}

// CreateMeter adds a meter to an API the actor provides.
func (s *Service) CreateMeter(ctx context.Context, actor identity.Actor, apiID uuid.UUID, in MeterInput) (Meter, error) {
	m := metering.Meter{Slug: in.Slug, Name: in.Name, Aggregation: in.Aggregation, Field: in.Field}
	if in.Filter != nil {
		m.Filter = *in.Filter
	}
	if err := validateMeter(&m); err != nil {
		return Meter{}, err
	}
	var out Meter
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		org, err := apiFor(ctx, tx, actor, apiID, true)
		if err != nil {
			return err
		}
		out, err = InsertMeter(ctx, tx, actor, org, apiID, m)
		return err
	})
	return out, err
}

// InsertMeter adds the meter m to the API apiID of the organization org in
// tx, recording it in the audit log as actor's: the one write of a new
// meter, over REST and from plan files. An empty name is the slug; an API
// has at most MaxMetersPerAPI meters (ErrMeterLimit).
func InsertMeter(ctx context.Context, tx pgx.Tx, actor identity.Actor, org, apiID uuid.UUID, m metering.Meter) (Meter, error) {
	if err := validateMeter(&m); err != nil {
		return Meter{}, err
	}
	q := db.New(tx)
	// Counting before the insert does not stop two concurrent creates
	// from passing 100 by one each; the bound is against abuse, not
	// an exact limit.
	if n, err := q.MeterCountByAPI(ctx, apiID); err != nil {
		return Meter{}, fmt.Errorf("count meters: %w", err)
	} else if n >= MaxMetersPerAPI {
		return Meter{}, fmt.Errorf("%w: an API has at most %d meters", ErrMeterLimit, MaxMetersPerAPI)
	}
	if err := checkAPIRoutes(ctx, q, apiID, uuid.Nil, m.Filter.Routes); err != nil {
		return Meter{}, err
	}
	row, err := q.MeterInsert(ctx, db.MeterInsertParams{
		ApiID: apiID, Slug: m.Slug, Name: m.Name, Aggregation: db.MeterAggregation(m.Aggregation), Field: m.Field,
		FilterMethods: m.Filter.Methods, FilterRoutes: m.Filter.Routes, FilterStatusClasses: m.Filter.StatusClasses,
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return Meter{}, fmt.Errorf("%w: the API has a meter %q", ErrMeterSlugTaken, m.Slug)
	}
	if err != nil {
		return Meter{}, fmt.Errorf("insert meter: %w", err)
	}
	out := toMeter(row)
	return out, record(ctx, tx, actor, org, "meter.create", out.ID, nil, out)
}

// MeterBySlugForUpdate reads the meter slug of the API apiID, locked until
// tx ends; ErrMeterNotFound when the API has none.
func MeterBySlugForUpdate(ctx context.Context, tx pgx.Tx, apiID uuid.UUID, slug string) (Meter, error) {
	rows, err := db.New(tx).MeterListByAPI(ctx, apiID)
	if err != nil {
		return Meter{}, fmt.Errorf("list meters: %w", err)
	}
	for _, r := range rows {
		if r.Slug != slug {
			continue
		}
		row, err := db.New(tx).MeterGetByIDForUpdate(ctx, r.ID)
		if errors.Is(err, pgx.ErrNoRows) {
			return Meter{}, ErrMeterNotFound
		}
		if err != nil {
			return Meter{}, fmt.Errorf("read meter: %w", err)
		}
		return toMeter(row), nil
	}
	return Meter{}, ErrMeterNotFound
}

// ListMeters lists the meters of an API the actor sees, by slug.
func (s *Service) ListMeters(ctx context.Context, actor identity.Actor, apiID uuid.UUID) ([]Meter, error) {
	if _, err := apiFor(ctx, s.pool, actor, apiID, false); err != nil {
		return nil, err
	}
	rows, err := db.New(s.pool).MeterListByAPI(ctx, apiID)
	if err != nil {
		return nil, fmt.Errorf("list meters: %w", err)
	}
	out := make([]Meter, len(rows))
	for i, r := range rows {
		out[i] = toMeter(r)
	}
	return out, nil
}

// GetMeter returns a meter of an API the actor sees.
func (s *Service) GetMeter(ctx context.Context, actor identity.Actor, id uuid.UUID) (Meter, error) {
	var out Meter
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		m, _, err := loadMeter(ctx, tx, actor, id, false, false)
		out = m
		return err
	})
	return out, err
}

// loadMeter reads a meter the actor sees (else ErrMeterNotFound), locked
// when lock, and checks that the actor may change it when change; a
// change of a meter a plan file manages is ErrFileManaged.
func loadMeter(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID, change, lock bool) (Meter, uuid.UUID, error) {
	q := db.New(tx)
	var row db.Meter
	var err error
	if lock {
		row, err = q.MeterGetByIDForUpdate(ctx, id)
	} else {
		row, err = q.MeterGetByID(ctx, id)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return Meter{}, uuid.Nil, ErrMeterNotFound
	}
	if err != nil {
		return Meter{}, uuid.Nil, fmt.Errorf("read meter: %w", err)
	}
	// Visibility first: a meter of an API the actor may not see is not
	// found, whether it asks to read or to change it.
	org, err := apiFor(ctx, tx, actor, row.ApiID, false)
	if errors.Is(err, catalog.ErrAPINotFound) {
		return Meter{}, uuid.Nil, ErrMeterNotFound
	}
	if err != nil {
		return Meter{}, uuid.Nil, err
	}
	if change && !actor.CanProvide(org) {
		return Meter{}, uuid.Nil, identity.ErrForbidden
	}
	if change {
		file, err := q.MeterSourceFile(ctx, id)
		if err == nil {
			return Meter{}, uuid.Nil, FileManaged("meter "+row.Slug, file)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return Meter{}, uuid.Nil, fmt.Errorf("read meter's plan files: %w", err)
		}
	}
	return toMeter(row), org, nil
}

// UpdateMeter changes a meter (see MeterPatch).
func (s *Service) UpdateMeter(ctx context.Context, actor identity.Actor, id uuid.UUID, p MeterPatch) (Meter, error) {
	var out Meter
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, org, err := loadMeter(ctx, tx, actor, id, true, true)
		if err != nil {
			return err
		}
		m := before.Meter
		m.Filter = metering.Filter{
			Methods: slices.Clone(m.Filter.Methods), Routes: slices.Clone(m.Filter.Routes), StatusClasses: slices.Clone(m.Filter.StatusClasses),
		}
		if p.Name != nil {
			m.Name = *p.Name
		}
		if p.Aggregation != nil {
			m.Aggregation = *p.Aggregation
		}
		if p.Field != nil {
			m.Field = *p.Field
		}
		if p.Filter != nil {
			m.Filter = *p.Filter
		}
		out, err = ChangeMeter(ctx, tx, actor, org, before, m)
		return err
	})
	return out, err
}

// ChangeMeter writes m over the meter before (read locked in tx) of the
// organization org, recording it in the audit log as actor's: the one
// write of a meter's change, over REST and from plan files. Its
// aggregation, field and filter may change only while no plan version a
// subscription has used charges it (ErrMeterInUse); the versions' locks
// are taken, so a first subscription committing meanwhile is waited for.
func ChangeMeter(ctx context.Context, tx pgx.Tx, actor identity.Actor, org uuid.UUID, before Meter, m metering.Meter) (Meter, error) {
	if err := validateMeter(&m); err != nil {
		return Meter{}, err
	}
	q := db.New(tx)
	if !sameDefinition(before.Meter, m) {
		used, err := q.MeterLockUsed(ctx, before.ID)
		if err != nil {
			return Meter{}, fmt.Errorf("check meter use: %w", err)
		}
		if used {
			return Meter{}, fmt.Errorf("%w: meter %s is charged by a plan version a subscription uses; its aggregation, field and filter "+
				"cannot change (add a new meter and a new plan version instead)", ErrMeterInUse, before.Slug)
		}
	}
	if err := checkAPIRoutes(ctx, q, before.APIID, before.ID, m.Filter.Routes); err != nil {
		return Meter{}, err
	}
	row, err := q.MeterUpdate(ctx, db.MeterUpdateParams{
		ID: before.ID, Name: m.Name, Aggregation: db.MeterAggregation(m.Aggregation), Field: m.Field,
		FilterMethods: m.Filter.Methods, FilterRoutes: m.Filter.Routes, FilterStatusClasses: m.Filter.StatusClasses,
	})
	if err != nil {
		return Meter{}, fmt.Errorf("update meter: %w", err)
	}
	out := toMeter(row)
	return out, record(ctx, tx, actor, org, "meter.update", before.ID, before, out)
}

// checkAPIRoutes reports whether routes, the routes of the meter id of the
// API apiID (uuid.Nil for a new one), keep the route patterns of all the
// API's meters within enforcement.MaxAPIMeterRoutesBytes together: the
// processors test every event of a subscription against its meters'
// routes, and a subscription record holding more is refused. As with the
// count of meters, two concurrent writes may each pass the check; the
// record's check then refuses the subscriptions' records.
func checkAPIRoutes(ctx context.Context, q *db.Queries, apiID, id uuid.UUID, routes []string) error {
	rows, err := q.MeterListByAPI(ctx, apiID)
	if err != nil {
		return fmt.Errorf("list meters: %w", err)
	}
	total := routeBytes(routes)
	for _, r := range rows {
		if r.ID != id {
			total += routeBytes(r.FilterRoutes)
		}
	}
	if total > enforcement.MaxAPIMeterRoutesBytes {
		return validation.One("filter.routes", fmt.Sprintf("the route patterns of all the API's meters are at most %d bytes together; "+
			"with these they would be %d", enforcement.MaxAPIMeterRoutesBytes, total))
	}
	return nil
}

func routeBytes(routes []string) int {
	n := 0
	for _, r := range routes {
		n += len(r)
	}
	return n
}

// sameDefinition reports whether a and b count the same events the same
// way (the name aside).
func sameDefinition(a, b metering.Meter) bool {
	return a.Aggregation == b.Aggregation && a.Field == b.Field && slices.Equal(a.Filter.Methods, b.Filter.Methods) &&
		slices.Equal(a.Filter.Routes, b.Filter.Routes) && slices.Equal(a.Filter.StatusClasses, b.Filter.StatusClasses)
}

// DeleteMeter removes a meter that no plan version charges.
func (s *Service) DeleteMeter(ctx context.Context, actor identity.Actor, id uuid.UUID) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		before, org, err := loadMeter(ctx, tx, actor, id, true, true)
		if err != nil {
			return err
		}
		q := db.New(tx)
		inUse := fmt.Errorf("%w: meter %s is charged by a plan version; it cannot be deleted", ErrMeterInUse, before.Slug)
		if charged, err := q.MeterCharged(ctx, id); err != nil {
			return fmt.Errorf("check meter charges: %w", err)
		} else if charged {
			return inUse
		}
		// A version adding a charge after the check meets the foreign key
		// (ON DELETE RESTRICT) instead.
		if err := q.MeterDelete(ctx, id); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23503" {
				return inUse
			}
			return fmt.Errorf("delete meter: %w", err)
		}
		return record(ctx, tx, actor, org, "meter.delete", id, before, nil)
	})
}
