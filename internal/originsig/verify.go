package originsig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// The text from here to the end of the file is the README's Go
// verification snippet; TestReadmeSnippetIsVerify keeps the two equal.

// Header is the request header the Veil gateway signs every proxied
// request with; X-Veil-Api-Id names the API.
const Header = "Veil-Signature"

// Tolerance is the replay window: a signature older or newer than this is
// refused, so a captured request cannot be replayed later.
const Tolerance = 5 * time.Minute

// Errors of Verify.
var (
	ErrMalformed = errors.New("veil signature: malformed header")
	ErrStale     = errors.New("veil signature: timestamp outside the replay window")
	ErrMismatch  = errors.New("veil signature: no signature matches")
)

// Verify checks a Veil-Signature header value for a request with method,
// path (the request target's path as received, percent-encoded:
// r.URL.EscapedPath() in Go), rawQuery (the query as received, without
// the "?": r.URL.RawQuery) and apiID (the API's id, from X-Veil-Api-Id or
// your own configuration), at now, against secret.
func Verify(header, secret, method, path, rawQuery, apiID string, now time.Time) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		switch {
		case !ok:
			return ErrMalformed
		case k == "t":
			ts = v
		case k == "v1":
			sig, err := hexDecode(v)
			if err != nil {
				return ErrMalformed
			}
			sigs = append(sigs, sig)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrMalformed
	}
	if d := now.Sub(time.Unix(sec, 0)); d > Tolerance || d < -Tolerance {
		return ErrStale
	}
	want := mac(secret, ts, method, path, rawQuery, apiID)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) { // constant time
			return nil
		}
	}
	return ErrMismatch
}

// mac is HMAC-SHA256(secret, "<t>.<METHOD>.<path>.<api id>"), with
// "?<query>" after the path when the query is not empty, so a signature
// is good for one query only.
func mac(secret, ts, method, path, rawQuery, apiID string) []byte {
	target := path
	if rawQuery != "" {
		target += "?" + rawQuery
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "." + method + "." + target + "." + apiID))
	return m.Sum(nil)
}

func hexDecode(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, ErrMalformed
	}
	return b, nil
}
