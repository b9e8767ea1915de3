package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/metering"
)

// The billing cycle invoices set by set. A batch of periods is read in a
// few queries (periods, segments, billing profiles, redemptions), each
// invoice is computed in Go with metering.BuildInvoice, and the invoices
// of one issuer are written, and finalized, in one transaction of a few
// statements that takes the issuer's number lock once for consecutive
// numbers. What the batch cannot compute from its reads alone goes the
// way of a single invoice (buildDraft, Finalize), after the batch:
//   - a second period of a subscription in the batch (its invoice
//     follows what the first one applies of credit and promotions);
//   - a period behind an earlier one of its subscription not invoiced
//     yet (it waits as a draft);
//   - a period whose basis, or the basis of a pending adjustment it
//     bills, cannot be read (the single path reports why).
//
// The guarantees are the single invoice's: one invoice per period, gapless
// numbers per issuer and year, every change of a finalization in the
// transaction that takes its number. When something under a set changes
// after it was read (a period invoiced, a draft finalized or voided,
// an adjustment billed, a promotion applied), the transaction is rolled
// back and the set written again without the items that changed, which
// go one by one right after it (retrySet).
//
// The order of numbers: a set's are consecutive in period order, an
// issuer's sets of a batch are written one after another in period order,
// and a batch's after the one before it; what goes one by one is numbered
// after the set it left (items that changed) or after the batch's sets
// (the rest), on several workers at once, in no set order among
// themselves. A subscription's invoices are always numbered in the order
// of their periods (ErrEarlierDraft).

// cycleBatch is how many periods the cycle reads and invoices at once;
// setChunk how many invoices of an issuer one transaction writes at most,
// so that a run cut short keeps most of what it did; setRetries how many
// times a set is written again without what changed under it before the
// rest of it goes one by one too.
const (
	cycleBatch = 2000
	setChunk   = 500
	setRetries = 3
)

// errSetChanged: something under a set changed after it was read (a
// concurrent run, or the API, invoiced part of it first); its transaction
// is rolled back and the set written again without what changed.
var errSetChanged = errors.New("invoices of the set changed meanwhile")

// cycleJob is a period to invoice and, when it has one, its draft.
type cycleJob struct {
	invoice                       uuid.UUID // uuid.Nil: none built yet
	period, sub, issuer, customer uuid.UUID
	start, end                    time.Time
}

// setItem is a job with what its invoice is computed from and, once
// computed, the invoice.
type setItem struct {
	job    cycleJob
	b      *basis
	trial  bool
	promos []db.RedemptionsForPeriodRow
	adjs   []db.BillingAdjustment
	c      computed
	// id is the invoice's, once stored; ledger its credit movements.
	id     uuid.UUID
	ledger []db.CreditLedgerInsertManyParams
}

// buildAllSets builds (and, with finalize, finalizes) the drafts of the
// closed periods that have none, batch by batch; it returns how many it
// built.
func (s *Service) buildAllSets(ctx context.Context, finalize bool) (int, error) {
	return s.buildSets(ctx, finalize, cycleBatch)
}

// buildSets is buildAllSets by batches of size periods.
func (s *Service) buildSets(ctx context.Context, finalize bool, size int) (int, error) {
	return s.pipeline(ctx, finalize, size, func(after cursor) ([]cycleJob, error) {
		rows, err := db.New(s.pool).PeriodsToInvoiceWith(ctx, db.PeriodsToInvoiceWithParams{AfterEnd: after.end, AfterID: after.id, Max: int32(size)})
		if err != nil {
			return nil, fmt.Errorf("list periods to invoice: %w", err)
		}
		jobs := make([]cycleJob, len(rows))
		for i, r := range rows {
			jobs[i] = cycleJob{period: r.ID, sub: r.SubscriptionID, issuer: r.IssuerID, customer: r.CustomerID, start: r.PeriodStart, end: r.PeriodEnd}
		}
		return jobs, nil
	})
}

// finalizeAllSets finalizes the drafts built before the review time,
// batch by batch; it returns how many it finalized.
func (s *Service) finalizeAllSets(ctx context.Context) (int, error) {
	return s.finalizeSets(ctx, cycleBatch)
}

// finalizeSets is finalizeAllSets by batches of size drafts.
func (s *Service) finalizeSets(ctx context.Context, size int) (int, error) {
	builtBefore := s.now().Add(-s.cfg.Review)
	return s.pipeline(ctx, true, size, func(after cursor) ([]cycleJob, error) {
		rows, err := db.New(s.pool).DraftsToFinalizeWith(ctx, db.DraftsToFinalizeWithParams{
			BuiltBefore: builtBefore, AfterEnd: after.end, AfterID: after.id, Max: int32(size),
		})
		if err != nil {
			return nil, fmt.Errorf("list drafts to finalize: %w", err)
		}
		jobs := make([]cycleJob, len(rows))
		for i, r := range rows {
			jobs[i] = cycleJob{invoice: r.InvoiceID, period: *r.BillingPeriodID, sub: r.SubscriptionID, issuer: r.IssuerID,
				customer: r.CustomerID, start: r.PeriodStart, end: r.PeriodEnd}
		}
		return jobs, nil
	})
}

