package identity

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/VictoriaMetrics/metrics"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Defaults of Config.
const (
	DefaultIssuer   = "veil"
	DefaultAudience = "veil-control-plane"
	DefaultLeeway   = 30 * time.Second

	defaultJWKSRefresh    = time.Hour
	defaultJWKSMinRefresh = time.Minute
	jwksTimeout           = 10 * time.Second
)

// maxTokenBytes refuses absurd tokens before any decoding work; real ones
// are well under 2 KiB.
const maxTokenBytes = 8 << 10

// minRSABits refuses RSA keys too short to mean anything.
const minRSABits = 2048

// Config configures a Verifier.
type Config struct {
	// Secret is the HS256 shared secret (VEIL_JWT_SECRET). HS256 tokens are
	// accepted only when it is set. May be empty when JWKSURL is set.
	Secret []byte
	// JWKSURL is the identity provider's JWK Set (VEIL_JWT_JWKS_URL). RS256
	// and ES256 tokens are accepted only when it is set, and only with its
	// keys.
	JWKSURL string
	// Issuer every token must name in iss. Default "veil".
	Issuer string
	// Audience every token must name in aud. Default "veil-control-plane".
	Audience string
	// Leeway tolerated on exp, nbf and iat for clock skew. Zero means 30s.
	Leeway time.Duration
	// JWKSRefresh is how often the JWK Set is fetched in the background.
	// Zero means one hour.
	JWKSRefresh time.Duration
	// JWKSMinRefresh is the shortest time between two fetches caused by a
	// token naming an unknown kid, so that forged kids cannot make the
	// verifier hammer the provider. Zero means one minute; the first such
	// fetch happens at once.
	JWKSMinRefresh time.Duration
	// HTTPClient fetches the JWK Set. Nil means a client with a 10s timeout.
	HTTPClient *http.Client
	// Logger receives JWKS fetch failures and, at debug, rejected tokens.
	Logger *slog.Logger
	// Metrics receives veil_controlplane_auth_failures_total{reason}.
	Metrics *metrics.Set
}

// Failure reasons, the bounded label values of the failures counter.
const (
	reasonMissing     = "missing"
	reasonMalformed   = "malformed"
	reasonAlgorithm   = "algorithm"
	reasonKey         = "key"
	reasonSignature   = "signature"
	reasonExpired     = "expired"
	reasonNotYetValid = "not_yet_valid"
	reasonIssuer      = "issuer"
	reasonAudience    = "audience"
	reasonClaims      = "claims"
)

var reasons = []string{
	reasonMissing, reasonMalformed, reasonAlgorithm, reasonKey, reasonSignature,
	reasonExpired, reasonNotYetValid, reasonIssuer, reasonAudience, reasonClaims,
}

// Errors of the key lookup, told apart when counting failures.
var (
	errAlgorithm = errors.New("signing algorithm not accepted")
	errNoKey     = errors.New("no matching verification key")
)

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	secret   []byte
	jwks     keyfunc.Keyfunc // nil without JWKSURL
	parser   *jwt.Parser
	log      *slog.Logger
	failures map[string]*metrics.Counter
}

