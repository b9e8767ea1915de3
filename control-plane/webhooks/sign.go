package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery, as the Standard Webhooks spec names them.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Sign returns the webhook-signature value "v1,<base64 HMAC-SHA256>" of one
// attempt: the MAC of "<msgID>.<unix seconds of ts>.<body>" keyed with the
// base64-decoded part of secret after "whsec_".
func Sign(secret, msgID string, ts time.Time, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, secretPrefix))
	if err != nil {
		return "", fmt.Errorf("decode webhook secret: %w", err)
	}
	if len(key) == 0 {
		return "", errors.New("decode webhook secret: empty key")
	}
	// The id is a field of the signed content: a "." in it would let one
	// (id, timestamp) pair pose as another.
	if msgID == "" || strings.Contains(msgID, ".") {
		return "", fmt.Errorf("sign webhook: message id %q must be non-empty and free of '.'", msgID)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, ts.Unix(), 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}
