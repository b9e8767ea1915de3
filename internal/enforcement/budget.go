package enforcement

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"
)

// The hard-budget rule, in one place. A subscription record may carry a
// hard budget ([Budget]): an amount of money per billing period and the
// plan version's terms that turn the period's meter counters into the
// cost so far. After every counting call for a subscription with a budget
// (and after a replayed batch that counted nothing, so that a crash
// between counting and blocking heals), the processors rate the current
// period's counters ([Store.EnforceBudget]); once the cost reaches the
// amount they set the same block a used-up hard quota sets, until the
// period's end, and mark the period counter with the budget's key
// (budget_over = [SubscriptionRecord.BudgetKey]). Rating needs the
// decimal rating engine (metering), which imports this package: it is
// passed in as a [BudgetRater].
//
// A record write (putSubscriptionScript) and the drift heals keep the
// block while the counter's mark is the record's budget key, so a record
// rewritten with the same budget keeps a budget block and one with another
// budget (raised, lowered, removed, or priced by another plan version)
// lifts it, unless a hard quota holds it; the control plane rates again
// right after such a write, so a budget that is still exceeded blocks
// again at once. After a plan change the budget carries the terms of every
// version in force this period (Budget.Earlier) and the cost is the
// highest rating, so a downgrade does not lift a block the period's usage
// still justifies. A trial is not billed: a trialing subscription's record
// carries no budget, and once a trial ends inside the period the counters
// as they are then (MarkTrialEnd) are left out of the rating. The mark is set by a script that checks the record still
// holds the budget the cost was rated against, so a record write racing a
// processor's rating either lands first (and the rating is redone against
// the new budget) or lands after the mark (and judges it).

// MaxBudgetTiers bounds the tiers of one charge in a record's budget.
const MaxBudgetTiers = 100

// MaxBudgetVersions bounds the earlier plan versions a record's budget
// carries: the versions of one billing period.
const MaxBudgetVersions = 20

// Budget is a subscription's hard budget as its record carries it.
type Budget struct {
	// Amount is what the subscription may cost in a period, in Currency;
	// positive.
	Amount   decimal.Decimal `json:"amount"`
	Currency string          `json:"currency"`
	// BaseFee and Charges are the plan version's terms (metering.PlanTerms):
	// the cost so far is the base fee plus every charge's usage lines,
	// before discounts, tax and credits.
	BaseFee decimal.Decimal `json:"base_fee"`
	Charges []BudgetCharge  `json:"charges"`
	// Earlier are the terms of the other plan versions in force in the
	// period's billable time (a plan change this period): the cost so far
	// is the highest rating of the counters under any of them, so that a
	// downgrade never lifts a budget the period already exceeded.
	Earlier []BudgetTerms `json:"earlier,omitempty"`
}

// BudgetTerms are one earlier plan version's terms in a record's budget.
type BudgetTerms struct {
	BaseFee decimal.Decimal `json:"base_fee"`
	Charges []BudgetCharge  `json:"charges"`
}

// BudgetCharge is metering.Charge in a record: how the plan version prices
// one of the record's meters.
type BudgetCharge struct {
	Meter       string          `json:"meter"`
	Model       string          `json:"model"`
	Included    decimal.Decimal `json:"included"`
	UnitPrice   decimal.Decimal `json:"unit_price"`
	PackageSize decimal.Decimal `json:"package_size"`
	Tiers       []BudgetTier    `json:"tiers"`
}

// BudgetTier is metering.Tier in a record.
type BudgetTier struct {
	UpTo      decimal.Decimal `json:"up_to"`
	Unbounded bool            `json:"unbounded"`
	UnitPrice decimal.Decimal `json:"unit_price"`
	Flat      decimal.Decimal `json:"flat"`
}

// validBudget checks what a record's writer can check without the rating
// engine (which checks the charges again when it rates): a positive
// amount, a currency code, no negative price, charges of distinct valid
// meter slugs, bounded sizes.
func validBudget(b *Budget) error {
	if b == nil {
		return nil
	}
	if !b.Amount.IsPositive() {
		return fmt.Errorf("amount %s, want above zero", b.Amount)
	}
	if len(b.Currency) != 3 || b.Currency[0] < 'A' || b.Currency[0] > 'Z' || b.Currency[1] < 'A' || b.Currency[1] > 'Z' || b.Currency[2] < 'A' || b.Currency[2] > 'Z' {
		return fmt.Errorf("currency %q, want three upper-case letters", b.Currency)
	}
	if len(b.Earlier) > MaxBudgetVersions {
		return fmt.Errorf("%d earlier versions, at most %d", len(b.Earlier), MaxBudgetVersions)
	}
	for _, t := range append([]BudgetTerms{{BaseFee: b.BaseFee, Charges: b.Charges}}, b.Earlier...) {
		if err := validBudgetTerms(t); err != nil {
			return err
		}
	}
	return nil
}

