package validation

import (
	"strings"
	"unicode/utf8"
)

// MaxReasonRunes bounds a free-text reason (a suspension's, a sync
// failure's, a hold's release) before it is stored.
const MaxReasonRunes = 500

// Reason trims r and cuts it to MaxReasonRunes runes: a reason is stored
// and shown, never refused for its length.
func Reason(r string) string {
	r = strings.TrimSpace(r)
	if utf8.RuneCountInString(r) > MaxReasonRunes {
		r = string([]rune(r)[:MaxReasonRunes])
	}
	return r
}
