package budgets_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/budgets"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestNoticesOncePerThreshold: each threshold's notice goes out once per
// basis and period, by webhook and by email, through replays (the job run
// again), restarts (a new service on the same database) and two
// evaluators running at once; the emails reach the organization's member
// and say what crossed.
func TestNoticesOncePerThreshold(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100")})
	if !slices.Equal(b.Thresholds, budgets.DefaultThresholds) || b.Currency != "USD" {
		t.Fatalf("budget = %+v; want the default thresholds in the plan's USD", b)
	}

	// 55 spent, 90 projected: 50% reached, 80% projected.
	f.outlook(sub, f.periodStart, "USD", "55", "90")
	if n := f.evaluate(f.svc); n != 4 {
		t.Fatalf("first evaluation sent %d notices; want 4 (2 webhooks, 2 emails)", n)
	}
	want := []key{{50, budgets.BasisActual, f.periodStart}, {80, budgets.BasisProjected, f.periodStart}}
	if got := keys(f.delivered(c)); !sameKeys(got, want) {
		t.Fatalf("notices = %v; want %v", got, want)
	}

	// A replay and a restart send nothing more.
	if n := f.evaluate(f.svc); n != 0 {
		t.Errorf("replayed evaluation sent %d notices; want 0", n)
	}
	if n := f.evaluate(f.service()); n != 0 {
		t.Errorf("evaluation after a restart sent %d notices; want 0", n)
	}

	// 85 spent, 120 projected, seen by two evaluators at once: 80% is
	// reached (actual) and 100% projected, each sent once between them.
	f.outlook(sub, f.periodStart, "USD", "85", "120")
	var wg sync.WaitGroup
	sent := make([]int, 4)
	start := make(chan struct{})
	for i := range sent {
		svc := f.service()
		wg.Go(func() {
			<-start
			rep, err := svc.Evaluate(f.ctx)
			if err != nil {
				t.Errorf("evaluator %d: %v", i, err)
			}
			sent[i] = rep.Notices
		})
	}
	close(start)
	wg.Wait()
	total := 0
	for _, n := range sent {
		total += n
	}
	if total != 4 {
		t.Errorf("evaluators at once sent %v notices, %d together; want 4", sent, total)
	}
	want = append(want, key{80, budgets.BasisActual, f.periodStart}, key{100, budgets.BasisProjected, f.periodStart})
	got := keys(f.delivered(c))
	if !sameKeys(got, want) {
		t.Fatalf("notices = %v; want %v", got, want)
	}
	if n := f.emailJobs(b); n != len(want) {
		t.Errorf("email jobs = %d; want %d, one per notice", n, len(want))
	}

	// The emails reach the member, each once.
	testenv.StartRiver(t, f.jobs)
	msgs := f.mail.WaitMessages(t, c.email, len(want), 30*time.Second)
	if len(msgs) != len(want) {
		t.Errorf("emails = %d; want %d", len(msgs), len(want))
	}
	var projected, actual bool
	for _, m := range msgs {
		if m.Headers["X-Veil-Budget-Id"][0] != b.ID.String() {
			t.Errorf("email %q names budget %v; want %s", m.Subject, m.Headers["X-Veil-Budget-Id"], b.ID)
		}
		switch m.Headers["X-Veil-Notice"][0] {
		case "budget_80_projected":
			projected = strings.Contains(m.Subject, "projected to reach 80%") && strings.Contains(m.Text, "USD 90.00") &&
				strings.Contains(m.Text, "Weather")
		case "budget_50_actual":
			actual = strings.Contains(m.Subject, "spent 50%") && strings.Contains(m.Text, "USD 55.00") &&
				strings.Contains(m.Text, "does not stop usage")
		}
	}
	if !projected || !actual {
		t.Errorf("emails %+v: want the 80%% projection (USD 90.00) and the 50%% cost (USD 55.00) told", msgs)
	}
}

var errJobsPending = errors.New("budget emails still queued")

// sameKeys compares notices regardless of the order evaluators at once
// published them in.
func sameKeys(a, b []key) bool {
	cmp := func(x, y key) int {
		if x.threshold != y.threshold {
			return x.threshold - y.threshold
		}
		return strings.Compare(x.basis, y.basis)
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// TestProjectionBeforeActual: a projection that crosses a threshold the
// cost has not reached is told first, and the cost reaching it later is
// told again, as actual.
func TestProjectionBeforeActual(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "EUR")
	f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("200"), Thresholds: []int{50}})

	f.outlook(sub, f.periodStart, "EUR", "20", "99.99")
	f.evaluate(f.svc)
	if got := f.delivered(c); len(got) != 0 {
		t.Fatalf("notices at a projection of 99.99 of a threshold of 100 = %+v; want none", got)
	}
	f.outlook(sub, f.periodStart, "EUR", "20", "100")
	f.evaluate(f.svc)
	f.outlook(sub, f.periodStart, "EUR", "100", "180")
	f.evaluate(f.svc)
	got := f.delivered(c)
	want := []key{{50, budgets.BasisProjected, f.periodStart}, {50, budgets.BasisActual, f.periodStart}}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("notices = %v; want %v", keys(got), want)
	}
	if !got[0].Cost.Equal(*amount("100")) || !got[1].Cost.Equal(*amount("100")) || got[0].Currency != "EUR" {
		t.Errorf("notices = %+v; want the projection of EUR 100, then the cost of EUR 100", got)
	}
}

