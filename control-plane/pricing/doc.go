// Package pricing holds what a plan charges for and how: the meters of an
// API (their REST life: create, read, change while no used plan version
// charges them, delete while nothing charges them), the charges and tiers
// of a plan version (validated and written in the transaction that adds
// the version, read back in a stable order), the rules that tie a plan's
// type to its base fee and charges, and TermsForVersion, the one loader of
// a version's metering.PlanTerms that quotes and billing price with.
//
// Plans and their versions are control-plane/subscriptions'; it calls
// this package to validate, write and read a version's charges. The
// rating itself is metering's.
package pricing
