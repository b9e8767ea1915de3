// Package portal is Veil's web application: the pages consumers, providers
// and admins work in, served by the control plane at / on the same origin
// as the REST API.
//
// The pages are rendered on the server from html/template and read and
// write through the REST API itself: each page calls the API's handler in
// process on behalf of the signed-in user (identity.WithTrustedPrincipal),
// so a page can show and do exactly what that user's token could, with
// the API's own authorization, validation and problem details. Assets are
// embedded in the binary; nothing is fetched from elsewhere at run time,
// and the Content-Security-Policy allows scripts and styles from this
// origin only.
package portal

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/middleware"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Config wires the portal.
type Config struct {
	// API is the REST API's handler (httpapi.New): the portal serves
	// /v1/…, /openapi.json and the webhooks through it unchanged, and
	// calls it in process for its pages.
	API http.Handler
	// Auth configures sign-in (NewAuth); New fills in its Fail and
	// RenderDev with the portal's pages.
	Auth AuthConfig
	// Logger logs what fails while rendering, and each page request.
	Logger *slog.Logger
	// Metrics receives the pages' access metrics. Nil means a private set.
	Metrics *metrics.Set
	// Limit, if not nil, runs before every page and asset (a rate limit
	// per client address, as the API's).
	Limit func(http.Handler) http.Handler
}

// maxForm bounds a page request's body: the portal's forms are small.
const maxForm = 64 << 10

// apiPath says whether a request is the REST API's rather than a page.
func apiPath(p string) bool {
	return strings.HasPrefix(p, "/v1/") || p == "/v1" || p == "/openapi.json"
}

// New returns the handler of the whole origin: the REST API's paths go to
// cfg.API, the rest are the portal's.
func New(ctx context.Context, cfg Config) (http.Handler, error) {
	if cfg.API == nil {
		return nil, fmt.Errorf("portal: the API handler is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	p := &portal{cfg: cfg, pages: pages, api: client{h: cfg.API}}
	ac := cfg.Auth
	ac.Fail, ac.RenderDev = p.fail, p.renderDev
	if ac.Logger == nil {
		ac.Logger = cfg.Logger
	}
	if p.auth, err = NewAuth(ctx, ac); err != nil {
		return nil, err
	}
	assets, err := fs.Sub(assetFS, "assets")
	if err != nil {
		return nil, err
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Recoverer(cfg.Logger), middleware.AccessLog(cfg.Logger, cfg.Metrics), securityHeaders, limitBody)
	if cfg.Limit != nil {
		r.Use(cfg.Limit)
	}
	r.Handle("/assets/*", http.StripPrefix("/assets/", cacheAssets(noListing(http.FileServerFS(assets)))))
	r.Get("/docs", p.docs)
	r.Group(func(r chi.Router) {
		r.Use(p.auth.Middleware)
		p.auth.Routes(r)
		r.Get("/signin", p.signin)
		r.Get("/", p.home)
		r.Group(func(r chi.Router) {
			r.Use(p.auth.Require)
			p.catalogRoutes(r)
			// Each role's pages; another role gets the 403 page (the API
			// would refuse it the data anyway).
			r.Group(func(r chi.Router) {
				r.Use(p.requireRole(identity.RoleConsumer))
				p.subscriptionRoutes(r)
				p.consumerRoutes(r)
			})
			r.Group(func(r chi.Router) {
				r.Use(p.requireRole(identity.RoleConsumer, identity.RoleProvider))
				p.webhookRoutes(r)
			})
			r.Route("/provider", func(r chi.Router) {
				r.Use(p.requireRole(identity.RoleProvider))
				p.providerRoutes(r)
			})
			r.Route("/admin", func(r chi.Router) {
				r.Use(p.requireRole(identity.RoleAdmin))
				p.adminRoutes(r)
			})
		})
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no page at "+r.URL.Path+".")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		p.fail(w, r, http.StatusMethodNotAllowed, "Method not allowed", r.Method+" is not allowed here.")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if apiPath(req.URL.Path) {
			cfg.API.ServeHTTP(w, req)
			return
		}
		r.ServeHTTP(w, req)
	}), nil
}

type portal struct {
	cfg   Config
	auth  *Auth
	pages map[string]*template.Template
	api   client
}

// requireRole lets the signed-in users of roles through; the others see
// the 403 page.
func (p *portal) requireRole(roles ...identity.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, ok := SessionFrom(r.Context())
			if !ok || !slices.Contains(roles, s.Principal.Role) {
				p.fail(w, r, http.StatusForbidden, "Not allowed", "This page is not for your role ("+string(s.Principal.Role)+").")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// contentSecurityPolicy lets pages load scripts, styles, images and data
// from this origin only, with no inline script or style, and never be
// framed.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// securityHeaders sets the headers every portal response carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// limitBody refuses a request body beyond maxForm (the form's parse
// fails, which the CSRF check answers with 403) before anything reads it.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxForm {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		next.ServeHTTP(w, r)
	})
}

