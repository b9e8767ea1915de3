package identity_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/VictoriaMetrics/metrics"
	"github.com/golang-jwt/jwt/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

const (
	testSecret   = "identity-test-secret-0123456789abcdef"
	testIssuer   = "veil"
	testAudience = "veil-control-plane"
)

// signer is a private key with the kid and alg it is published under.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

func newRSA(t *testing.T, kid string) signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, method: jwt.SigningMethodRS256, key: k}
}

func newEC(t *testing.T, kid string) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, method: jwt.SigningMethodES256, key: k}
}

// sign returns the token for c signed by s, with s's kid.
func (s signer) sign(t *testing.T, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	tok.Header["kid"] = s.kid
	raw, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// jwksServer serves the public keys of its signers as a JWK Set, which the
// test may change while a verifier uses it.
type jwksServer struct {
	URL     string
	fetches atomic.Int64
	mu      sync.Mutex
	keys    []signer
}

func newJWKSServer(t *testing.T, keys ...signer) *jwksServer {
	t.Helper()
	s := &jwksServer{keys: keys}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		keys := append([]signer(nil), s.keys...)
		s.mu.Unlock()
		set := jwkset.JWKSMarshal{}
		for _, k := range keys {
			jwk, err := jwkset.NewJWKFromKey(k.key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
				KID: k.kid, ALG: jwkset.ALG(k.method.Alg()), USE: jwkset.UseSig,
			}})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			set.Keys = append(set.Keys, jwk.Marshal())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *jwksServer) set(keys ...signer) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

// claims returns valid claims for acme/alice, changed by edit.
func claims(edit func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "sub": "alice", "org": "acme", "role": "provider",
		"name": "Alice", "email": "alice@example.com", "jti": "tok-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(c)
	}
	return c
}

