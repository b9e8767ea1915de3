// Package originsig is the gateway's proof to an upstream that a request
// came through it: the Veil-Signature header, an HMAC-SHA256 with the API's
// signing secret over the time, the method, the path and query the upstream
// receives and the API id. The gateway signs with Sign; Verify is what an upstream
// runs, and the README's Go snippet is Verify's text (a test keeps them
// equal), so providers copy code that is tested here.
package originsig

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret, so that one found in a log or a
// repository is recognised.
const SecretPrefix = "vsk_"

// NewSecret returns a new signing secret: SecretPrefix and 32 random bytes
// in hex. The whole string, prefix included, is the HMAC key.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return SecretPrefix + hex.EncodeToString(b[:])
}

// Sign returns the Veil-Signature header value for a request at t:
// "t=<unix seconds>,v1=<hex HMAC>", with one v1 per secret (during a
// rotation's overlap the gateway signs with the new and the previous
// secret, and an upstream accepts the header if any v1 matches its own).
// path is the request target's path exactly as the upstream receives it:
// after the gateway's rewrite to the upstream's base path, percent-encoded
// as on the wire; rawQuery is its query as on the wire, without the "?"
// (empty: none, and nothing is added to the signed string).
func Sign(t time.Time, method, path, rawQuery, apiID string, secrets ...string) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	var b strings.Builder
	b.WriteString("t=")
	b.WriteString(ts)
	for _, s := range secrets {
		b.WriteString(",v1=")
		b.WriteString(hex.EncodeToString(mac(s, ts, method, path, rawQuery, apiID)))
	}
	return b.String()
}