// validBudgetTerms checks one version's terms in a budget.
func validBudgetTerms(b BudgetTerms) error {
	if b.BaseFee.IsNegative() {
		return fmt.Errorf("base fee %s below zero", b.BaseFee)
	}
	if len(b.Charges) > MaxMeters {
		return fmt.Errorf("%d charges, at most %d", len(b.Charges), MaxMeters)
	}
	seen := map[string]bool{}
	for _, c := range b.Charges {
		if !MeterSlugRe.MatchString(c.Meter) || seen[c.Meter] {
			return fmt.Errorf("charge meter %q: invalid or listed twice", c.Meter)
		}
		seen[c.Meter] = true
		if c.Included.IsNegative() || c.UnitPrice.IsNegative() || c.PackageSize.IsNegative() {
			return fmt.Errorf("charge %s: a negative amount", c.Meter)
		}
		if len(c.Tiers) > MaxBudgetTiers {
			return fmt.Errorf("charge %s: %d tiers, at most %d", c.Meter, len(c.Tiers), MaxBudgetTiers)
		}
		for _, t := range c.Tiers {
			if t.UpTo.IsNegative() || t.UnitPrice.IsNegative() || t.Flat.IsNegative() {
				return fmt.Errorf("charge %s: a tier with a negative amount", c.Meter)
			}
		}
	}
	return nil
}

// encodeBudget is the budget field of a record: JSON with decimals as
// strings, "" for none.
func encodeBudget(b *Budget) string {
	if b == nil {
		return ""
	}
	w := *b
	w.Charges = normalCharges(w.Charges)
	if len(w.Earlier) > 0 {
		w.Earlier = slices.Clone(w.Earlier)
		for i := range w.Earlier {
			w.Earlier[i].Charges = normalCharges(w.Earlier[i].Charges)
		}
	}
	out, _ := json.Marshal(w) // decimals, strings and lists always marshal
	return string(out)
}

// normalCharges encodes absent lists as empty ones, so that a budget has
// one encoding (and one key).
func normalCharges(cs []BudgetCharge) []BudgetCharge {
	if cs == nil {
		return []BudgetCharge{}
	}
	cs = slices.Clone(cs)
	for i := range cs {
		if cs[i].Tiers == nil {
			cs[i].Tiers = []BudgetTier{}
		}
	}
	return cs
}

// decodeBudget reads a record's budget field strictly: "" is none, else a
// JSON object with no unknown member that validBudget accepts.
func decodeBudget(v string) (*Budget, error) {
	if v == "" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	var b Budget
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("want a JSON budget: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the budget")
	}
	if err := validBudget(&b); err != nil {
		return nil, err
	}
	return &b, nil
}

// budgetKey is the key of a record's budget field as stored: its SHA-1 in
// hex, as the scripts compute it (redis.sha1hex); "" for none.
func budgetKey(field string) string {
	if field == "" {
		return ""
	}
	sum := sha1.Sum([]byte(field))
	return hex.EncodeToString(sum[:])
}

// BudgetKey names the record's budget: the key a period counter's
// budget_over mark holds while that budget is exceeded; "" without a
// budget. A decoded record keys its budget field as stored.
func (r SubscriptionRecord) BudgetKey() string {
	if r.budgetKey != "" || r.Budget == nil {
		return r.budgetKey
	}
	return budgetKey(encodeBudget(r.Budget))
}

// budgetLua defines, for the scripts that set or judge a block,
//
//	budget_over(record, counter)
//
// which reports whether the record carries a budget and the period
// counter's budget_over mark names it: the budget was found exceeded in
// that period.
const budgetLua = `
local function budget_over(record, counter)
  local b = redis.call('HGET', record, 'budget')
  if not b or b == '' then return false end
  return redis.call('HGET', counter, 'budget_over') == redis.sha1hex(b)
end
`

