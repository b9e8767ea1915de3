package billing

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/metering"
)

// cycleMemo keeps, for one run of the billing cycle, what thousands of
// invoices read alike: the terms of the few plan versions (a version's
// terms and payment terms never change once it exists) and each issuer's tax treatment of
// a customer's country and region at a period's end. Without it every
// invoice read them again, three round trips per version and two for
// the tax, most of an invoice's reads. A tax rule changed during a run
// applies from the next run, as one changed just after the run would.
type cycleMemo struct {
	mu      sync.Mutex
	terms   map[uuid.UUID]metering.PlanTerms
	netDays map[uuid.UUID]int32
	tax     map[taxKey]taxChoice
}

type taxKey struct {
	issuer          uuid.UUID
	country, region string
	vatID           bool // the customer's tax id is a valid VAT id of its country
	at              time.Time
}

type taxChoice struct {
	treatment metering.TaxTreatment
	rule      *TaxRule
}

type memoKey struct{}

// withMemo returns ctx carrying a new memo for one cycle run.
func withMemo(ctx context.Context) context.Context {
	return context.WithValue(ctx, memoKey{}, &cycleMemo{
		terms: map[uuid.UUID]metering.PlanTerms{}, netDays: map[uuid.UUID]int32{}, tax: map[taxKey]taxChoice{},
	})
}

func memoOf(ctx context.Context) *cycleMemo {
	m, _ := ctx.Value(memoKey{}).(*cycleMemo)
	return m
}

// termsFor is pricing.TermsForVersion, kept for the run when ctx has a
// memo. Two workers may read the same version at once: both get the same
// terms.
func (s *Service) termsFor(ctx context.Context, version uuid.UUID) (metering.PlanTerms, error) {
	m := memoOf(ctx)
	if m != nil {
		m.mu.Lock()
		t, ok := m.terms[version]
		m.mu.Unlock()
		if ok {
			return t, nil
		}
	}
	t, err := pricing.TermsForVersion(ctx, s.pool, version)
	if err != nil || m == nil {
		return t, err
	}
	m.mu.Lock()
	m.terms[version] = t
	m.mu.Unlock()
	return t, nil
}

// taxRuleFor is TaxRuleFor, kept for the run when ctx has a memo: the
// treatment depends only on the issuer, the customer's country, region
// and whether its tax id is a valid VAT id (taxTreatment), and the time.
func (s *Service) taxRuleFor(ctx context.Context, issuer uuid.UUID, customer Profile, at time.Time) (metering.TaxTreatment, *TaxRule, error) {
	m := memoOf(ctx)
	k := taxKey{issuer: issuer, country: customer.Country, region: customer.Region, vatID: validVATID(customer.Country, customer.TaxID), at: at.UTC()}
	if m != nil {
		m.mu.Lock()
		c, ok := m.tax[k]
		m.mu.Unlock()
		if ok {
			return c.treatment, c.rule, nil
		}
	}
	t, rule, err := s.TaxRuleFor(ctx, issuer, customer, at)
	if err != nil || m == nil {
		return t, rule, err
	}
	m.mu.Lock()
	m.tax[k] = taxChoice{treatment: t, rule: rule}
	m.mu.Unlock()
	return t, rule, nil
}

// netDaysFor is a plan version's net days read through q, kept for the
// run when ctx has a memo.
func netDaysFor(ctx context.Context, q *db.Queries, version uuid.UUID) (int32, error) {
	m := memoOf(ctx)
	if m != nil {
		m.mu.Lock()
		n, ok := m.netDays[version]
		m.mu.Unlock()
		if ok {
			return n, nil
		}
	}
	n, err := q.PlanVersionNetDays(ctx, version)
	if err != nil || m == nil {
		return n, err
	}
	m.mu.Lock()
	m.netDays[version] = n
	m.mu.Unlock()
	return n, nil
}