// cursor is where a listing of jobs goes on: after the period end and
// the id (the period's, or the draft's) of the last one listed.
type cursor struct {
	end time.Time
	id  uuid.UUID
}

// prepared is a batch read and ready to write; chunk, when not 0, is
// how many items of an issuer a transaction writes (setChunk).
type prepared struct {
	items []*setItem
	slow  []cycleJob
	err   error
	chunk int
}

// pipeline lists jobs batch after batch, size at a time, and invoices
// them: while one batch is written, the next one is read, so that the
// reads of a batch cost no time of their own. It returns how many drafts
// it built (without finalize) or invoices it finalized. What a batch
// fails to invoice does not stop the batches after it: those items come
// first again in the next run, and a run that stopped at them would
// never reach the others. It stops at a listing or reading error, which
// no later batch would escape, or when ctx ends.
func (s *Service) pipeline(ctx context.Context, finalize bool, size int, list func(after cursor) ([]cycleJob, error)) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan prepared, 1)
	go func() {
		defer close(batches)
		var after cursor
		for {
			jobs, err := list(after)
			p := prepared{err: err}
			if err == nil {
				p.items, p.slow, p.err = s.prepareSet(ctx, jobs, finalize)
			}
			select {
			case batches <- p:
			case <-ctx.Done():
				return
			}
			if p.err != nil || len(jobs) < size {
				return
			}
			// A listing by the last column of jobs: the one by period
			// ends and the draft's or the period's id.
			last := jobs[len(jobs)-1]
			after = cursor{end: last.end, id: last.period}
			if last.invoice != uuid.Nil {
				after.id = last.invoice
			}
		}
	}()
	total := 0
	var errs []error
	for p := range batches {
		if p.err != nil {
			errs = append(errs, p.err)
			break
		}
		n, err := s.writeSet(ctx, p, finalize)
		total += n
		if err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return total, errors.Join(errs...)
}

// prepareSet reads the basis of jobs: those the batch computes as items,
// the others (splitJobs, or whose basis fails) in slow.
func (s *Service) prepareSet(ctx context.Context, jobs []cycleJob, finalize bool) ([]*setItem, []cycleJob, error) {
	fast, slow, err := s.splitJobs(ctx, jobs, finalize)
	if err != nil {
		return nil, nil, err
	}
	items, failed, err := s.setBases(ctx, fast)
	if err != nil {
		return nil, nil, err
	}
	return items, append(slow, failed...), nil
}

// writeSet invoices a prepared batch: its items issuer by issuer, each
// issuer's in transactions of setChunk (on Config.Workers goroutines),
// then the slow jobs one by one.
func (s *Service) writeSet(ctx context.Context, p prepared, finalize bool) (int, error) {
	byIssuer := map[uuid.UUID][]*setItem{}
	var issuers []uuid.UUID
	for _, it := range p.items {
		if byIssuer[it.job.issuer] == nil {
			issuers = append(issuers, it.job.issuer)
		}
		byIssuer[it.job.issuer] = append(byIssuer[it.job.issuer], it)
	}
	var (
		mu sync.Mutex
		n  int
	)
	chunk := setChunk
	if p.chunk > 0 {
		chunk = p.chunk
	}
	_, err := s.each(ctx, len(issuers), func(i int) (bool, error) {
		// An issuer's chunks go in order: their numbers follow their
		// periods'. One that fails does not hold up the next.
		var errs []error
		for group := range slices.Chunk(byIssuer[issuers[i]], chunk) {
			done, err := s.issuerChunk(ctx, group, finalize)
			mu.Lock()
			n += done
			mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if ctx.Err() != nil {
				break
			}
		}
		return false, errors.Join(errs...)
	})
	var slowDone int
	slowErr := s.eachJob(ctx, slowItems(p.slow), finalize, &slowDone)
	return n + slowDone, errors.Join(err, slowErr)
}

// issuerChunk invoices items of one issuer in one transaction; it
// returns how many it built or finalized. Items that changed under the
// set meanwhile (retrySet) go one by one after it.
func (s *Service) issuerChunk(ctx context.Context, items []*setItem, finalize bool) (int, error) {
	items, changed, err := s.retrySet(ctx, items, finalize)
	done := 0
	switch {
	case err == nil:
		done = len(items)
	case ctx.Err() != nil:
		return 0, err
	default:
		// One invoice that cannot be computed does not hold up the
		// others: they go one by one, and its error is returned.
		s.log.WarnContext(ctx, "billing batch falls back to single invoices", "issuer", items[0].job.issuer, "error", err)
		changed = append(items, changed...)
	}
	var single int
	err = s.eachJob(ctx, changed, finalize, &single)
	return done + single, err
}

