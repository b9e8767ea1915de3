package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

func TestTokenCommand(t *testing.T) {
	const secret = "token-command-test-secret-0123456789"
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		secret string // the verifier's; "" when the command must fail
		want   identity.Principal
		errHas string
	}{
		{
			name:   "secret from flag",
			args:   []string{"--jwt-secret", secret, "--org", "acme", "--user", "alice", "--role", "provider", "--name", "Alice", "--email", "alice@example.com"},
			secret: secret,
			want:   identity.Principal{Subject: "alice", Org: "acme", Role: identity.RoleProvider, Name: "Alice", Email: "alice@example.com", EmailVerified: true},
		},
		{
			name:   "unverified email",
			args:   []string{"--jwt-secret", secret, "--org", "acme", "--user", "alice", "--role", "consumer", "--email", "alice@example.com", "--email-verified=false"},
			secret: secret,
			want:   identity.Principal{Subject: "alice", Org: "acme", Role: identity.RoleConsumer, Email: "alice@example.com"},
		},
		{
			name:   "secret from environment",
			env:    map[string]string{"VEIL_JWT_SECRET": secret},
			args:   []string{"--org", "platform", "--user", "op", "--role", "admin", "--ttl", "5m"},
			secret: secret,
			want:   identity.Principal{Subject: "op", Org: "platform", Role: identity.RoleAdmin},
		},
		{
			name:   "dev secret",
			args:   []string{"--dev", "--org", "acme", "--user", "bob", "--role", "consumer"},
			secret: identity.DevJWTSecret,
			want:   identity.Principal{Subject: "bob", Org: "acme", Role: identity.RoleConsumer},
		},
		{
			name:   "no secret",
			args:   []string{"--org", "acme", "--user", "bob", "--role", "consumer"},
			errHas: "set VEIL_JWT_SECRET",
		},
		{
			name:   "missing flags",
			args:   []string{"--dev", "--role", "consumer"},
			errHas: "missing required flags: --org, --user",
		},
		{
			name:   "bad role",
			args:   []string{"--dev", "--org", "acme", "--user", "bob", "--role", "owner"},
			errHas: "want admin, provider or consumer",
		},
		{
			name:   "bad org",
			args:   []string{"--dev", "--org", "Acme Inc", "--user", "bob", "--role", "consumer"},
			errHas: "org",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"VEIL_JWT_SECRET", "VEIL_JWT_ISSUER", "VEIL_JWT_AUDIENCE"} {
				t.Setenv(k, tc.env[k])
			}
			var out bytes.Buffer
			err := runToken(t.Context(), tc.args, &out, io.Discard)
			if tc.secret == "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("veil token %v = %v; want an error containing %q", tc.args, err, tc.errHas)
				}
				if out.Len() != 0 {
					t.Fatalf("veil token %v printed %q; want nothing", tc.args, out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("veil token %v = %v; want a token", tc.args, err)
			}
			raw, ok := strings.CutSuffix(out.String(), "\n")
			if !ok || strings.ContainsAny(raw, " \n") || strings.Count(raw, ".") != 2 {
				t.Fatalf("veil token printed %q; want one JWT and a newline", out.String())
			}
			v, err := identity.NewVerifier(t.Context(), identity.Config{Secret: []byte(tc.secret), Logger: testenv.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(t.Context(), raw)
			if err != nil {
				t.Fatalf("Verify(veil token) = %v; want accepted", err)
			}
			got.TokenID = ""
			if got != tc.want {
				t.Fatalf("Verify(veil token) = %+v; want %+v", got, tc.want)
			}
		})
	}
}

func TestTokenTTL(t *testing.T) {
	t.Setenv("VEIL_JWT_SECRET", "")
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 24 * time.Hour},
		{[]string{"--ttl", "90m"}, 90 * time.Minute},
	} {
		var out bytes.Buffer
		args := append([]string{"--dev", "--org", "acme", "--user", "bob", "--role", "consumer"}, tc.args...)
		if err := runToken(t.Context(), args, &out, io.Discard); err != nil {
			t.Fatalf("veil token %v = %v", tc.args, err)
		}
		var c jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(strings.TrimSpace(out.String()), &c); err != nil {
			t.Fatal(err)
		}
		if got := c.ExpiresAt.Sub(c.IssuedAt.Time); got != tc.want {
			t.Errorf("veil token %v: exp - iat = %s; want %s", tc.args, got, tc.want)
		}
	}
}
