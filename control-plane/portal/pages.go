package portal

import (
	"net/http"
)

type signinPage struct {
	OIDC     bool
	Personas []DevPersona
	ReturnTo string
}

// signin offers the ways to sign in: the identity provider, and in
// development the personas.
func (p *portal) signin(w http.ResponseWriter, r *http.Request) {
	if _, ok := SessionFrom(r.Context()); ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	p.render(w, r, http.StatusOK, "signin", view{Title: "Sign in", Data: signinPage{
		OIDC: p.auth.OIDCEnabled(), Personas: p.auth.DevPersonas(), ReturnTo: localPath(r.URL.Query().Get("return_to")),
	}})
}

// home is the start page: what the signed-in user can do, or what Veil is.
func (p *portal) home(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "home", view{})
}

type devPage struct {
	Personas []DevPersona
	CSRF     string
}

// renderDev is the development sign-in form (AuthConfig.RenderDev): one
// button per persona, or the selected persona's alone.
func (p *portal) renderDev(w http.ResponseWriter, r *http.Request, personas []DevPersona, selected, csrf string) {
	if selected != "" {
		for _, d := range personas {
			if d.Key == selected {
				personas = []DevPersona{d}
				break
			}
		}
	}
	p.render(w, r, http.StatusOK, "dev", view{Title: "Development sign-in", Data: devPage{Personas: personas, CSRF: csrf}})
}