// retrySet writes items in one transaction; when some changed under it
// (errSetChanged), it writes the others again, up to setRetries times,
// and returns those that changed apart (all of them, when the set still
// changes after that). kept are the items written, or with err, the items
// of the transaction that failed.
func (s *Service) retrySet(ctx context.Context, items []*setItem, finalize bool) (kept, changed []*setItem, err error) {
	for attempt := 0; len(items) > 0; attempt++ {
		err = s.inTx(ctx, func(tx pgx.Tx) error { return s.issuerSet(ctx, tx, items, finalize) })
		if !errors.Is(err, errSetChanged) || ctx.Err() != nil {
			return items, changed, err
		}
		if attempt == setRetries {
			s.log.WarnContext(ctx, "billing set keeps changing: its invoices go one by one", "issuer", items[0].job.issuer, "items", len(items))
			return nil, append(changed, items...), nil
		}
		stale, serr := s.changedItems(ctx, items)
		if serr != nil {
			return items, changed, serr
		}
		var rest []*setItem
		for _, it := range items {
			if stale[it.job.period] {
				changed = append(changed, it)
				s.log.InfoContext(ctx, "billing set changed meanwhile: the period goes one by one", "period", it.job.period, "invoice", it.job.invoice)
			} else {
				rest = append(rest, it)
			}
		}
		items = rest
	}
	return nil, changed, nil
}

// changedItems are the periods of the items whose invoice, period,
// pending adjustments or promotions changed since the set was read.
func (s *Service) changedItems(ctx context.Context, items []*setItem) (map[uuid.UUID]bool, error) {
	q := db.New(s.pool)
	var p db.SetPeriodsChangedParams
	var adjs, redemptions []uuid.UUID
	for _, it := range items {
		p.PeriodIds, p.InvoiceIds = append(p.PeriodIds, it.job.period), append(p.InvoiceIds, it.job.invoice)
		for _, a := range it.adjs {
			adjs = append(adjs, a.ID)
		}
		for _, r := range it.promos {
			redemptions = append(redemptions, r.ID)
		}
	}
	periods, err := q.SetPeriodsChanged(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("read changed periods: %w", err)
	}
	out := map[uuid.UUID]bool{}
	for _, id := range periods {
		out[id] = true
	}
	billed, err := q.AdjustmentsBilledOf(ctx, adjs)
	if err != nil {
		return nil, fmt.Errorf("read billed adjustments: %w", err)
	}
	applied, err := q.RedemptionsAppliedOf(ctx, redemptions)
	if err != nil {
		return nil, fmt.Errorf("read promotion periods: %w", err)
	}
	isBilled := map[uuid.UUID]bool{}
	for _, id := range billed {
		isBilled[id] = true
	}
	periodsApplied := map[uuid.UUID]int32{}
	for _, r := range applied {
		periodsApplied[r.ID] = r.PeriodsApplied
	}
	for _, it := range items {
		for _, a := range it.adjs {
			out[it.job.period] = out[it.job.period] || isBilled[a.ID]
		}
		for _, r := range it.promos {
			out[it.job.period] = out[it.job.period] || periodsApplied[r.ID] != r.PeriodsApplied
		}
	}
	return out, nil
}

// splitJobs keeps for the batch the jobs it can compute alone.
func (s *Service) splitJobs(ctx context.Context, jobs []cycleJob, finalize bool) (fast, slow []cycleJob, err error) {
	subs := make([]uuid.UUID, 0, len(jobs))
	for _, j := range jobs {
		subs = append(subs, j.sub)
	}
	earliest := map[uuid.UUID]time.Time{}
	if finalize {
		open, err := db.New(s.pool).PeriodsNotInvoiced(ctx, subs)
		if err != nil {
			return nil, nil, fmt.Errorf("read earlier periods: %w", err)
		}
		for _, p := range open {
			if e, ok := earliest[p.SubscriptionID]; !ok || p.PeriodStart.Before(e) {
				earliest[p.SubscriptionID] = p.PeriodStart
			}
		}
	}
	seen := map[uuid.UUID]bool{}
	for _, j := range jobs {
		e, ok := earliest[j.sub]
		behind := ok && e.Before(j.start)
		if seen[j.sub] || behind {
			slow = append(slow, j)
		} else {
			fast = append(fast, j)
		}
		seen[j.sub] = true
	}
	return fast, slow, nil
}

// oneJob is eachJob of one job.
func (s *Service) oneJob(ctx context.Context, j cycleJob, finalize bool) (bool, error) {
	if j.invoice == uuid.Nil {
		built, err := s.buildDraft(ctx, db.PeriodsToInvoiceRow{ID: j.period, SubscriptionID: j.sub, PeriodStart: j.start, PeriodEnd: j.end}, finalize)
		if err != nil {
			return false, fmt.Errorf("build invoice of period %s: %w", j.period, err)
		}
		return built, nil
	}
	_, err := s.Finalize(ctx, identity.System, j.invoice)
	switch {
	case errors.Is(err, ErrEarlierDraft), errors.Is(err, ErrInvoiceState):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("finalize invoice %s of period %s: %w", j.invoice, j.period, err)
	}
	return true, nil
}

func slowItems(jobs []cycleJob) []*setItem {
	out := make([]*setItem, len(jobs))
	for i, j := range jobs {
		out[i] = &setItem{job: j}
	}
	return out
}

// eachJob invoices items one by one as a single invoice is (buildDraft,
// Finalize); done, when not nil, counts those built or finalized. Each
// failure is logged with its period: the cycle's joined error names many.
func (s *Service) eachJob(ctx context.Context, items []*setItem, finalize bool, done *int) error {
	n, err := s.each(ctx, len(items), func(i int) (bool, error) {
		j := items[i].job
		ok, err := s.oneJob(ctx, j, finalize)
		if err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "billing period not invoiced", "period", j.period, "invoice", j.invoice, "error", err)
		}
		return ok, err
	})
	if done != nil {
		*done = n
	}
	return err
}

