package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/datastore"
)

// errInvoiceDiffers makes veil billing explain exit 1 after printing the
// differences.
var errInvoiceDiffers = errors.New("the invoice differs from what its cites compute")

func runBilling(ctx context.Context, args []string, stdout, _ io.Writer) error {
	var postgresURL string
	f := newFlags("billing explain INVOICE", `Recomputes an invoice (its id or its number) from what it cites alone: its usage
snapshot, the terms of its plan versions, its promotions and adjustments, its tax
treatment and the credit it could use, priced again by metering.BuildInvoice. Prints
the stored and recomputed lines side by side, the totals and the differences; the
exit status is 1 when there is any.

  veil billing explain INV-2026-000042`, stdout)
	f.String(&postgresURL, "postgres-url", "VEIL_POSTGRES_URL", defaultPostgresURL, "Postgres connection URL")
	if len(args) == 0 || args[0] != "explain" {
		f.fs.Usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return errors.New("usage: veil billing explain INVOICE")
	}
	if err := f.fs.Parse(args[1:]); err != nil {
		return err
	}
	if f.fs.NArg() != 1 {
		return errors.New("name one invoice, by id or number")
	}
	pool, err := datastore.OpenPostgres(ctx, datastore.Postgres{URL: postgresURL})
	if err != nil {
		return err
	}
	defer pool.Close()
	svc, err := billing.New(billing.Config{Pool: pool})
	if err != nil {
		return err
	}
	return explainInvoice(ctx, svc, f.fs.Arg(0), stdout)
}

// explainInvoice prints the explanation of the invoice named by ref.
func explainInvoice(ctx context.Context, svc *billing.Service, ref string, stdout io.Writer) error {
	id, err := uuid.Parse(ref)
	if err != nil {
		inv, err := svc.InvoiceByNumber(ctx, identity.System, ref)
		if err != nil {
			return fmt.Errorf("find invoice %s: %w", ref, err)
		}
		id = inv.ID
	}
	ex, err := svc.Explain(ctx, id)
	if err != nil {
		return fmt.Errorf("explain invoice %s: %w", ref, err)
	}
	if err := ex.Write(stdout); err != nil {
		return err
	}
	if len(ex.Diffs) > 0 {
		return errInvoiceDiffers
	}
	return nil
}
