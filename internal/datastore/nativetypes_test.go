package datastore

import (
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/shopspring/decimal"
)

// Decimals and uuids, alone and in arrays, encode without the
// driver.Valuer detour, and to the same values as through it (a decimal
// keeps its scale, which its text form trims).
func TestNativeTypesEncodeDirectly(t *testing.T) {
	id := uuid.MustParse("0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b")
	for _, c := range []struct {
		oid   uint32
		value any
	}{
		{pgtype.UUIDOID, id},
		{pgtype.NumericOID, decimal.RequireFromString("-12.3400")},
		{pgtype.UUIDArrayOID, []uuid.UUID{id, uuid.Nil}},
		{pgtype.NumericArrayOID, []decimal.Decimal{decimal.RequireFromString("0.000001"), decimal.New(5, 9)}},
	} {
		native := pgtype.NewMap()
		registerNativeTypes(native)
		want, err := pgtype.NewMap().Encode(c.oid, pgtype.BinaryFormatCode, c.value, nil)
		if err != nil {
			t.Fatalf("encode %v through driver.Valuer: %v", c.value, err)
		}
		got, err := native.Encode(c.oid, pgtype.BinaryFormatCode, c.value, nil)
		if err != nil {
			t.Fatalf("encode %v: %v", c.value, err)
		}
		if !sameValue(t, c.oid, got, want) {
			t.Errorf("encode %v = %x; want %x (the same value)", c.value, got, want)
		}
		elem := c.value
		switch v := c.value.(type) {
		case []uuid.UUID:
			elem = v[0]
		case []decimal.Decimal:
			elem = v[0]
		}
		oid := map[uint32]uint32{pgtype.UUIDArrayOID: pgtype.UUIDOID, pgtype.NumericArrayOID: pgtype.NumericOID}[c.oid]
		if oid == 0 {
			oid = c.oid
		}
		if plan := fmt.Sprintf("%T", native.PlanEncode(oid, pgtype.BinaryFormatCode, elem)); plan == "*pgtype.encodePlanDriverValuer" {
			t.Errorf("%T encodes as %s", elem, plan)
		}
	}
}

// sameValue reports whether two binary encodings decode to equal values.
func sameValue(t *testing.T, oid uint32, a, b []byte) bool {
	t.Helper()
	m := pgtype.NewMap()
	registerNativeTypes(m)
	switch oid {
	case pgtype.NumericOID, pgtype.NumericArrayOID:
		var x, y []decimal.Decimal
		if oid == pgtype.NumericOID {
			x, y = make([]decimal.Decimal, 1), make([]decimal.Decimal, 1)
			if m.Scan(oid, pgtype.BinaryFormatCode, a, &x[0]) != nil || m.Scan(oid, pgtype.BinaryFormatCode, b, &y[0]) != nil {
				return false
			}
		} else if m.Scan(oid, pgtype.BinaryFormatCode, a, &x) != nil || m.Scan(oid, pgtype.BinaryFormatCode, b, &y) != nil {
			return false
		}
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !x[i].Equal(y[i]) {
				return false
			}
		}
		return true
	}
	return string(a) == string(b)
}