// TestNewPeriodNotifiesAgain: the same threshold crossed in the next
// period is told again.
func TestNewPeriodNotifiesAgain(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("10"), Thresholds: []int{100}})

	f.outlook(sub, f.periodStart, "USD", "10", "10")
	f.evaluate(f.svc)
	f.evaluate(f.svc)
	next := f.periodStart.AddDate(0, 1, 0)
	f.outlook(sub, next, "USD", "12", "30")
	f.evaluate(f.svc)
	f.evaluate(f.svc)
	want := []key{{100, budgets.BasisActual, f.periodStart}, {100, budgets.BasisActual, next}}
	if got := keys(f.delivered(c)); !slices.Equal(got, want) {
		t.Fatalf("notices = %v; want %v", got, want)
	}
}

// TestRaiseRearms: raising the amount re-arms the thresholds it moved
// above the cost that crossed them; lowering it re-arms nothing.
func TestRaiseRearms(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100"), Thresholds: []int{50, 100}})

	f.outlook(sub, f.periodStart, "USD", "60", "60")
	f.evaluate(f.svc)
	// 50% of 110 is 55, still below the 60 that crossed it: not re-armed.
	if _, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("110"), Thresholds: []int{50, 100}}); err != nil {
		t.Fatal(err)
	}
	f.evaluate(f.svc)
	if got := len(f.delivered(c)); got != 1 {
		t.Fatalf("notices after a raise to 110 = %d; want 1", got)
	}
	// 50% of 200 is 100, above 60: re-armed, told when the cost gets there.
	if _, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("200"), Thresholds: []int{50, 100}}); err != nil {
		t.Fatal(err)
	}
	f.evaluate(f.svc)
	if got := len(f.delivered(c)); got != 1 {
		t.Fatalf("notices after a raise to 200 at a cost of 60 = %d; want 1", got)
	}
	f.outlook(sub, f.periodStart, "USD", "100", "100")
	f.evaluate(f.svc)
	got := f.delivered(c)
	if len(got) != 2 || got[1].Threshold != 50 || !got[1].Amount.Equal(*amount("200")) {
		t.Fatalf("notices = %+v; want the 50%% of 200 told again", got)
	}
	// Lowered back: 50% of 100 was told in this period at this amount's
	// level or above; nothing is re-armed, 100% is newly reached.
	if _, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("100"), Thresholds: []int{50, 100}}); err != nil {
		t.Fatal(err)
	}
	f.evaluate(f.svc)
	want := []key{{50, budgets.BasisActual, f.periodStart}, {50, budgets.BasisActual, f.periodStart}, {100, budgets.BasisActual, f.periodStart}}
	if got := keys(f.delivered(c)); !slices.Equal(got, want) {
		t.Fatalf("notices = %v; want %v", got, want)
	}
}

// TestRaiseLowerSendsNothingAgain: raising the amount far above the cost
// and lowering it back, again and again within a period, sends no notice
// again: each threshold was told at that level already.
func TestRaiseLowerSendsNothingAgain(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	th := []int{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("1"), Thresholds: th})
	f.outlook(sub, f.periodStart, "USD", "5", "5")
	if n := f.evaluate(f.svc); n != 2*len(th) {
		t.Fatalf("first evaluation sent %d notices; want %d (a webhook and an email per threshold)", n, 2*len(th))
	}
	for i := range 5 {
		for _, a := range []string{"1000000", "1"} {
			if _, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount(a), Thresholds: th}); err != nil {
				t.Fatal(err)
			}
			if n := f.evaluate(f.svc); n != 0 {
				t.Fatalf("cycle %d: evaluation at an amount of %s sent %d notices; want 0", i, a, n)
			}
		}
	}
	if hooks, emails := len(f.delivered(c)), f.emailJobs(b); hooks != len(th) || emails != len(th) {
		t.Errorf("webhooks %d, email jobs %d in one period; want %d each", hooks, emails, len(th))
	}
}

