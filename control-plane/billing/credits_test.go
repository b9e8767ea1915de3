package billing

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/testenv"
)

// A provider's organization is also a customer of other providers: its
// members see the credit it issued and the credit it holds, and nobody
// else's.
func TestCreditBalancesOfBothParties(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, _ := f.closedPeriod()
	if _, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("3"), Reason: "issued"}); err != nil {
		t.Fatal(err)
	}
	other := testenv.Org(t, f.pool, "other-"+testenv.Suffix())
	stranger := testenv.Org(t, f.pool, "stranger-"+testenv.Suffix())
	for _, b := range []struct {
		issuer, customer uuid.UUID
		amount           string
	}{{other, f.issuer, "7"}, {other, stranger, "9"}} {
		f.exec(`INSERT INTO credit_balances (issuer_id, customer_id, currency, balance) VALUES ($1, $2, 'EUR', $3)`, b.issuer, b.customer, b.amount)
	}
	bal, err := f.svc.CreditBalances(f.ctx, f.provider, uuid.Nil, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, b := range bal {
		got[fmt.Sprintf("%s>%s %s", b.IssuerID, b.CustomerID, b.Balance.StringFixed(2))] = true
	}
	want := map[string]bool{
		fmt.Sprintf("%s>%s 3.00", f.issuer, customer): true,
		fmt.Sprintf("%s>%s 7.00", other, f.issuer):    true,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("provider's balances = %v; want %v", got, want)
	}
	held, err := f.svc.CreditBalances(f.ctx, f.provider, other, uuid.Nil)
	if err != nil || len(held) != 1 || held[0].CustomerID != f.issuer {
		t.Fatalf("provider's balances with issuer %s = %v, %v; want the one it holds", other, held, err)
	}
}
