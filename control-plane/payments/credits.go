package payments

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
)

// CreditLedger credits a customer's balance with an issuer (billing's
// credit ledger), in the caller's transaction, so that a refund to the
// credit balance and its ledger entry commit together or not at all.
// payments does not read billing's tables; billing implements this.
type CreditLedger interface {
	// CreditRefund adds amount (positive, in the currency's minor unit)
	// to the balance as a "refund" entry naming the invoice.
	CreditRefund(ctx context.Context, tx pgx.Tx, issuer, customer, invoice uuid.UUID, currency string,
		amount decimal.Decimal, reason, actor string) error
}
