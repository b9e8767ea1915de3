package middleware

import (
	"net/http"
	"slices"

	"github.com/go-chi/cors"
)

// CORSConfig configures CORS for the portal and other browser clients.
type CORSConfig struct {
	// AllowedOrigins are the origins browsers may call the API from, such
	// as "https://portal.example.com"; one "*" wildcard is allowed per
	// origin ("https://*.example.com"). Empty turns CORS off: no CORS
	// headers at all, so browsers refuse cross-origin calls.
	AllowedOrigins []string
	// AllowCredentials lets browsers send cookies and HTTP authentication.
	// It is ignored when AllowedOrigins holds "*": allowing every origin
	// with credentials would let any site act as a signed-in user.
	AllowCredentials bool
	// MaxAge is how many seconds browsers may cache a preflight answer;
	// zero leaves it to the browser (a few seconds).
	MaxAge int
}

// CORS answers preflight requests and adds CORS headers to actual requests
// from allowed origins. Mount it before authentication and rate limits:
// preflights carry no credentials, and a browser can only read a 401 or
// 429 that carries CORS headers. The exposed headers let browser clients
// read the request id, rate-limit state and idempotent replays.
func CORS(cfg CORSConfig) func(http.Handler) http.Handler {
	if len(cfg.AllowedOrigins) == 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	credentials := cfg.AllowCredentials && !slices.Contains(cfg.AllowedOrigins, "*")
	return cors.Handler(cors.Options{
		AllowedOrigins: cfg.AllowedOrigins,
		AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions},
		AllowedHeaders: []string{"Authorization", "Content-Type", HeaderIdempotencyKey, HeaderRequestID},
		ExposedHeaders: []string{
			HeaderRequestID, "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", HeaderIdempotentReplayed,
		},
		AllowCredentials: credentials,
		MaxAge:           cfg.MaxAge,
	})
}
