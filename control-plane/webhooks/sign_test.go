package webhooks

import (
	"encoding/base64"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/egress"
)

func TestSign(t *testing.T) {
	// The test vector of the Standard Webhooks reference library:
	// github.com/standard-webhooks/standard-webhooks,
	// libraries/go/webhook_test.go, TestWebhookSign.
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		msgID  = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		want   = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	body := []byte(`{"test": 2432232314}`)
	got, err := Sign(secret, msgID, time.Unix(1614265330, 0), body)
	if err != nil || got != want {
		t.Errorf("Sign(vector) = %q, %v; want %q", got, err, want)
	}
	// The prefix only marks the format: the same key without it signs alike.
	got, err = Sign(strings.TrimPrefix(secret, "whsec_"), msgID, time.Unix(1614265330, 0), body)
	if err != nil || got != want {
		t.Errorf("Sign(vector without prefix) = %q, %v; want %q", got, err, want)
	}
}

func TestSignErrors(t *testing.T) {
	tests := []struct {
		name, secret, msgID string
	}{
		{"not base64", "whsec_not base64!", "msg_1"},
		{"empty key", "whsec_", "msg_1"},
		{"empty id", newSecret(), ""},
		{"dot in id", newSecret(), "msg_1.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := Sign(tt.secret, tt.msgID, time.Now(), []byte("{}")); err == nil {
				t.Errorf("Sign(%q, %q) = %q, nil; want an error", tt.secret, tt.msgID, got)
			}
		})
	}
}

// TestSignVerifies checks Sign against the test's own verifier, and that
// the verifier refuses what it must, so the delivery tests can rely on it.
func TestSignVerifies(t *testing.T) {
	secret, msgID, body := newSecret(), newMessageID(), []byte(`{"type":"api.created","data":{}}`)
	now := time.Now()
	header := func(ts time.Time, sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", msgID)
		h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
		h.Set("webhook-signature", sig)
		return h
	}
	sig, err := Sign(secret, msgID, now, body)
	if err != nil {
		t.Fatal(err)
	}
	old, err := Sign(newSecret(), msgID, now, body)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := Sign(secret, msgID, now.Add(-6*time.Minute), body)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		h      http.Header
		body   []byte
		secret string
		ok     bool
	}{
		{"valid", header(now, sig), body, secret, true},
		{"valid among several", header(now, "v1a,AAAA "+old+" "+sig), body, secret, true},
		{"other secret", header(now, sig), body, newSecret(), false},
		{"changed body", header(now, sig), []byte(`{"type":"api.deleted","data":{}}`), secret, false},
		{"stale timestamp", header(now.Add(-6*time.Minute), stale), body, secret, false},
		{"timestamp moved", header(now.Add(time.Second), sig), body, secret, false},
		{"no signature", header(now, ""), body, secret, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.secret, tt.h, tt.body, now, 5*time.Minute)
			if (err == nil) != tt.ok {
				t.Errorf("verify() = %v; want ok %v", err, tt.ok)
			}
		})
	}
}

func TestNewSecret(t *testing.T) {
	s := newSecret()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
	if !strings.HasPrefix(s, "whsec_") || err != nil || len(key) < 24 {
		t.Errorf("newSecret() = %q (%d bytes, %v); want whsec_ and base64 of at least 24 bytes", s, len(key), err)
	}
	if id := newMessageID(); !strings.HasPrefix(id, "msg_") || strings.ContainsAny(id, ".") || len(id) != 28 {
		t.Errorf("newMessageID() = %q; want msg_ and 24 characters without '.'", id)
	}
}

func TestBackoff(t *testing.T) {
	s := &Service{cfg: Config{RetryBase: time.Second}}
	tests := []struct {
		attempt int
		max     time.Duration
	}{
		{1, time.Second},
		{2, 2 * time.Second},
		{4, 8 * time.Second},
		{12, time.Hour},
		{100, time.Hour},
	}
	for _, tt := range tests {
		for range 50 {
			if got := s.backoff(tt.attempt); got < 0 || got >= tt.max {
				t.Fatalf("backoff(%d) = %s; want within [0, %s)", tt.attempt, got, tt.max)
			}
		}
	}
}

// TestPublicOnlyPolicy: without private networks, the webhook policy
// refuses every non-public address, naming its kind, and admits public
// ones.
func TestPublicOnlyPolicy(t *testing.T) {
	p, err := EgressPolicy(t.Context(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want string
	}{
		{"127.0.0.1", "loopback"},
		{"127.9.9.9", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"192.168.1.1", "private"},
		{"fd00::1", "private"},
		{"169.254.169.254", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "this-network"},
		{"::", "unspecified"},
		{"239.1.2.3", "multicast"},
		{"100.64.0.1", "shared (carrier-grade NAT)"},
		{"64:ff9b::a00:1", "private"},
		{"255.255.255.255", "reserved"},
		{"93.184.215.14", ""},
		{"1.1.1.1", ""},
		{"2606:4700:4700::1111", ""},
		{"64:ff9b::101:101", ""},
	}
	for _, tt := range tests {
		err := p.Check("", netip.AddrPortFrom(netip.MustParseAddr(tt.addr), 443))
		if got := egress.Kind(err); got != tt.want {
			t.Errorf("Check(%s:443) = %v (kind %q); want kind %q", tt.addr, err, got, tt.want)
		}
	}
}

func TestEndpointInputValidate(t *testing.T) {
	const ok = "https://hooks.example.com/veil"
	tests := []struct {
		name   string
		in     EndpointInput
		fields []string
	}{
		{"valid", EndpointInput{URL: ok, EventTypes: []string{EventAPICreated, EventApprovalDecided}}, nil},
		{"all types", EndpointInput{URL: "http://hooks.example.com:8080/x?token=1", EventTypes: []string{"*"}}, nil},
		{"no url", EndpointInput{EventTypes: []string{"*"}}, []string{"url"}},
		{"relative url", EndpointInput{URL: "/hook", EventTypes: []string{"*"}}, []string{"url"}},
		{"ftp url", EndpointInput{URL: "ftp://example.com/", EventTypes: []string{"*"}}, []string{"url"}},
		{"credentials", EndpointInput{URL: "https://u:p@example.com/", EventTypes: []string{"*"}}, []string{"url"}},
		{"fragment", EndpointInput{URL: "https://example.com/#x", EventTypes: []string{"*"}}, []string{"url"}},
		{"long url", EndpointInput{URL: "https://example.com/" + strings.Repeat("a", 2048), EventTypes: []string{"*"}}, []string{"url"}},
		{"no types", EndpointInput{URL: ok}, []string{"event_types"}},
		{"unknown type", EndpointInput{URL: ok, EventTypes: []string{EventAPICreated, "api.exploded"}}, []string{"event_types[1]"}},
		{"repeated type", EndpointInput{URL: ok, EventTypes: []string{EventAPICreated, EventAPICreated}}, []string{"event_types[1]"}},
		{"long description", EndpointInput{URL: ok, EventTypes: []string{"*"}, Description: strings.Repeat("d", 1001)}, []string{"description"}},
		{"several", EndpointInput{URL: "nope", EventTypes: []string{"x"}}, []string{"url", "event_types[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			var got []string
			if err != nil {
				v, ok := err.(*ValidationError)
				if !ok {
					t.Fatalf("Validate() = %v; want a *ValidationError", err)
				}
				for _, f := range v.Fields {
					got = append(got, f.Field)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("Validate() fields = %v (%v); want %v", got, err, tt.fields)
			}
		})
	}
}
