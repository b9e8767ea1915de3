package quota

import (
	"errors"
	"strings"
	"testing"

	"github.com/veil-platform/veil/internal/validation"
)

func TestAdjustmentInputValidate(t *testing.T) {
	long := strings.Repeat("x", 501)
	for _, c := range []struct {
		name   string
		kind   string
		in     AdjustmentInput
		fields []string // the fields refused; nil: valid
		bad    bool     // refused, but not as fields (an unknown kind)
	}{
		{name: "credit", kind: AdjustCredit, in: AdjustmentInput{Requests: 500, Reason: "goodwill"}},
		{name: "largest credit", kind: AdjustCredit, in: AdjustmentInput{Requests: MaxCredit, Reason: "r"}},
		{name: "reset ignores requests", kind: AdjustReset, in: AdjustmentInput{Reason: "ticket 42"}},
		{name: "zero credit, blank reason", kind: AdjustCredit, in: AdjustmentInput{Reason: " "}, fields: []string{"reason", "requests"}},
		{name: "credit past the bound", kind: AdjustCredit, in: AdjustmentInput{Requests: MaxCredit + 1, Reason: "r"}, fields: []string{"requests"}},
		{name: "negative credit", kind: AdjustCredit, in: AdjustmentInput{Requests: -1, Reason: "r"}, fields: []string{"requests"}},
		{name: "reason too long", kind: AdjustReset, in: AdjustmentInput{Reason: long}, fields: []string{"reason"}},
		{name: "unknown kind", kind: "refund", in: AdjustmentInput{Requests: 1, Reason: "r"}, bad: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := c.in
			err := in.validate(c.kind)
			var verr *validation.Error
			switch {
			case c.bad:
				if err == nil || errors.As(err, &verr) {
					t.Fatalf("validate(%q) = %v; want an error that is no field error", c.kind, err)
				}
			case c.fields == nil:
				if err != nil {
					t.Fatalf("validate(%q, %+v) = %v; want nil", c.kind, c.in, err)
				}
			default:
				if !errors.As(err, &verr) {
					t.Fatalf("validate(%q, %+v) = %v; want field errors %v", c.kind, c.in, err, c.fields)
				}
				var got []string
				for _, f := range verr.Fields {
					got = append(got, f.Field)
				}
				if len(got) != len(c.fields) {
					t.Fatalf("validate(%q, %+v) refused %v; want %v", c.kind, c.in, got, c.fields)
				}
				for i := range got {
					if got[i] != c.fields[i] {
						t.Fatalf("validate(%q, %+v) refused %v; want %v", c.kind, c.in, got, c.fields)
					}
				}
			}
		})
	}
}