// setBases reads the basis of every job's invoice: segments, billing
// profiles and tax treatment, redemptions. A job whose basis cannot be
// read is returned in failed, for the single path to report.
func (s *Service) setBases(ctx context.Context, jobs []cycleJob) (items []*setItem, failed []cycleJob, err error) {
	if len(jobs) == 0 {
		return nil, nil, nil
	}
	periods := make([]uuid.UUID, len(jobs))
	subs := make([]uuid.UUID, len(jobs))
	orgs := make([]uuid.UUID, 0, 2*len(jobs))
	for i, j := range jobs {
		periods[i], subs[i] = j.period, j.sub
		orgs = append(orgs, j.issuer, j.customer)
	}
	q := db.New(s.pool)
	pending, err := q.AdjustmentsPendingOf(ctx, subs)
	if err != nil {
		return nil, nil, fmt.Errorf("list pending adjustments: %w", err)
	}
	adjs := map[uuid.UUID][]db.AdjustmentsPendingOfRow{}
	for _, a := range pending {
		adjs[a.SubscriptionID] = append(adjs[a.SubscriptionID], a)
		if a.Quantity != nil && a.BillingPeriodID != nil {
			periods = append(periods, *a.BillingPeriodID)
		}
	}
	bases, err := s.segmentsMany(ctx, periods)
	if err != nil {
		return nil, nil, err
	}
	profRows, err := q.BillingProfilesOf(ctx, orgs)
	if err != nil {
		return nil, nil, fmt.Errorf("read billing profiles: %w", err)
	}
	profiles := make(map[uuid.UUID]Profile, len(profRows))
	for _, r := range profRows {
		profiles[r.OrganizationID] = profileFromRow(r)
	}
	redemptions, err := q.RedemptionsOfSubscriptions(ctx, subs)
	if err != nil {
		return nil, nil, fmt.Errorf("list redemptions: %w", err)
	}
	promos := map[uuid.UUID][]db.RedemptionsOfSubscriptionsRow{}
	for _, r := range redemptions {
		promos[r.SubscriptionID] = append(promos[r.SubscriptionID], r)
	}
	for _, j := range jobs {
		pb, ok := bases[j.period]
		if !ok || pb.err != nil || len(pb.segs) == 0 {
			failed = append(failed, j)
			continue
		}
		b := &basis{segments: map[uuid.UUID]periodSegments{j.period: pb.periodSegments}}
		it := &setItem{job: j, b: b, trial: pb.trial, promos: redemptionsAt(promos[j.sub], j.end), adjs: pendingAt(adjs[j.sub], j.start)}
		unread := false
		for _, a := range it.adjs {
			if a.Quantity == nil || a.BillingPeriodID == nil {
				continue // an amount: priced without segments
			}
			ab, ok := bases[*a.BillingPeriodID]
			if !ok || ab.err != nil || len(ab.segs) == 0 {
				unread = true
				break
			}
			b.segments[*a.BillingPeriodID] = ab.periodSegments
		}
		// An adjustment whose period cannot be read is not left out in
		// silence: the single path fails on it, and says why.
		if unread {
			failed = append(failed, j)
			continue
		}
		if err := s.taxBasisOf(ctx, b, j.issuer, profileOf(profiles, j.issuer), profileOf(profiles, j.customer), j.end); err != nil {
			failed = append(failed, j)
			continue
		}
		items = append(items, it)
	}
	return items, failed, nil
}

func profileOf(m map[uuid.UUID]Profile, org uuid.UUID) *Profile {
	p, ok := m[org]
	if !ok {
		return nil
	}
	return &p
}

// redemptionsAt keeps the redemptions RedemptionsForPeriod lists for a
// period ending at end: made before it, not ended before it.
func redemptionsAt(rows []db.RedemptionsOfSubscriptionsRow, end time.Time) []db.RedemptionsForPeriodRow {
	var out []db.RedemptionsForPeriodRow
	for _, r := range rows {
		if !r.RedeemedAt.Before(end) || (r.EndedAt != nil && r.EndedAt.Before(end)) {
			continue
		}
		out = append(out, db.RedemptionsForPeriodRow{
			ID: r.ID, PromotionID: r.PromotionID, PeriodsApplied: r.PeriodsApplied, Code: r.Code, Kind: r.Kind, Value: r.Value,
			Currency: r.Currency, Meter: r.Meter, Duration: r.Duration, DurationPeriods: r.DurationPeriods, Priority: r.Priority,
			Stackable: r.Stackable,
		})
	}
	return out
}