// noListing answers 404 for a directory of the assets instead of listing
// it.
func noListing(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cacheAssets lets browsers keep assets for an hour: they change only
// with the binary.
func cacheAssets(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		next.ServeHTTP(w, r)
	})
}

// view is what every page's template is given.
type view struct {
	Title   string
	Session *Session
	// Nav names the section the page belongs to, for the navigation.
	Nav  string
	Data any
	// Problem is an error the API answered, shown above the content and
	// next to its fields.
	Problem *Problem
}

// Role is the signed-in user's role, or "".
func (v view) Role() identity.Role {
	if v.Session == nil {
		return ""
	}
	return v.Session.Principal.Role
}

// FieldError is the API's detail for one field, or "".
func (v view) FieldError(field string) string {
	if v.Problem == nil {
		return ""
	}
	for _, f := range v.Problem.Errors {
		// An element of a list field counts as the field:
		// promotion_codes[0] is the form's promotion_code.
		if f.Field == field || strings.HasPrefix(f.Field, field+"[") || strings.HasPrefix(f.Field, field+".") {
			return f.Detail
		}
	}
	return ""
}

// render writes page with status.
func (p *portal) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	if s, ok := SessionFrom(r.Context()); ok {
		v.Session = &s
	}
	t, ok := p.pages[page]
	if !ok {
		p.cfg.Logger.ErrorContext(r.Context(), "portal: no such page", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		p.cfg.Logger.ErrorContext(r.Context(), "portal: render", "page", page, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// fail renders the error page.
func (p *portal) fail(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
	p.render(w, r, status, "error", view{Title: title, Data: errorPage{Status: status, Title: title, Detail: detail}})
}

type errorPage struct {
	Status        int
	Title, Detail string
}

// failAPI renders the error page for what the API answered.
func (p *portal) failAPI(w http.ResponseWriter, r *http.Request, err error) {
	if pr, ok := asProblem(err); ok {
		title := pr.Title
		if pr.Status == http.StatusForbidden {
			title = "Not allowed"
		}
		p.fail(w, r, pr.Status, title, pr.Detail)
		return
	}
	p.cfg.Logger.ErrorContext(r.Context(), "portal: API call", "path", r.URL.Path, "error", err)
	p.fail(w, r, http.StatusBadGateway, "Something went wrong", "The page could not be loaded. Try again in a moment.")
}

// parsePages parses each page template with the layout.
func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"date": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02")
		},
		"datetime": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04 UTC")
		},
		"join":    strings.Join,
		"formkey": formKey,
		"deref": func(n *int64) int64 {
			if n == nil {
				return 0
			}
			return *n
		},
	}
	layout, err := template.New("layout").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("portal: parse layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, name := range names {
		page := strings.TrimSuffix(strings.TrimPrefix(name, "templates/"), ".html")
		if page == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, name)
		if err != nil {
			return nil, fmt.Errorf("portal: parse %s: %w", name, err)
		}
		out[page] = t
	}
	return out, nil
}