// budgetBlockScript marks the period counter and blocks the subscription
// until the period's end, only if the record still holds the budget the
// cost was rated against in the same period (compare-and-set): it returns
// 0 otherwise, for the caller to rate again. A counter that does not exist
// yet (a base fee alone reaching the amount) gets the counters' ttl.
//
// KEYS[1] record, KEYS[2] block, KEYS[3] the period counter. ARGV[1] the
// budget key, ARGV[2] the period's start (Unix seconds), ARGV[3] the
// counter's ttl seconds.
var budgetBlockScript = rueidis.NewLuaScript(`
local rec = redis.call('HMGET', KEYS[1], 'budget', 'period_start', 'period_end')
if not rec[1] or rec[1] == '' or redis.sha1hex(rec[1]) ~= ARGV[1] or rec[2] ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[3], 'budget_over') ~= ARGV[1] then
  local fresh = redis.call('EXISTS', KEYS[3]) == 0
  redis.call('HSET', KEYS[3], 'budget_over', ARGV[1])
  if fresh then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
end
local pend = rec[3]
if redis.call('GET', KEYS[2]) ~= pend then redis.call('SET', KEYS[2], pend, 'EXAT', pend) end
return 1
`)

// BudgetRater rates a period's meter counters (by slug, each an integer at
// its meter's scale; a meter nothing counted is absent) under b's terms:
// the cost so far, in b's currency. metering.BudgetCost is the one the
// processors and the control plane use.
type BudgetRater func(b Budget, meters []MeterSpec, counters map[string]int64) (decimal.Decimal, error)

// BudgetState is what [Store.EnforceBudget] found.
type BudgetState struct {
	// Budget is the record's; nil when it has none (nothing was rated).
	Budget *Budget
	// Cost is the cost so far it rated; Blocked whether it reached the
	// budget's amount, and the block and mark are set.
	Cost    decimal.Decimal
	Blocked bool
}

// ErrBudgetUnrated: the record's budget could not be rated (terms the
// rating engine refuses, a quantity beyond the last tier): nothing was
// blocked.
var ErrBudgetUnrated = errors.New("budget not rated")

// EnforceBudget rates the subscription's current period under its record's
// hard budget and, when the cost reaches the amount, blocks the
// subscription until the period's end (see budgetBlockScript). It never
// lifts a block: record writes do. A record without a budget, or none at
// all, is BudgetState{} and no error. The record is read directly, never
// through the client-side cache, so the rating is against the budget the
// record holds now; a record write in between makes it rate again.
func (s *Store) EnforceBudget(ctx context.Context, id string, rate BudgetRater) (BudgetState, error) {
	for range 5 {
		fields, err := s.client.Do(ctx, s.client.B().Hmget().Key(SubscriptionName(id)).
			Field("budget", "period_start", "period_end", "meters").Build()).ToArray()
		if err != nil {
			return BudgetState{}, fmt.Errorf("enforce budget of %s: read record: %w", id, err)
		}
		raw := make([]string, len(fields))
		for i, f := range fields {
			raw[i], _ = f.ToString() // nil: absent
		}
		if len(raw) != 4 || raw[0] == "" {
			return BudgetState{}, nil
		}
		st, done, err := s.enforceBudgetOnce(ctx, id, raw, rate)
		if err != nil || done {
			return st, err
		}
	}
	return BudgetState{}, fmt.Errorf("enforce budget of %s: the record keeps changing", id)
}

// enforceBudgetOnce rates the period under the budget of the record read
// as raw (budget, period_start, period_end, meters); done is false when the
// record changed before the block could be set.
func (s *Store) enforceBudgetOnce(ctx context.Context, id string, raw []string, rate BudgetRater) (st BudgetState, done bool, err error) {
	b, err := decodeBudget(raw[0])
	if err != nil {
		return BudgetState{}, true, fmt.Errorf("enforce budget of %s: %w: budget: %w", id, ErrCorruptRecord, err)
	}
	start, err := strconv.ParseInt(raw[1], 10, 64)
	if err != nil || start <= 0 {
		return BudgetState{}, true, fmt.Errorf("enforce budget of %s: %w: period_start %q", id, ErrCorruptRecord, raw[1])
	}
	var meters []MeterSpec
	if raw[3] != "" {
		if meters, err = DecodeMeters(raw[3]); err != nil {
			return BudgetState{}, true, fmt.Errorf("enforce budget of %s: %w", id, err)
		}
	}
	counter := PeriodCounterName(id, time.Unix(start, 0))
	counters, err := s.meterCounters(ctx, counter, meters)
	if err != nil {
		return BudgetState{}, true, fmt.Errorf("enforce budget of %s: %w", id, err)
	}
	st = BudgetState{Budget: b}
	if st.Cost, err = rate(*b, meters, counters); err != nil {
		return st, true, fmt.Errorf("enforce budget of %s: %w: %w", id, ErrBudgetUnrated, err)
	}
	if st.Cost.LessThan(b.Amount) {
		return st, true, nil
	}
	n, err := budgetBlockScript.Exec(ctx, s.client, []string{SubscriptionName(id), BlockName(id), counter},
		[]string{budgetKey(raw[0]), raw[1], strconv.Itoa(int(PeriodCounterTTL / time.Second))}).AsInt64()
	if err != nil {
		return st, true, fmt.Errorf("enforce budget of %s: block: %w", id, err)
	}
	st.Blocked = n == 1
	return st, n == 1, nil
}