// pendingAt keeps the adjustments AdjustmentsPendingFor lists for an
// invoice of the period starting at start: of no period, of it or of an
// earlier one.
func pendingAt(rows []db.AdjustmentsPendingOfRow, start time.Time) []db.BillingAdjustment {
	var out []db.BillingAdjustment
	for _, a := range rows {
		if a.ConcernsStart != nil && a.ConcernsStart.After(start) {
			continue
		}
		out = append(out, db.BillingAdjustment{
			ID: a.ID, SubscriptionID: a.SubscriptionID, BillingPeriodID: a.BillingPeriodID, Kind: a.Kind, MeterSlug: a.MeterSlug,
			Quantity: a.Quantity, Amount: a.Amount, Currency: a.Currency, Reason: a.Reason, Actor: a.Actor, InvoiceID: a.InvoiceID,
			CreatedAt: a.CreatedAt, PlanVersionID: a.PlanVersionID, SegmentStart: a.SegmentStart,
		})
	}
	return out
}

// issuerSet invoices one issuer's items in tx: drafts stored, and with
// finalize the credit moved, promotions and periods marked, numbers
// taken, events announced and audited.
func (s *Service) issuerSet(ctx context.Context, tx pgx.Tx, items []*setItem, finalize bool) error {
	q := db.New(tx)
	if err := lockSetDrafts(ctx, q, items); err != nil {
		return err
	}
	balances, err := setBalances(ctx, q, items, finalize)
	if err != nil {
		return err
	}
	for _, it := range items {
		k := creditKey{it.job.issuer, it.job.customer, it.b.segments[it.job.period].segs[0].Terms.Currency.Code}
		bal := balances[k]
		if it.c, err = s.computeItem(ctx, q, it, bal); err != nil {
			return err
		}
		if finalize {
			balances[k], it.ledger = it.c.moveCredit(k, bal)
		}
	}
	if err := storeSet(ctx, q, items, s.now()); err != nil {
		return err
	}
	if !finalize {
		return nil
	}
	if err := settleSet(ctx, q, items, balances); err != nil {
		return err
	}
	return s.numberSet(ctx, tx, items)
}