func hs256(t *testing.T, secret []byte, c jwt.MapClaims) string {
	t.Helper()
	raw, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func newVerifier(t *testing.T, cfg identity.Config) (*identity.Verifier, *metrics.Set) {
	t.Helper()
	set := metrics.NewSet()
	cfg.Logger, cfg.Metrics = testenv.Logger(t), set
	v, err := identity.NewVerifier(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier = %v; want a verifier", err)
	}
	return v, set
}

func failures(set *metrics.Set, reason string) uint64 {
	return set.GetOrCreateCounter(`veil_controlplane_auth_failures_total{reason="` + reason + `"}`).Get()
}

func TestVerify(t *testing.T) {
	rsaKey, ecKey, stranger := newRSA(t, "rsa-1"), newEC(t, "ec-1"), newRSA(t, "rsa-unknown")
	jwks := newJWKSServer(t, rsaKey, ecKey)
	verifiers := map[string]struct {
		v   *identity.Verifier
		set *metrics.Set
	}{}
	for name, cfg := range map[string]identity.Config{
		"hs":   {Secret: []byte(testSecret)},
		"jwks": {JWKSURL: jwks.URL},
		"both": {Secret: []byte(testSecret), JWKSURL: jwks.URL},
	} {
		v, set := newVerifier(t, cfg)
		verifiers[name] = struct {
			v   *identity.Verifier
			set *metrics.Set
		}{v, set}
	}

	rsaPublicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(rsaKey.key.Public()))})
	noneToken := func() string {
		raw, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	hs384 := func() string {
		raw, err := jwt.NewWithClaims(jwt.SigningMethodHS384, claims(nil)).SignedString([]byte(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	ps256 := signer{kid: rsaKey.kid, method: jwt.SigningMethodPS256, key: rsaKey.key}
	ecUnderRSAKid := signer{kid: rsaKey.kid, method: jwt.SigningMethodES256, key: ecKey.key}

	tests := []struct {
		name     string
		verifier string
		token    string
		want     error  // nil: accepted
		reason   string // failure counter that must grow
	}{
		{"valid HS256", "hs", hs256(t, []byte(testSecret), claims(nil)), nil, ""},
		{"valid HS256 with both sources", "both", hs256(t, []byte(testSecret), claims(nil)), nil, ""},
		{"expired within leeway", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(-10 * time.Second).Unix()
		})), nil, ""},
		{"wrong secret", "hs", hs256(t, []byte("another-secret-another-secret-xx"), claims(nil)), identity.ErrInvalidToken, "signature"},
		{"expired", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		})), identity.ErrExpired, "expired"},
		{"no expiry", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { delete(c, "exp") })), identity.ErrInvalidClaims, "claims"},
		{"not yet valid", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) {
			c["nbf"] = time.Now().Add(time.Hour).Unix()
		})), identity.ErrNotYetValid, "not_yet_valid"},
		{"issued in the future", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) {
			c["iat"] = time.Now().Add(time.Hour).Unix()
		})), identity.ErrNotYetValid, "not_yet_valid"},
		{"wrong issuer", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { c["iss"] = "evil" })), identity.ErrWrongIssuer, "issuer"},
		{"no issuer", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { delete(c, "iss") })), identity.ErrInvalidClaims, "claims"},
		{"wrong audience", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { c["aud"] = []string{"billing"} })), identity.ErrWrongAudience, "audience"},
		{"missing org", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { delete(c, "org") })), identity.ErrInvalidClaims, "claims"},
		{"bad org", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { c["org"] = "Acme Inc" })), identity.ErrInvalidClaims, "claims"},
		{"missing role", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { delete(c, "role") })), identity.ErrInvalidClaims, "claims"},
		{"bad role", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { c["role"] = "root" })), identity.ErrInvalidRole, "claims"},
		{"missing subject", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { delete(c, "sub") })), identity.ErrInvalidClaims, "claims"},
		{"org of the wrong type", "hs", hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) { c["org"] = 42 })), identity.ErrInvalidToken, "malformed"},
		{"alg none", "both", noneToken(), identity.ErrInvalidToken, "algorithm"},
		{"HS384", "hs", hs384(), identity.ErrInvalidToken, "algorithm"},
		{"HS256 signed with the RSA public key, JWKS only", "jwks", hs256(t, rsaPublicPEM, claims(nil)), identity.ErrInvalidToken, "algorithm"},
		{"HS256 signed with the RSA public key, both sources", "both", hs256(t, rsaPublicPEM, claims(nil)), identity.ErrInvalidToken, "signature"},
		{"RS256 via JWKS", "jwks", rsaKey.sign(t, claims(nil)), nil, ""},
		{"ES256 via JWKS", "jwks", ecKey.sign(t, claims(nil)), nil, ""},
		{"ES256 with both sources", "both", ecKey.sign(t, claims(nil)), nil, ""},
		{"RS256 without JWKS", "hs", rsaKey.sign(t, claims(nil)), identity.ErrInvalidToken, "algorithm"},
		{"RS256 expired via JWKS", "jwks", rsaKey.sign(t, claims(func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		})), identity.ErrExpired, "expired"},
		{"PS256", "jwks", ps256.sign(t, claims(nil)), identity.ErrInvalidToken, "algorithm"},
		{"ES256 under an RS256 kid", "jwks", ecUnderRSAKid.sign(t, claims(nil)), identity.ErrInvalidToken, "key"},
		{"unknown kid", "jwks", stranger.sign(t, claims(nil)), identity.ErrInvalidToken, "key"},
		{"malformed", "hs", "not.a.jwt", identity.ErrInvalidToken, "malformed"},
		{"empty", "hs", "", identity.ErrMissingToken, "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vs := verifiers[tc.verifier]
			before := uint64(0)
			if tc.reason != "" {
				before = failures(vs.set, tc.reason)
			}
			p, err := vs.v.Verify(t.Context(), tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v; want accepted", err)
				}
				want := identity.Principal{Subject: "alice", Org: "acme", Role: identity.RoleProvider, Name: "Alice", Email: "alice@example.com", TokenID: "tok-1"}
				if p != want {
					t.Fatalf("Verify = %+v; want %+v", p, want)
				}
				return
			}
			t.Logf("Verify = %v", err)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v; want %v", err, tc.want)
			}
			if tc.want != identity.ErrMissingToken && !errors.Is(err, identity.ErrInvalidToken) {
				t.Errorf("Verify = %v; want it to wrap ErrInvalidToken too", err)
			}
			if got := failures(vs.set, tc.reason); got != before+1 {
				t.Errorf("failures{reason=%q} = %d; want %d", tc.reason, got, before+1)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestJWKSKeyRotation(t *testing.T) {
	old, next, forged := newRSA(t, "2024"), newEC(t, "2025"), newRSA(t, "forged")
	jwks := newJWKSServer(t, old)
	v, _ := newVerifier(t, identity.Config{JWKSURL: jwks.URL})
	if _, err := v.Verify(t.Context(), old.sign(t, claims(nil))); err != nil {
		t.Fatalf("Verify(old key) = %v; want accepted", err)
	}

	// The provider publishes a new key after the verifier started: the first
	// token naming it triggers a fetch.
	jwks.set(old, next)
	if _, err := v.Verify(t.Context(), next.sign(t, claims(nil))); err != nil {
		t.Fatalf("Verify(key published after start) = %v; want accepted after refresh", err)
	}
	if got := jwks.fetches.Load(); got != 2 {
		t.Fatalf("JWKS fetches after rotation = %d; want 2", got)
	}

	// Further unknown kids within the rate limit are refused without a fetch.
	for range 5 {
		if _, err := v.Verify(t.Context(), forged.sign(t, claims(nil))); !errors.Is(err, identity.ErrInvalidToken) {
			t.Fatalf("Verify(forged kid) = %v; want ErrInvalidToken", err)
		}
	}
	if got := jwks.fetches.Load(); got != 2 {
		t.Fatalf("JWKS fetches after forged kids = %d; want 2 (rate-limited)", got)
	}
}

func TestJWKSBackgroundRefreshDropsRevokedKeys(t *testing.T) {
	old, next := newRSA(t, "old"), newRSA(t, "new")
	jwks := newJWKSServer(t, old, next)
	v, _ := newVerifier(t, identity.Config{JWKSURL: jwks.URL, JWKSRefresh: 20 * time.Millisecond})
	token := old.sign(t, claims(nil))
	if _, err := v.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify(old key) = %v; want accepted", err)
	}
	jwks.set(next)
	testenv.Deadline(t, 5*time.Second, func() error {
		if _, err := v.Verify(t.Context(), token); err == nil {
			return fmt.Errorf("Verify(revoked key) = accepted; want refused once the JWKS is refreshed")
		}
		return nil
	})
	if _, err := v.Verify(t.Context(), next.sign(t, claims(nil))); err != nil {
		t.Fatalf("Verify(new key) = %v; want accepted", err)
	}
}

func TestNewVerifierConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  identity.Config
		ok   bool
	}{
		{"secret", identity.Config{Secret: []byte(testSecret)}, true},
		{"nothing", identity.Config{}, false},
		{"JWKS URL without scheme", identity.Config{JWKSURL: "keys.example.com/jwks.json"}, false},
		{"JWKS URL of another scheme", identity.Config{JWKSURL: "file:///etc/jwks.json"}, false},
		{"negative leeway", identity.Config{Secret: []byte(testSecret), Leeway: -time.Second}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = testenv.Logger(t)
			_, err := identity.NewVerifier(t.Context(), tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("NewVerifier(%s) = %v; want ok=%v", tc.name, err, tc.ok)
			}
		})
	}
}

func TestNewVerifierStartsWhileJWKSIsDown(t *testing.T) {
	key := newRSA(t, "k1")
	var up atomic.Bool
	jwks := newJWKSServer(t, key)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		http.Redirect(w, r, jwks.URL, http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	v, _ := newVerifier(t, identity.Config{JWKSURL: srv.URL})
	up.Store(true)
	// The first token names a kid the verifier has never seen, which fetches.
	if _, err := v.Verify(t.Context(), key.sign(t, claims(nil))); err != nil {
		t.Fatalf("Verify after the JWKS came up = %v; want accepted", err)
	}
}

// TestEmailVerifiedClaim: email_verified reads as OpenID Connect's boolean
// and as the strings some providers send; anything else, or no claim,
// vouches for nothing, without refusing the token.
func TestEmailVerifiedClaim(t *testing.T) {
	v, _ := newVerifier(t, identity.Config{Secret: []byte(testSecret)})
	tests := []struct {
		name  string
		claim any // nil: no claim
		want  bool
	}{
		{"true", true, true},
		{"string true", "true", true},
		{"false", false, false},
		{"string false", "false", false},
		{"other string", "yes", false},
		{"number", 1, false},
		{"absent", nil, false},
	}
	for _, tc := range tests {
		raw := hs256(t, []byte(testSecret), claims(func(c jwt.MapClaims) {
			if tc.claim != nil {
				c["email_verified"] = tc.claim
			}
		}))
		p, err := v.Verify(t.Context(), raw)
		if err != nil {
			t.Fatalf("%s: Verify = %v; want accepted", tc.name, err)
		}
		if p.EmailVerified != tc.want {
			t.Errorf("%s: Verify(email_verified %v).EmailVerified = %v; want %v", tc.name, tc.claim, p.EmailVerified, tc.want)
		}
	}
}