// TestResendsBounded: a threshold told again after each raise that the
// cost then catches up with goes out at most MaxSends times a period, by
// webhook and by email.
func TestResendsBounded(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100"), Thresholds: []int{100}})
	var amounts []string
	for i := range budgets.MaxSends + 2 {
		a := decimal.NewFromInt(int64(100 * (i + 1))).String()
		amounts = append(amounts, a)
		if _, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount(a)}); err != nil {
			t.Fatal(err)
		}
		f.outlook(sub, f.periodStart, "USD", a, a)
		want := 0
		if i < budgets.MaxSends {
			want = 2
		}
		if n := f.evaluate(f.svc); n != want {
			t.Fatalf("evaluation at amount and cost %s sent %d notices; want %d", a, n, want)
		}
	}
	got := f.delivered(c)
	if len(got) != budgets.MaxSends || f.emailJobs(b) != budgets.MaxSends {
		t.Fatalf("webhooks %d, email jobs %d; want %d each", len(got), f.emailJobs(b), budgets.MaxSends)
	}
	for i, n := range got {
		if n.Threshold != 100 || n.Basis != budgets.BasisActual || !n.Amount.Equal(*amount(amounts[i])) {
			t.Errorf("notice %d = %+v; want 100%% of %s", i, n, amounts[i])
		}
	}
}

// TestOrganizationBudget: an organization-wide budget sums the cost of
// the organization's subscriptions in its currency, not those of other
// currencies or organizations, per calendar month in UTC; the next month
// tells again.
func TestOrganizationBudget(t *testing.T) {
	f := newFixture(t)
	month := time.Date(2031, 3, 1, 0, 0, 0, 0, time.UTC)
	f.clock.Set(month.Add(10 * 24 * time.Hour))
	c, other := f.consumer(), f.consumer()
	usd1, usd2, eur := f.subscribe(c, "USD"), f.subscribe(c, "USD"), f.subscribe(c, "EUR")
	foreign := f.subscribe(other, "USD")
	b := f.budget(c, budgets.Input{Currency: "USD", Amount: amount("100"), Thresholds: []int{50, 100}})
	if b.SubscriptionID != nil || b.OrganizationID != c.orgID {
		t.Fatalf("budget = %+v; want organization-wide", b)
	}
	start := month
	f.outlook(usd1, start, "USD", "30", "30")
	f.outlook(usd2, start, "USD", "19.99", "19.99")
	f.outlook(eur, start, "EUR", "500", "500")
	f.outlook(foreign, start, "USD", "500", "500")
	f.evaluate(f.svc)
	if got := f.delivered(c); len(got) != 0 {
		t.Fatalf("notices at 49.99 of 100 = %+v; want none", got)
	}
	f.outlook(usd2, start, "USD", "20", "20")
	f.evaluate(f.svc)
	got := f.delivered(c)
	if want := []key{{50, budgets.BasisActual, month}}; !slices.Equal(keys(got), want) {
		t.Fatalf("notices = %v; want %v", keys(got), want)
	}
	if got[0].SubscriptionID != nil || !got[0].Cost.Equal(*amount("50")) || !got[0].PeriodEnd.Equal(month.AddDate(0, 1, 0)) {
		t.Errorf("notice = %+v; want a cost of 50 over March", got[0])
	}
	// April: usd1's next period holds 50; usd2's ended in March.
	f.clock.Set(month.AddDate(0, 1, 2))
	f.outlook(usd1, start.AddDate(0, 1, 0), "USD", "50", "50")
	f.evaluate(f.svc)
	if got := keys(f.delivered(c)); len(got) != 2 || !got[1].period.Equal(month.AddDate(0, 1, 0)) {
		t.Fatalf("notices = %v; want April's 50%% told too", got)
	}
}