// NewVerifier returns a verifier for cfg. With a JWKSURL it fetches the key
// set once (a failure is logged, not returned, so that the control plane
// starts while the provider is down) and then refreshes it in the
// background, and on tokens naming an unknown kid, until ctx ends.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("new verifier: set an HS256 secret (VEIL_JWT_SECRET) or a JWKS URL (VEIL_JWT_JWKS_URL)")
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("new verifier: negative leeway %s", cfg.Leeway)
	}
	cfg.Issuer = cmp.Or(cfg.Issuer, DefaultIssuer)
	cfg.Audience = cmp.Or(cfg.Audience, DefaultAudience)
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	v := &Verifier{
		log:      cfg.Logger,
		failures: make(map[string]*metrics.Counter, len(reasons)),
	}
	for _, r := range reasons {
		v.failures[r] = cfg.Metrics.GetOrCreateCounter(`veil_controlplane_auth_failures_total{reason="` + r + `"}`)
	}

	methods := make([]string, 0, 3)
	if len(cfg.Secret) > 0 {
		v.secret = append([]byte(nil), cfg.Secret...)
		methods = append(methods, jwt.SigningMethodHS256.Alg())
		if subtle.ConstantTimeCompare(cfg.Secret, []byte(DevJWTSecret)) == 1 {
			cfg.Logger.WarnContext(ctx, "tokens are verified with the public development secret; set VEIL_JWT_SECRET")
		} else if len(cfg.Secret) < 32 {
			cfg.Logger.WarnContext(ctx, "the HS256 secret is shorter than 32 bytes", "secret_bytes", len(cfg.Secret))
		}
	}
	if cfg.JWKSURL != "" {
		jwks, err := newJWKS(ctx, cfg)
		if err != nil {
			return nil, err
		}
		v.jwks = jwks
		methods = append(methods, jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg())
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(methods),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
	)
	return v, nil
}

func newJWKS(ctx context.Context, cfg Config) (keyfunc.Keyfunc, error) {
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("new verifier: JWKS URL %q: want an http or https URL", cfg.JWKSURL)
	}
	refresh, minRefresh := cfg.JWKSRefresh, cfg.JWKSMinRefresh
	if refresh <= 0 {
		refresh = defaultJWKSRefresh
	}
	if minRefresh <= 0 {
		minRefresh = defaultJWKSMinRefresh
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: jwksTimeout}
	}
	log := cfg.Logger
	jwks, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:      client,
		HTTPTimeout: jwksTimeout,
		// Bounds both the wait for the limiter and the fetch it allows: a
		// request naming an unknown kid while the limiter is empty fails at
		// once instead of queueing for minRefresh.
		RateLimitWaitMax:  jwksTimeout,
		RefreshInterval:   refresh,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(minRefresh), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				log.ErrorContext(ctx, "fetch JWKS", "url", u, "error", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("new verifier: %w", err)
	}
	return jwks, nil
}

// claims is the token payload.
type claims struct {
	Org   string `json:"org"`
	Role  string `json:"role"`
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	// EmailVerified is OpenID Connect's email_verified: whether the
	// identity provider checked that the user controls Email.
	EmailVerified claimBool `json:"email_verified,omitempty"`
	jwt.RegisteredClaims
}

// claimBool is a boolean claim that also reads the strings "true" and
// "false", as some identity providers send email_verified. Anything else is
// false: a claim that cannot be read vouches for nothing, and refusing the
// whole token for it would lock out users of such a provider.
type claimBool bool

func (b *claimBool) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case `true`, `"true"`:
		*b = true
	default:
		*b = false
	}
	return nil
}

// Verify checks raw's signature, algorithm, issuer, audience, expiry (which
// is required), not-before and issued-at, and its org, role and sub claims.
// Errors wrap ErrMissingToken or ErrInvalidToken, the latter possibly along
// with ErrExpired, ErrNotYetValid, ErrWrongIssuer, ErrWrongAudience or
// ErrInvalidClaims.
func (v *Verifier) Verify(ctx context.Context, raw string) (Principal, error) {
	if raw == "" {
		return Principal{}, v.fail(reasonMissing, fmt.Errorf("verify token: %w", ErrMissingToken))
	}
	if len(raw) > maxTokenBytes {
		return Principal{}, v.fail(reasonMalformed, fmt.Errorf("verify token: %w: longer than %d bytes", ErrInvalidToken, maxTokenBytes))
	}
	var c claims
	tok, err := v.parser.ParseWithClaims(raw, &c, v.keyFunc(ctx))
	if err != nil {
		reason, kind := v.classify(tok, err)
		switch kind {
		case nil:
		case ErrInvalidClaims:
			// Which claim is missing or of the wrong type is the parser's to say.
			return Principal{}, v.fail(reason, fmt.Errorf("verify token: %w: %w: %v", ErrInvalidToken, kind, err))
		default:
			return Principal{}, v.fail(reason, fmt.Errorf("verify token: %w: %w", ErrInvalidToken, kind))
		}
		return Principal{}, v.fail(reason, fmt.Errorf("verify token: %w (%s): %v", ErrInvalidToken, reason, err))
	}
	p, err := c.principal()
	if err != nil {
		return Principal{}, v.fail(reasonClaims, fmt.Errorf("verify token: %w: %w", ErrInvalidToken, err))
	}
	return p, nil
}

