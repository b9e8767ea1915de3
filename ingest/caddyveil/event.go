package caddyveil

import (
	"crypto/rand"
	"encoding/hex"
	"math"
	"net/http"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/ingest/emitter"
	"github.com/veil-platform/veil/schemas/usage"
)

// call is what the event of one request is made of.
type call struct {
	start    time.Time
	keyID    string
	subject  string
	route    string
	rel      string
	status   int
	reqBytes int64
	resBytes int64
	units    decimal.Decimal
	refusal  string
}

// emit hands the call's event to the emitter; it never waits for Kafka.
func (h *Handler) emit(r *http.Request, c *call) {
	b := h.appendEvent(make([]byte, 0, 512), r, c)
	key := []byte(c.subject)
	if c.subject == anonymousSubject {
		key = anonymousKey()
	}
	h.res.emitter.Emit(emitter.Record{Key: key, Value: b})
	h.res.m.requests.Inc()
	h.res.m.latency.Update(time.Since(c.start).Seconds())
}

// appendEvent appends the call's usage event to b, through the event
// format's one encoder.
func (h *Handler) appendEvent(b []byte, r *http.Request, c *call) []byte {
	// A random 128-bit id in hex; 32 bytes, so the string made of it below
	// stays on the stack.
	var raw [16]byte
	var id [32]byte
	_, _ = rand.Read(raw[:])
	hex.Encode(id[:], raw[:])
	lat := time.Since(c.start).Milliseconds()
	e := usage.Event{
		ID:      string(id[:]),
		Source:  h.app.Source,
		Type:    usage.TypeAPIRequest,
		Time:    c.start,
		Subject: c.subject,
		Data: usage.Data{
			APIID:         h.APIID,
			KeyID:         c.keyID,
			Method:        eventMethod(r.Method),
			Route:         c.route,
			Path:          truncate(c.rel, 2048),
			Status:        uint16(c.status),
			LatencyMS:     uint32(min(max(lat, 0), math.MaxUint32)),
			RequestBytes:  uint64(max(c.reqBytes, 0)),
			ResponseBytes: uint64(max(c.resBytes, 0)),
			Units:         c.units,
			Refusal:       c.refusal,
		},
	}
	return usage.AppendEvent(b, &e)
}

// eventMethod is the method as the event schema takes it (1–16 upper-case
// letters); anything else is OTHER.
func eventMethod(m string) string {
	if len(m) == 0 || len(m) > 16 {
		return "OTHER"
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return "OTHER"
		}
	}
	return m
}

// truncate cuts s to at most n bytes on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