// TestOrganizationBudgetMonth: with billing periods on the 15th, an
// organization-wide budget's month holds the month's share of each
// period's cost, not the periods running in it whole: at the month's
// start it holds only the hours since midnight, and when a period rolls
// mid-month its invoice keeps the first half of the month while the new
// period's outlook adds the rest. An invoice counts once (not with its
// period's outlook besides), a void one or one in another currency not at
// all; the projection runs the current pace to the month's end.
func TestOrganizationBudgetMonth(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub, eur := f.subscribe(c, "USD"), f.subscribe(c, "EUR")
	// Levels 10, 20, 300, 500 and 750.
	f.budget(c, budgets.Input{Currency: "USD", Amount: amount("1000"), Thresholds: []int{1, 2, 30, 50, 75}})
	nov15, dec1, dec15 := time.Date(2031, 11, 15, 0, 0, 0, 0, time.UTC), time.Date(2031, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2031, 12, 15, 0, 0, 0, 0, time.UTC)
	type sent struct {
		key
		cost string
	}
	seen := 0
	check := func(step string, want ...sent) {
		t.Helper()
		f.evaluate(f.svc)
		all := f.delivered(c)
		var got []sent
		for _, n := range all[seen:] {
			got = append(got, sent{keys([]budgets.Notice{n})[0], n.Cost.String()})
		}
		seen = len(all)
		slices.SortFunc(got, func(a, b sent) int { return a.threshold - b.threshold })
		if !slices.Equal(got, want) {
			t.Fatalf("%s: notices = %v; want %v", step, got, want)
		}
	}

	// December 1st, 16:00: the period since November 15th has cost 400
	// in 400 hours and is projected at 720 for its 720 hours. December
	// holds 16 hours of it: 16; at that pace December costs 744.
	f.clock.Set(dec1.Add(16 * time.Hour))
	f.invoice(sub, nov15.AddDate(0, -1, 0), nov15, "USD", "300", "open")
	f.invoice(sub, nov15, dec15, "USD", "999", "void")
	f.invoice(eur, dec1, dec15, "EUR", "5000", "open")
	f.outlook(sub, nov15, "USD", "400", "720")
	check("month start",
		sent{key{1, budgets.BasisActual, dec1}, "16"}, sent{key{2, budgets.BasisProjected, dec1}, "744"},
		sent{key{30, budgets.BasisProjected, dec1}, "744"}, sent{key{50, budgets.BasisProjected, dec1}, "744"})

	// December 16th: the period rolled and its invoice says 720, of which
	// 14 of 30 days are December's: 336; the new period has cost 24 in
	// its first day and is projected at 744 for its 31 days, 17 of them
	// in December: 408. A canceled subscription's last period, December
	// 1st to 11th, counts 50 by its draft invoice and not again by its
	// outlook, and projects nothing past its end.
	f.clock.Set(dec15.Add(24 * time.Hour))
	f.invoice(sub, nov15, dec15, "USD", "720", "open")
	f.outlook(sub, dec15, "USD", "24", "744")
	canceled := f.subscribe(c, "USD")
	if _, err := f.pool.Exec(f.ctx, `UPDATE subscriptions SET status = 'canceled', canceled_at = now() WHERE id = $1`, canceled); err != nil {
		t.Fatal(err)
	}
	dec11 := dec1.AddDate(0, 0, 10)
	f.outlookOf(canceled, dec1, dec11, "USD", "50", "50")
	f.invoice(canceled, dec1, dec11, "USD", "50", "draft")
	check("period rolled",
		sent{key{2, budgets.BasisActual, dec1}, "410"}, sent{key{30, budgets.BasisActual, dec1}, "410"},
		sent{key{75, budgets.BasisProjected, dec1}, "794"})
}

// TestDeletedBudgetStops: a deleted budget sends nothing more, and its
// queued email is not sent.
func TestDeletedBudgetStops(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("10"), Thresholds: []int{50}})
	f.outlook(sub, f.periodStart, "USD", "6", "6")
	f.evaluate(f.svc)
	if err := f.svc.Delete(f.ctx, c.actor, b.ID); err != nil {
		t.Fatal(err)
	}
	f.outlook(sub, f.periodStart, "USD", "600", "600")
	if n := f.evaluate(f.svc); n != 0 {
		t.Errorf("evaluation after the delete sent %d; want 0", n)
	}
	testenv.StartRiver(t, f.jobs)
	testenv.Deadline(t, 30*time.Second, func() error {
		var n int
		if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM river_job WHERE kind = 'budget_email' AND state <> 'completed'`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return errJobsPending
		}
		return nil
	})
	if msgs := f.mail.Messages(t, c.email); len(msgs) != 0 {
		t.Errorf("emails of a deleted budget = %d; want 0", len(msgs))
	}
}

// TestPeriodicJob: the job RegisterJobs schedules evaluates when the job
// client starts, and its email worker sends the notice.
func TestPeriodicJob(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("40"), Thresholds: []int{100}})
	f.outlook(sub, f.periodStart, "USD", "41.5", "41.5")

	workers := river.NewWorkers()
	river.AddWorker(workers, f.hooks.Worker())
	periodic := f.svc.RegisterJobs(workers, budgets.JobSchedule{Evaluate: time.Hour})
	jobs := testenv.River(t, f.pool, workers, func(cfg *river.Config) { cfg.PeriodicJobs = periodic })
	testenv.StartRiver(t, jobs)
	msgs := f.mail.WaitMessages(t, c.email, 1, 30*time.Second)
	if got := keys(f.delivered(c)); !slices.Equal(got, []key{{100, budgets.BasisActual, f.periodStart}}) {
		t.Errorf("notices = %v; want the 100%% reached", got)
	}
	if !strings.Contains(msgs[0].Subject, "spent 100%") || !strings.Contains(msgs[0].Text, "USD 41.50") {
		t.Errorf("email = %q %q; want the 100%% reached at USD 41.50", msgs[0].Subject, msgs[0].Text)
	}
}
