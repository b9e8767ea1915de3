-- Billing profiles, tax rules, issuer settings and the provider's revenue.

-- name: BillingProfileGet :one
SELECT organization_id, legal_name, address_line1, address_line2, city, postal_code, country, region, tax_id, email, updated_at
FROM billing_profiles
WHERE organization_id = $1;

-- name: BillingProfileUpsert :one
INSERT INTO billing_profiles (organization_id, legal_name, address_line1, address_line2, city, postal_code, country, region, tax_id, email)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (organization_id) DO UPDATE SET
    legal_name = EXCLUDED.legal_name, address_line1 = EXCLUDED.address_line1, address_line2 = EXCLUDED.address_line2,
    city = EXCLUDED.city, postal_code = EXCLUDED.postal_code, country = EXCLUDED.country, region = EXCLUDED.region,
    tax_id = EXCLUDED.tax_id, email = EXCLUDED.email, updated_at = now()
RETURNING organization_id, legal_name, address_line1, address_line2, city, postal_code, country, region, tax_id, email, updated_at;

-- name: OrganizationExists :one
SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1);

-- name: TaxRuleInsert :one
INSERT INTO tax_rules (issuer_id, country, region, name, rate_percent, inclusive, reverse_charge, effective_from, effective_until, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING id, issuer_id, country, region, name, rate_percent, inclusive, reverse_charge, effective_from, effective_until, created_by, created_at;

-- name: TaxRuleListByIssuer :many
SELECT id, issuer_id, country, region, name, rate_percent, inclusive, reverse_charge, effective_from, effective_until, created_by, created_at
FROM tax_rules
WHERE issuer_id = $1
ORDER BY country, region, effective_from, id;

-- name: TaxRuleGetForUpdate :one
SELECT id, issuer_id, country, region, name, rate_percent, inclusive, reverse_charge, effective_from, effective_until, created_by, created_at
FROM tax_rules
WHERE issuer_id = $1 AND id = $2
FOR UPDATE;

-- TaxRulesInForce: the issuer's rules for the country, the whole country's
-- and the region's, in force at the instant; the service picks the most
-- specific.
-- name: TaxRulesInForce :many
SELECT id, issuer_id, country, region, name, rate_percent, inclusive, reverse_charge, effective_from, effective_until, created_by, created_at
FROM tax_rules
WHERE issuer_id = @issuer_id AND country = @country AND (region = '' OR region = @region::text)
  AND effective_from <= @at AND (effective_until IS NULL OR effective_until > @at);

-- name: TaxRuleStartTaken :one
SELECT EXISTS (
    SELECT 1 FROM tax_rules
    WHERE issuer_id = $1 AND country = $2 AND region = $3 AND effective_from = $4
);

-- TaxRuleLock serializes the creation of an issuer's rules for one
-- country and region, so that two rules cannot take the same start.
-- name: TaxRuleLock :exec
SELECT pg_advisory_xact_lock(hashtextextended('tax_rules:' || @issuer_id::text || ':' || @country::text || ':' || @region::text, 0));

-- TaxRuleInUse: a finalized invoice of the issuer cites the rule, or, for
-- an invoice whose cites name no rule (none applied when it was built, or
-- the rule was dated back later), one to a customer in the rule's country
-- (the cited profile's, else the current one's) whose period ended while
-- the rule was in force: it may have applied, so it is kept.
-- name: TaxRuleInUse :one
SELECT EXISTS (
    SELECT 1 FROM invoices i
    LEFT JOIN billing_profiles p ON p.organization_id = i.customer_id
    WHERE i.issuer_id = @issuer_id AND i.status <> 'draft'
      AND (i.cites ->> 'tax_rule_id' = @rule_id::text
           OR (i.cites ->> 'tax_rule_id' IS NULL
               AND i.period_end >= @effective_from
               AND (sqlc.narg(effective_until)::timestamptz IS NULL OR i.period_end < sqlc.narg(effective_until)::timestamptz)
               AND coalesce(i.cites -> 'customer' ->> 'country', p.country) = @country::text))
);

-- name: TaxRuleDelete :exec
DELETE FROM tax_rules WHERE issuer_id = $1 AND id = $2;

-- name: TaxRuleEnd :one
UPDATE tax_rules SET effective_until = $3
WHERE issuer_id = $1 AND id = $2
RETURNING id, issuer_id, country, region, name, rate_percent, inclusive, reverse_charge, effective_from, effective_until, created_by, created_at;

-- name: IssuerSettingsGet :one
SELECT organization_id, invoice_prefix, platform_fee_percent, updated_at
FROM issuer_settings
WHERE organization_id = $1;

-- IssuerSettingsUpsert sets what is given (non-null) and keeps the rest.
-- name: IssuerSettingsUpsert :one
INSERT INTO issuer_settings (organization_id, invoice_prefix, platform_fee_percent)
VALUES (@organization_id, coalesce(sqlc.narg(invoice_prefix)::text, 'INV'), coalesce(sqlc.narg(platform_fee_percent)::numeric, 0))
ON CONFLICT (organization_id) DO UPDATE SET
    invoice_prefix = coalesce(sqlc.narg(invoice_prefix)::text, issuer_settings.invoice_prefix),
    platform_fee_percent = coalesce(sqlc.narg(platform_fee_percent)::numeric, issuer_settings.platform_fee_percent),
    updated_at = now()
RETURNING organization_id, invoice_prefix, platform_fee_percent, updated_at;

-- RevenueByMonthAPI sums the issuer's finalized invoices by month of
-- finalization (UTC), API and currency: open and paid ones in the
-- figures, uncollectible ones apart, void ones not at all.
-- name: RevenueByMonthAPI :many
SELECT to_char(i.finalized_at AT TIME ZONE 'UTC', 'YYYY-MM')::text AS month,
       a.id AS api_id, a.slug AS api_slug, a.name AS api_name, i.currency,
       count(*) FILTER (WHERE i.status IN ('open', 'paid'))::bigint AS invoices,
       coalesce(sum(i.subtotal) FILTER (WHERE i.status IN ('open', 'paid')), 0)::numeric AS gross,
       coalesce(sum(i.discount) FILTER (WHERE i.status IN ('open', 'paid')), 0)::numeric AS discounts,
       coalesce(sum(i.tax) FILTER (WHERE i.status IN ('open', 'paid')), 0)::numeric AS tax,
       coalesce(sum(i.total - i.tax) FILTER (WHERE i.status IN ('open', 'paid')), 0)::numeric AS net,
       count(*) FILTER (WHERE i.status = 'uncollectible')::bigint AS uncollectible_invoices,
       coalesce(sum(i.total - i.tax) FILTER (WHERE i.status = 'uncollectible'), 0)::numeric AS uncollectible_net
FROM invoices i
JOIN subscriptions s ON s.id = i.subscription_id
JOIN apis a ON a.id = s.api_id
WHERE i.issuer_id = @issuer_id AND i.status IN ('open', 'paid', 'uncollectible')
  AND i.finalized_at >= @from_time::timestamptz AND i.finalized_at < @to_time::timestamptz
GROUP BY 1, a.id, a.slug, a.name, i.currency
ORDER BY 1, a.slug, i.currency;
