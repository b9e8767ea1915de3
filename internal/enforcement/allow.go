package enforcement

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Allows is the decision the gateway makes from a key record for one
// request: nil when the key may call method on path at now, otherwise one
// of ErrKeyInactive, ErrKeyExpired, ErrMethodNotAllowed or
// ErrRouteNotAllowed (checked in that order). It does not look at the
// subscription, rate limits or quotas.
//
// The key must be active, or revoked with now before GraceUntil (a key
// rotated out keeps working through its grace period). A grace period also
// ends an active key, and so does ExpiresAt; both are exclusive: at that
// instant the key no longer works.
//
// Methods compare exactly (HTTP methods are case-sensitive). path is the
// request's decoded URL path (r.URL.Path); it matches a route pattern
// segment by segment, where a pattern segment is
//
//   - literal text, matching the same text (case-sensitive);
//   - {name}, matching any one non-empty segment;
//   - *, matching any one non-empty segment, or, as the last segment, the
//     rest of the path, even empty.
//
// So /users/{id} matches /users/42 but not /users/42/orders or /users/;
// /forecast/* matches /forecast/ and /forecast/a/b but not /forecast (as
// Caddy's path matcher). A path with "." or ".." segments matches no
// pattern, so a path the upstream would resolve elsewhere is refused.
func (r KeyRecord) Allows(method, path string, now time.Time) error {
	switch r.Status {
	case KeyActive:
	case KeyRevoked:
		if r.GraceUntil.IsZero() || !now.Before(r.GraceUntil) {
			return ErrKeyInactive
		}
	case KeyExpired:
		return ErrKeyExpired
	default:
		return ErrKeyInactive
	}
	if !r.GraceUntil.IsZero() && !now.Before(r.GraceUntil) {
		return ErrKeyExpired
	}
	if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
		return ErrKeyExpired
	}
	if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) {
		return ErrMethodNotAllowed
	}
	if len(r.Routes) == 0 {
		return nil
	}
	if !strings.HasPrefix(path, "/") || hasDotSegment(path) {
		return ErrRouteNotAllowed
	}
	for _, p := range r.Routes {
		if matchRoute(p, path) {
			return nil
		}
	}
	return ErrRouteNotAllowed
}

// ValidRoute reports whether p is a route pattern in the syntax of
// [KeyRecord.Allows]: it starts with "/", a segment is literal text
// without "{", "}" or "*", a {name} or a *, no segment is "." or "..", and
// only the last one may be empty (a trailing slash).
func ValidRoute(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("route %q: want a leading /", p)
	}
	rest := p[1:]
	for {
		seg, tail, more := strings.Cut(rest, "/")
		switch {
		case seg == "" && more:
			return fmt.Errorf("route %q: empty segment", p)
		case seg == "." || seg == "..":
			return fmt.Errorf("route %q: dot segment", p)
		case seg == "*":
		case strings.HasPrefix(seg, "{"):
			name, ok := strings.CutSuffix(seg[1:], "}")
			if !ok || name == "" || strings.ContainsAny(name, "{}*") {
				return fmt.Errorf("route %q: bad parameter %q, want {name}", p, seg)
			}
		case strings.ContainsAny(seg, "{}*"):
			return fmt.Errorf("route %q: segment %q mixes text with { } or *", p, seg)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// MatchRoute reports whether path matches the route pattern p (the syntax
// of [KeyRecord.Allows]); a pattern that is not valid, or a path with dot
// segments, matches nothing. The gateway uses it to name the route
// template of a request.
func MatchRoute(p, path string) bool {
	if !strings.HasPrefix(path, "/") || hasDotSegment(path) || ValidRoute(p) != nil {
		return false
	}
	return matchRoute(p, path)
}

// MatchRoutes reports whether path matches any of patterns, which must
// each be valid (ValidRoute; a meter's routes are checked when its
// definition is written and when a record is decoded): unlike MatchRoute
// it does not check them again, and checks the path once, not once per
// pattern. The processors match every event against every route of its
// subscription's meters, where re-checking each pattern cost more than
// matching it. A pattern without a leading / matches nothing.
func MatchRoutes(patterns []string, path string) bool {
	if !strings.HasPrefix(path, "/") || hasDotSegment(path) {
		return false
	}
	for _, p := range patterns {
		if strings.HasPrefix(p, "/") && matchRoute(p, path) {
			return true
		}
	}
	return false
}

// matchRoute matches a valid pattern against a path; both start with "/".
// It walks both without allocating: the gateway runs it on every request.
func matchRoute(pattern, path string) bool {
	p, s := pattern[1:], path[1:]
	for {
		pseg, ptail, pmore := strings.Cut(p, "/")
		if pseg == "*" && !pmore {
			return true
		}
		sseg, stail, smore := strings.Cut(s, "/")
		if pseg == "*" || pseg != "" && pseg[0] == '{' {
			if sseg == "" {
				return false
			}
		} else if pseg != sseg {
			return false
		}
		if pmore != smore {
			return false
		}
		if !pmore {
			return true
		}
		p, s = ptail, stail
	}
}

func hasDotSegment(path string) bool {
	for rest := path; rest != ""; {
		var seg string
		seg, rest, _ = strings.Cut(rest, "/")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
