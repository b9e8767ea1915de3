package ratelimit

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SetHeaders describes the decision's tightest limit to the client, in the
// fields of draft-ietf-httpapi-ratelimit-headers (revision 11) and in the
// older trio many clients still read:
//
//	RateLimit-Policy: "minute";q=100;w=60      the limit: q requests per w seconds
//	RateLimit: "minute";r=42;t=35              r requests left, t seconds (below)
//	RateLimit-Limit: 100                        the burst, the most r can be
//	RateLimit-Remaining: 42                     r
//	RateLimit-Reset: 35                         t
//	Retry-After: 1                              on refusal only
//
// t is the time until the budget is full again; on refusal, when r is 0, it
// is Retry-After instead, since the draft wants Retry-After no earlier than
// the end of t. Seconds are rounded up. The policy's window is whole
// seconds: a limit whose period is not is advertised as the requests it
// admits in the period rounded up to seconds (20 per 200ms as q=100;w=1).
// A burst other than the rate is advertised as the policy's parameter
// veil-burst. A decision without a limit (Allow with none) writes nothing.
func (d Decision) SetHeaders(h http.Header) {
	lim := d.Limit
	if lim.Rate <= 0 || lim.Period <= 0 {
		return
	}
	name := quoteName(lim.Name)
	q, w := policyWindow(lim)
	burst := strconv.Itoa(lim.burst())
	policy := name + ";q=" + strconv.FormatInt(q, 10) + ";w=" + strconv.FormatInt(w, 10)
	if lim.Burst != 0 && lim.Burst != lim.Rate {
		policy += ";veil-burst=" + burst
	}
	remaining := strconv.Itoa(max(d.Remaining, 0))
	t := d.Reset
	if !d.Allowed {
		remaining, t = "0", d.RetryAfter
	}
	secs := strconv.FormatInt(ceilSeconds(t), 10)

	h.Set("RateLimit-Policy", policy)
	h.Set("RateLimit", name+";r="+remaining+";t="+secs)
	h.Set("RateLimit-Limit", burst)
	h.Set("RateLimit-Remaining", remaining)
	h.Set("RateLimit-Reset", secs)
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(d.RetryAfter), 1), 10))
	}
}

// policyWindow returns the policy's quota q and window w in seconds.
func policyWindow(lim Limit) (q, w int64) {
	if lim.Period%time.Second == 0 {
		return int64(lim.Rate), int64(lim.Period / time.Second)
	}
	w = ceilSeconds(lim.Period)
	return int64(float64(lim.Rate) * float64(time.Duration(w)*time.Second) / float64(lim.Period)), w
}

// quoteName returns name as a structured field String: quoted, with
// backslashes and quotes escaped and anything but printable ASCII, which a
// String cannot hold, replaced by '?'.
func quoteName(name string) string {
	if name == "" {
		return `"default"`
	}
	plain := true
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return `"` + name + `"`
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