// meterCounters reads the meters' values in a period counter that a
// budget rates, in one round trip: the m:<slug> fields, and the SCARD of
// each unique_count meter's set, less the values at a trial's end
// (MarkTrialEnd): the trial is not billed.
func (s *Store) meterCounters(ctx context.Context, counter string, meters []MeterSpec) (map[string]int64, error) {
	out := make(map[string]int64, len(meters))
	if len(meters) == 0 {
		return out, nil
	}
	cmds := make(rueidis.Commands, len(meters), 2*len(meters))
	for i, m := range meters {
		if m.Aggregation == MeterUniqueCount {
			cmds[i] = s.client.B().Scard().Key(MeterSetName(counter, m.Slug)).Build()
		} else {
			cmds[i] = s.client.B().Hget().Key(counter).Field(MeterFieldName(m.Slug)).Build()
		}
	}
	for _, m := range meters {
		cmds = append(cmds, s.client.B().Hget().Key(counter).Field(trialFieldName(m.Slug)).Build())
	}
	for i, r := range s.client.DoMulti(ctx, cmds...) {
		v, err := r.AsInt64()
		switch {
		case rueidis.IsRedisNil(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("read meter %s: %w", meters[i%len(meters)].Slug, err)
		}
		if i < len(meters) {
			out[meters[i].Slug] += v
		} else {
			out[meters[i-len(meters)].Slug] -= v
		}
	}
	for slug, v := range out {
		out[slug] = max(v, 0)
	}
	return out, nil
}

// trialFieldName is the period counter's field holding a meter's value
// at the trial's end (MarkTrialEnd).
func trialFieldName(slug string) string { return "t:" + slug }

// trialMarkScript records, once per period counter, the meters' values as
// they are at a trial's end, atomically with the processors' increments.
// KEYS[1] the period counter; ARGV[1] the counter's ttl seconds, then
// slug, aggregation pairs. Returns 1 when it recorded, 0 when already done.
var trialMarkScript = rueidis.NewLuaScript(`
if redis.call('HEXISTS', KEYS[1], 'trial_ended') == 1 then return 0 end
local fresh = redis.call('EXISTS', KEYS[1]) == 0
for i = 2, #ARGV, 2 do
  local v
  if ARGV[i + 1] == '` + MeterUniqueCount + `' then
    v = redis.call('SCARD', KEYS[1] .. '` + meterSetInfix + `' .. ARGV[i])
  else
    v = redis.call('HGET', KEYS[1], 'm:' .. ARGV[i]) or '0'
  end
  redis.call('HSET', KEYS[1], 't:' .. ARGV[i], v)
end
redis.call('HSET', KEYS[1], 'trial_ended', '1')
if fresh then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
`)

// MarkTrialEnd records the subscription's meters' values in the counter
// of the period starting at periodStart as its trial's usage, once: a hard
// budget then rates only what was counted since. Call it once a trial has
// ended inside that period, before the record carries a budget; later
// calls change nothing. Usage counted between the trial's end and the
// call counts as the trial's. A unique_count meter's trial value is the
// number of distinct values seen in the trial, so values seen in both
// count once.
func (s *Store) MarkTrialEnd(ctx context.Context, id string, periodStart time.Time, meters []MeterSpec) error {
	args := []string{strconv.Itoa(int(PeriodCounterTTL / time.Second))}
	for _, m := range meters {
		args = append(args, m.Slug, string(m.Aggregation))
	}
	if err := trialMarkScript.Exec(ctx, s.client, []string{PeriodCounterName(id, periodStart)}, args).Error(); err != nil {
		return fmt.Errorf("mark trial end of %s: %w", id, err)
	}
	return nil
}

// BudgetOverCached reports whether the subscription's period starting at
// periodStart is marked over the budget whose key is key (see
// [SubscriptionRecord.BudgetKey]), through client-side caching: the
// gateway asks it only of a blocked subscription with a budget, to tell a
// budget block from a quota block.
func (s *Store) BudgetOverCached(ctx context.Context, id string, periodStart time.Time, key string, ttl time.Duration) (bool, error) {
	if key == "" {
		return false, nil
	}
	v, err := s.client.DoCache(ctx, s.client.B().Hget().Key(PeriodCounterName(id, periodStart)).Field("budget_over").Cache(), ttl).ToString()
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read budget mark of %s: %w", id, err)
	}
	return v == key, nil
}