// lockSetDrafts locks the drafts items were listed with: all of them
// must still be drafts.
func lockSetDrafts(ctx context.Context, q *db.Queries, items []*setItem) error {
	var ids []uuid.UUID
	for _, it := range items {
		if it.job.invoice != uuid.Nil {
			ids = append(ids, it.job.invoice)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	locked, err := q.InvoiceDraftsLock(ctx, ids)
	if err != nil {
		return fmt.Errorf("lock invoices: %w", err)
	}
	if len(locked) != len(ids) {
		return errSetChanged
	}
	return nil
}

// setBalances reads the customers' credit balances: under their row
// locks to finalize (created when missing), as they are for drafts.
func setBalances(ctx context.Context, q *db.Queries, items []*setItem, finalize bool) (map[creditKey]decimal.Decimal, error) {
	issuer := items[0].job.issuer
	var customers []uuid.UUID
	var currencies []string
	for _, it := range items {
		customers = append(customers, it.job.customer)
		currencies = append(currencies, it.b.segments[it.job.period].segs[0].Terms.Currency.Code)
	}
	out := map[creditKey]decimal.Decimal{}
	add := func(customer uuid.UUID, currency string, balance decimal.Decimal) {
		out[creditKey{issuer, customer, currency}] = balance
	}
	if !finalize {
		rows, err := q.CreditBalancesOf(ctx, db.CreditBalancesOfParams{IssuerID: issuer, CustomerIds: customers})
		if err != nil {
			return nil, fmt.Errorf("read credit balances: %w", err)
		}
		for _, r := range rows {
			add(r.CustomerID, r.Currency, r.Balance)
		}
		return out, nil
	}
	err := q.CreditBalancesEnsureMany(ctx, db.CreditBalancesEnsureManyParams{IssuerID: issuer, CustomerIds: customers, Currencies: currencies})
	if err != nil {
		return nil, fmt.Errorf("create credit balances: %w", err)
	}
	rows, err := q.CreditBalancesLockMany(ctx, db.CreditBalancesLockManyParams{IssuerID: issuer, CustomerIds: customers})
	if err != nil {
		return nil, fmt.Errorf("lock credit balances: %w", err)
	}
	for _, r := range rows {
		add(r.CustomerID, r.Currency, r.Balance)
	}
	return out, nil
}

// computeItem computes an item's invoice as choose and recompute do, from
// the batch's reads and the credit balance given.
func (s *Service) computeItem(ctx context.Context, q *db.Queries, it *setItem, credit decimal.Decimal) (computed, error) {
	c, err := citesOf(ctx, q, it.job.period, it.trial, it.b)
	if err != nil {
		return computed{}, err
	}
	var promos []metering.Promotion
	if !it.trial {
		currency := it.b.segments[it.job.period].segs[0].Terms.Currency.Code
		active := activeRedemptions(it.promos, currency)
		c.cites.Promotions = active
		c.cites.CreditAvailable = credit
		byID := map[uuid.UUID]db.RedemptionsForPeriodRow{}
		for _, r := range it.promos {
			byID[r.ID] = r
		}
		for _, a := range active {
			promos = append(promos, promotionOf(db.RedemptionsByIDsRow(byID[a.RedemptionID])))
		}
		if c.cites.Adjustments, err = citeAdjustments(ctx, q, it.b, it.adjs, currency); err != nil {
			return computed{}, err
		}
	}
	in, err := inputOf(it.job.invoice, it.job.start, it.job.end, c.cites, it.b)
	if err != nil {
		return computed{}, err
	}
	in.Promotions = promos
	if in.Adjustments, err = adjustmentsOf(ctx, q, it.b, c.cites.Adjustments); err != nil {
		return computed{}, err
	}
	out, err := metering.BuildInvoice(in)
	if err != nil {
		return computed{}, fmt.Errorf("build invoice of period %s: %w", it.job.period, err)
	}
	c.invoice = out
	c.cites.CreditIssued = out.CreditIssued
	return c, nil
}

// moveCredit is what c does to the balance k, bal before it: the balance
// after, and the ledger entries (their invoice set when it is stored).
func (c computed) moveCredit(k creditKey, bal decimal.Decimal) (decimal.Decimal, []db.CreditLedgerInsertManyParams) {
	var ledger []db.CreditLedgerInsertManyParams
	entry := func(kind, reason string, amount decimal.Decimal) {
		bal = bal.Add(amount)
		ledger = append(ledger, db.CreditLedgerInsertManyParams{
			IssuerID: k.issuer, CustomerID: k.customer, Currency: k.currency, Kind: db.CreditEntryKind(kind), Amount: amount,
			BalanceAfter: bal, Reason: reason, Actor: "system",
		})
	}
	if c.invoice.CreditApplied.IsPositive() {
		entry(CreditApplied, "applied to the invoice", c.invoice.CreditApplied.Neg())
	}
	if c.invoice.CreditIssued.IsPositive() {
		entry(CreditProration, "credit of the invoice's negative total", c.invoice.CreditIssued)
	}
	return bal, ledger
}

// storeSet stores the items' drafts with their lines: new drafts
// inserted (a period that got one meanwhile starts the batch over), those
// built before updated.
func storeSet(ctx context.Context, q *db.Queries, items []*setItem, now time.Time) error {
	var ins db.InvoiceDraftsInsertParams
	var upd db.InvoiceDraftsUpdateParams
	for _, it := range items {
		raw, err := json.Marshal(it.c.cites)
		if err != nil {
			return fmt.Errorf("encode invoice cites: %w", err)
		}
		o := it.c.invoice
		if it.job.invoice == uuid.Nil {
			ins.CustomerIds, ins.SubscriptionIds, ins.PeriodIds = append(ins.CustomerIds, it.job.customer), append(ins.SubscriptionIds, it.job.sub), append(ins.PeriodIds, it.job.period)
			ins.PeriodStarts, ins.PeriodEnds = append(ins.PeriodStarts, it.job.start), append(ins.PeriodEnds, it.job.end)
			ins.Currencies, ins.NetDays, ins.Cites = append(ins.Currencies, o.Currency), append(ins.NetDays, it.c.netDays), append(ins.Cites, raw)
			ins.Subtotals, ins.Discounts, ins.Taxes = append(ins.Subtotals, o.Subtotal), append(ins.Discounts, o.Discount), append(ins.Taxes, o.Tax)
			ins.CreditsApplied, ins.Totals, ins.AmountsDue = append(ins.CreditsApplied, o.CreditApplied), append(ins.Totals, o.Total), append(ins.AmountsDue, o.AmountDue)
			continue
		}
		it.id = it.job.invoice
		upd.Ids, upd.Currencies, upd.NetDays, upd.Cites = append(upd.Ids, it.id), append(upd.Currencies, o.Currency), append(upd.NetDays, it.c.netDays), append(upd.Cites, raw)
		upd.Subtotals, upd.Discounts, upd.Taxes = append(upd.Subtotals, o.Subtotal), append(upd.Discounts, o.Discount), append(upd.Taxes, o.Tax)
		upd.CreditsApplied, upd.Totals, upd.AmountsDue = append(upd.CreditsApplied, o.CreditApplied), append(upd.Totals, o.Total), append(upd.AmountsDue, o.AmountDue)
	}
	if err := insertSetDrafts(ctx, q, items, ins, now); err != nil {
		return err
	}
	if len(upd.Ids) > 0 {
		if err := q.InvoiceLinesDeleteMany(ctx, upd.Ids); err != nil {
			return fmt.Errorf("delete invoice lines: %w", err)
		}
		n, err := q.InvoiceDraftsUpdate(ctx, upd)
		if err != nil {
			return fmt.Errorf("update draft invoices: %w", err)
		}
		if n != int64(len(upd.Ids)) {
			return errSetChanged
		}
	}
	var lines []db.InvoiceLinesCopyParams
	for _, it := range items {
		for i, l := range it.c.invoice.Lines {
			p, err := lineParams(it.id, i, l)
			if err != nil {
				return err
			}
			lines = append(lines, db.InvoiceLinesCopyParams(p))
		}
	}
	if _, err := q.InvoiceLinesCopy(ctx, lines); err != nil {
		return fmt.Errorf("insert invoice lines: %w", err)
	}
	return nil
}

// insertSetDrafts inserts the new drafts and sets the items' ids.
func insertSetDrafts(ctx context.Context, q *db.Queries, items []*setItem, ins db.InvoiceDraftsInsertParams, now time.Time) error {
	if len(ins.PeriodIds) == 0 {
		return nil
	}
	ins.IssuerID, ins.CreatedAt = items[0].job.issuer, now
	rows, err := q.InvoiceDraftsInsert(ctx, ins)
	if err != nil {
		return fmt.Errorf("insert draft invoices: %w", err)
	}
	if len(rows) != len(ins.PeriodIds) {
		return errSetChanged
	}
	ids := make(map[uuid.UUID]uuid.UUID, len(rows))
	for _, r := range rows {
		ids[*r.BillingPeriodID] = r.ID
	}
	for _, it := range items {
		if it.job.invoice == uuid.Nil {
			it.id = ids[it.job.period]
		}
	}
	return nil
}

// settleSet is settle for the items: the credit moved, the promotions
// applied once more, the periods invoiced.
func settleSet(ctx context.Context, q *db.Queries, items []*setItem, balances map[creditKey]decimal.Decimal) error {
	var ledger []db.CreditLedgerInsertManyParams
	var set db.CreditBalancesSetManyParams
	moved := map[creditKey]bool{}
	var periods []uuid.UUID
	var redemptions db.RedemptionsAppliedManyParams
	var billed db.AdjustmentsMarkBilledManyParams
	for _, it := range items {
		applied := map[uuid.UUID]int32{}
		for _, r := range it.promos {
			applied[r.ID] = r.PeriodsApplied
		}
		for _, a := range it.c.cites.Adjustments {
			billed.Ids, billed.InvoiceIds = append(billed.Ids, a.ID), append(billed.InvoiceIds, it.id)
		}
		for _, e := range it.ledger {
			e.InvoiceID = &it.id
			ledger = append(ledger, e)
			k := creditKey{e.IssuerID, e.CustomerID, e.Currency}
			if !moved[k] {
				moved[k] = true
				set.CustomerIds, set.Currencies, set.Balances = append(set.CustomerIds, k.customer), append(set.Currencies, k.currency), append(set.Balances, balances[k])
			}
		}
		for _, p := range it.c.cites.Promotions {
			redemptions.Ids, redemptions.Applied = append(redemptions.Ids, p.RedemptionID), append(redemptions.Applied, applied[p.RedemptionID])
		}
		periods = append(periods, it.job.period)
	}
	if len(ledger) > 0 {
		set.IssuerID = items[0].job.issuer
		if err := q.CreditBalancesSetMany(ctx, set); err != nil {
			return fmt.Errorf("update credit balances: %w", err)
		}
		if _, err := q.CreditLedgerInsertMany(ctx, ledger); err != nil {
			return fmt.Errorf("insert credit ledger entries: %w", err)
		}
	}
	if len(billed.Ids) > 0 {
		n, err := q.AdjustmentsMarkBilledMany(ctx, billed)
		if err != nil {
			return fmt.Errorf("mark adjustments billed: %w", err)
		}
		if n != int64(len(billed.Ids)) {
			return errSetChanged
		}
	}
	if len(redemptions.Ids) > 0 {
		// The items were computed with the periods applied as read: one
		// that another invoice applied meanwhile is a changed set.
		n, err := q.RedemptionsAppliedMany(ctx, redemptions)
		if err != nil {
			return fmt.Errorf("count promotion periods: %w", err)
		}
		if n != int64(len(redemptions.Ids)) {
			return errSetChanged
		}
	}
	n, err := q.BillingPeriodsMarkInvoiced(ctx, periods)
	if err != nil {
		return fmt.Errorf("mark periods invoiced: %w", err)
	}
	if n != int64(len(periods)) {
		return errSetChanged
	}
	return nil
}

// numberSet takes the issuer's next numbers for the items at once, in
// their order (their periods'), finalizes them, announces
// invoice.finalized and audits. The number lock is taken last, as the
// single finalization does, and held for these few statements.
func (s *Service) numberSet(ctx context.Context, tx pgx.Tx, items []*setItem) error {
	q := db.New(tx)
	issuer := items[0].job.issuer
	settings, err := issuerSettings(ctx, q, issuer)
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	last, err := q.InvoiceNumbersTake(ctx, db.InvoiceNumbersTakeParams{IssuerID: issuer, Year: int32(now.Year()), N: int64(len(items))})
	if err != nil {
		return fmt.Errorf("take invoice numbers: %w", err)
	}
	p := db.InvoicesFinalizeManyParams{FinalizedAt: &now}
	sums := make([]invoiceSummary, len(items))
	for i, it := range items {
		number := InvoiceNumber(settings.InvoicePrefix, now.Year(), last-int64(len(items)-1-i))
		due := now.Add(time.Duration(it.c.netDays) * 24 * time.Hour)
		p.Ids, p.Numbers, p.DueAts = append(p.Ids, it.id), append(p.Numbers, number), append(p.DueAts, due)
		o := it.c.invoice
		sums[i] = invoiceSummary{
			ID: it.id, Number: &number, Status: StatusOpen, IssuerID: issuer, CustomerID: it.job.customer, SubscriptionID: it.job.sub,
			Currency: o.Currency, PeriodStart: it.job.start, PeriodEnd: it.job.end, Total: o.Total, AmountDue: o.AmountDue, DueAt: &due,
		}
	}
	n, err := q.InvoicesFinalizeMany(ctx, p)
	if err != nil {
		return fmt.Errorf("finalize invoices: %w", err)
	}
	if n != int64(len(items)) {
		return errSetChanged
	}
	if err := s.publishMany(ctx, tx, sums, EventInvoiceFinalized); err != nil {
		return err
	}
	if err := s.finalized(ctx, tx, p.Ids); err != nil {
		return err
	}
	changes := make([]audit.Change, len(sums))
	for i, sum := range sums {
		changes[i] = audit.Change{
			Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: issuer, Action: "invoice.finalize",
			TargetType: "invoice", TargetID: sum.ID.String(), After: sum,
		}
	}
	return audit.RecordMany(ctx, tx, changes)
}

// manyPublisher is a Publisher that announces many events at once (a
// *webhooks.Service).
type manyPublisher interface {
	PublishMany(ctx context.Context, tx pgx.Tx, eventType string, events []webhooks.Event) error
}

// publishMany is publish of many invoices.
func (s *Service) publishMany(ctx context.Context, tx pgx.Tx, sums []invoiceSummary, event string) error {
	if s.cfg.Publisher == nil {
		return nil
	}
	events := make([]webhooks.Event, 0, 2*len(sums))
	for _, sum := range sums {
		events = append(events, webhooks.Event{OrgID: sum.IssuerID, Data: sum}, webhooks.Event{OrgID: sum.CustomerID, Data: sum})
	}
	if mp, ok := s.cfg.Publisher.(manyPublisher); ok {
		if err := mp.PublishMany(ctx, tx, event, events); err != nil {
			return fmt.Errorf("announce %s: %w", event, err)
		}
		return nil
	}
	for _, e := range events {
		if err := s.cfg.Publisher.Publish(ctx, tx, e.OrgID, event, e.Data); err != nil {
			return fmt.Errorf("announce %s: %w", event, err)
		}
	}
	return nil
}

// periodBasis is a period's segments as an invoice reads them, or why
// they cannot be read.
type periodBasis struct {
	periodSegments
	trial bool
	err   error
}

// segmentsMany is SegmentsFor of many periods in three queries (periods
// with their snapshots, snapshot lines, pricing histories); a period
// that does not exist is missing from the result.
func (s *Service) segmentsMany(ctx context.Context, periods []uuid.UUID) (map[uuid.UUID]periodBasis, error) {
	q := db.New(s.pool)
	rows, err := q.PeriodsForSegments(ctx, periods)
	if err != nil {
		return nil, fmt.Errorf("read billing periods: %w", err)
	}
	lines, err := q.SnapshotLineListByPeriods(ctx, periods)
	if err != nil {
		return nil, fmt.Errorf("read usage snapshot lines: %w", err)
	}
	byPeriod := map[uuid.UUID][]db.SnapshotLineListByPeriodsRow{}
	for _, l := range lines {
		byPeriod[l.BillingPeriodID] = append(byPeriod[l.BillingPeriodID], l)
	}
	subs := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		subs[i] = r.SubscriptionID
	}
	hist, err := s.histories(ctx, subs)
	if err != nil {
		return nil, err
	}
	terms := map[uuid.UUID]metering.PlanTerms{}
	out := make(map[uuid.UUID]periodBasis, len(rows))
	for _, p := range rows {
		pb := periodBasis{trial: p.Trial}
		if p.SnapshotID == nil {
			pb.err = ErrNoSnapshot
		} else {
			pb.snapshot = *p.SnapshotID
			pb.segs, pb.err = s.meteredSegments(ctx, terms, segmentsOf(hist[p.SubscriptionID], p.PeriodStart.UTC(), p.PeriodEnd.UTC(), p.TrialEndsAt, p.CanceledAt), byPeriod[p.ID])
			if pb.err != nil {
				pb.err = fmt.Errorf("read usage snapshot %s: %w", pb.snapshot, pb.err)
			}
		}
		out[p.ID] = pb
	}
	return out, nil
}

// meteredSegments are segs with their versions' terms (kept in terms)
// and the usage of lines, which must be theirs.
func (s *Service) meteredSegments(ctx context.Context, terms map[uuid.UUID]metering.PlanTerms, segs []segment,
	lines []db.SnapshotLineListByPeriodsRow) ([]metering.Segment, error) {
	out := make([]metering.Segment, len(segs))
	at := make(map[int64]int, len(segs)) // by segment start, in microseconds
	for i, g := range segs {
		t, ok := terms[g.version]
		if !ok {
			var err error
			if t, err = s.termsFor(ctx, g.version); err != nil {
				return nil, fmt.Errorf("load terms of plan version %s: %w", g.version, err)
			}
			terms[g.version] = t
		}
		out[i] = g.metered(t, map[string]decimal.Decimal{})
		at[g.from.UnixMicro()] = i
	}
	for _, l := range lines {
		i, ok := at[l.SegmentStart.UnixMicro()]
		if !ok || segs[i].version != l.PlanVersionID {
			return nil, fmt.Errorf("its segment at %s (version %s) is not one of the period's pricing history", l.SegmentStart, l.PlanVersionID)
		}
		out[i].Usage[l.MeterSlug] = l.Quantity
	}
	return out, nil
}
