package caddyveil

import (
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/veil-platform/veil/schemas/usage"
)

// Defaults for the anonymous refusals' settings (App).
const (
	// DefaultAnonymousSampleRate: one anonymous refusal in 100 becomes an
	// event.
	DefaultAnonymousSampleRate = 100
	// DefaultAnonymousEventsPerIPMinute: at most 60 anonymous refusal
	// events per client IP and minute.
	DefaultAnonymousEventsPerIPMinute = 60
	// DefaultAnonymousEventsPerMinute: at most 6000 anonymous refusal
	// events per minute from all client IPs together.
	DefaultAnonymousEventsPerMinute = 6000
	// anonymousMaxIPs bounds the limiter's memory: past this many client
	// IPs in one minute, the rest share one budget.
	anonymousMaxIPs = 100_000
)

// anonymousSubject is the subject of events of requests with no usable key
// (missing, malformed, unknown, or unreadable while Redis is away). Such
// an event's Kafka key is not its subject but anonymousKey's: an
// unauthenticated flood would otherwise fill one partition, behind which
// every subscription that shares it would wait.
const anonymousSubject = usage.AnonymousSubject

// anonymousKey returns a Kafka key that spreads anonymous events over every
// partition: anonymous/ and 16 random hex digits. Nothing downstream groups
// them by key: the processors count no refusal, and their offset
// watermarks are per partition.
func anonymousKey() []byte {
	var b [8]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.AppendEncode([]byte(anonymousSubject+"/"), b[:])
}

// anonymousGate decides which anonymous refusals become usage events. Every
// one is counted in veil_gateway_anonymous_refusals_total; one in
// sampleRate is emitted (the first, then every sampleRate-th), and of
// those at most perIPMinute per client IP and perMinute in all in each
// minute, so that neither a flood from many addresses nor one from a
// single address writes a row per request. The overall bound holds even
// when client IPs come from a header a caller can forge (X-Forwarded-For
// through trusted proxies). What the caller receives does not change: 401
// either way.
type anonymousGate struct {
	sampleRate  uint64
	perIPMinute int
	perMinute   int
	seen        atomic.Uint64

	mu     sync.Mutex
	window time.Time
	perIP  map[string]int
	total  int
}

func newAnonymousGate(sampleRate, perIPMinute, perMinute int) *anonymousGate {
	return &anonymousGate{sampleRate: uint64(max(sampleRate, 1)), perIPMinute: max(perIPMinute, 1), perMinute: max(perMinute, 1), perIP: map[string]int{}}
}

// emit counts one anonymous refusal from ip and reports whether its event
// is sent. A nil gate (an app not provisioned) sends every one.
func (g *anonymousGate) emit(ip string, now time.Time, m handlerMetrics) bool {
	m.anonymousRefusals.Inc()
	if g == nil {
		return true
	}
	if (g.seen.Add(1)-1)%g.sampleRate != 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w := now.Truncate(time.Minute); !w.Equal(g.window) {
		g.window = w
		clear(g.perIP)
		g.total = 0
	}
	if _, ok := g.perIP[ip]; !ok && len(g.perIP) >= anonymousMaxIPs {
		ip = "" // the shared budget of the addresses past the bound
	}
	if g.perIP[ip] >= g.perIPMinute {
		m.anonymousIPLimited.Inc()
		return false
	}
	if g.total >= g.perMinute {
		m.anonymousLimited.Inc()
		return false
	}
	g.total++
	g.perIP[ip]++
	return true
}

// clientIP is the address Caddy determined for the request (trusted
// proxies considered), else the connection's.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
