package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

func printKeyRecord(out io.Writer, name string, kr enforcement.KeyRecord) {
	fmt.Fprintf(out, "  %s   (named by the key's hex SHA-256, not the key)\n", name)
	fmt.Fprintf(out, "    %-16s %s\n", "status", kr.Status)
	fmt.Fprintf(out, "    %-16s %s\n", "key_id", kr.KeyID)
	fmt.Fprintf(out, "    %-16s %s\n", "subscription_id", kr.SubscriptionID)
	fmt.Fprintf(out, "    %-16s %s\n", "api_id", kr.APIID)
	fmt.Fprintf(out, "    %-16s %s, %s\n", "methods, routes", orAll(kr.Methods), orAll(kr.Routes))
	fmt.Fprintf(out, "    %-16s %s\n", "rate limits", rates(kr.RatePerSecond, kr.RatePerMinute, "none of its own: the subscription's apply"))
	fmt.Fprintf(out, "    %-16s %s\n", "expires_at", orNever(kr.ExpiresAt))
	fmt.Fprintf(out, "    %-16s %s\n", "grace_until", orNone(kr.GraceUntil))
	fmt.Fprintf(out, "    %-16s %d\n", "version", kr.Version)
}

func printSubscriptionRecord(out io.Writer, sr enforcement.SubscriptionRecord) {
	hard := "soft: overage is billed"
	if sr.QuotaHard {
		hard = "hard: blocked over quota"
	}
	quota := "unlimited"
	if sr.QuotaRequests >= 0 {
		quota = fmt.Sprintf("%d requests (%s)", sr.QuotaRequests, hard)
	}
	fmt.Fprintf(out, "  %s\n", enforcement.SubscriptionName(sr.ID))
	fmt.Fprintf(out, "    %-16s %s\n", "status", sr.Status)
	fmt.Fprintf(out, "    %-16s %s\n", "api_id", sr.APIID)
	fmt.Fprintf(out, "    %-16s %s\n", "plan_id", sr.PlanID)
	fmt.Fprintf(out, "    %-16s %s → %s\n", "period", sr.PeriodStart.Format(time.RFC3339), sr.PeriodEnd.Format(time.RFC3339))
	fmt.Fprintf(out, "    %-16s %s\n", "quota", quota)
	fmt.Fprintf(out, "    %-16s %s\n", "rate limits", rates(sr.RatePerSecond, sr.RatePerMinute, "none"))
	fmt.Fprintf(out, "    %-16s %d\n", "version", sr.Version)
}

// containsPlaintext reports whether a key's JSON answer carries the key
// itself, which only the answer that issues it may.
func containsPlaintext(body []byte) bool {
	var k struct {
		Key string `json:"key"`
	}
	return json.Unmarshal(body, &k) == nil && k.Key != ""
}

func orUnlimited[T int | int64](v *T) string {
	if v == nil {
		return "unlimited"
	}
	return fmt.Sprint(*v)
}

func orAll(l []string) string {
	if len(l) == 0 {
		return "all"
	}
	return strings.Join(l, " ")
}

// rates shows a record's rate limits, where 0 is not set; none is what
// shows when neither is.
func rates(perSecond, perMinute int, none string) string {
	var l []string
	if perSecond > 0 {
		l = append(l, strconv.Itoa(perSecond)+"/s")
	}
	if perMinute > 0 {
		l = append(l, strconv.Itoa(perMinute)+"/min")
	}
	if len(l) == 0 {
		return none
	}
	return strings.Join(l, ", ")
}

func orNever(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format(time.RFC3339)
}

func orNone(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.Format(time.RFC3339)
}