// principal maps verified claims to the Principal they name. Errors wrap
// ErrInvalidClaims.
func (c *claims) principal() (Principal, error) {
	p := Principal{
		Subject: c.Subject, Org: c.Org, Role: Role(c.Role),
		Name: c.Name, Email: c.Email, EmailVerified: bool(c.EmailVerified), TokenID: c.ID,
	}
	if err := p.Validate(); err != nil {
		return Principal{}, err
	}
	return p, nil
}

// classify names why the parser refused a token and, for the failures a
// caller may act on, the sentinel to wrap.
func (v *Verifier) classify(tok *jwt.Token, err error) (reason string, kind error) {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return reasonMalformed, nil
	case tok != nil && !v.accepts(tok):
		return reasonAlgorithm, nil
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		// Signature checks run first, so the signature was good.
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			return reasonExpired, ErrExpired
		case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			return reasonNotYetValid, ErrNotYetValid
		case errors.Is(err, jwt.ErrTokenInvalidIssuer):
			return reasonIssuer, ErrWrongIssuer
		case errors.Is(err, jwt.ErrTokenInvalidAudience):
			return reasonAudience, ErrWrongAudience
		}
		return reasonClaims, ErrInvalidClaims
	case errors.Is(err, errAlgorithm):
		return reasonAlgorithm, nil
	case errors.Is(err, errNoKey), errors.Is(err, jwkset.ErrKeyNotFound):
		return reasonKey, nil
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return reasonSignature, nil
	}
	return reasonKey, nil
}

// accepts reports whether the token's header names an algorithm this
// verifier has a key source for.
func (v *Verifier) accepts(tok *jwt.Token) bool {
	switch alg, _ := tok.Header["alg"].(string); alg {
	case "HS256":
		return len(v.secret) > 0
	case "RS256", "ES256":
		return v.jwks != nil
	}
	return false
}

// keyFunc picks the key from the source the token's algorithm belongs to.
// The algorithm decides the source and the source's keys must fit the
// algorithm, so an RSA public key can never serve as an HMAC secret, nor
// the secret for an asymmetric token.
func (v *Verifier) keyFunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		switch t.Method {
		case jwt.SigningMethodHS256:
			if len(v.secret) == 0 {
				return nil, errAlgorithm
			}
			return v.secret, nil
		case jwt.SigningMethodRS256, jwt.SigningMethodES256:
			if v.jwks == nil {
				return nil, errAlgorithm
			}
			key, err := v.jwks.KeyfuncCtx(ctx)(t)
			if err != nil {
				return nil, err
			}
			return fitting(t.Method, key)
		}
		return nil, errAlgorithm
	}
}

// fitting returns key, or the keys of a set, that suit method.
func fitting(method jwt.SigningMethod, key any) (any, error) {
	if set, ok := key.(jwt.VerificationKeySet); ok {
		var out jwt.VerificationKeySet
		for _, k := range set.Keys {
			if fits(method, k) {
				out.Keys = append(out.Keys, k)
			}
		}
		if len(out.Keys) == 0 {
			return nil, errNoKey
		}
		return out, nil
	}
	if !fits(method, key) {
		return nil, errNoKey
	}
	return key, nil
}

func fits(method jwt.SigningMethod, key any) bool {
	switch method {
	case jwt.SigningMethodRS256:
		k, ok := key.(*rsa.PublicKey)
		return ok && k.N.BitLen() >= minRSABits
	case jwt.SigningMethodES256:
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve == elliptic.P256()
	}
	return false
}

// fail counts a failure by reason and returns err.
func (v *Verifier) fail(reason string, err error) error {
	v.failures[reason].Inc()
	return err
}
