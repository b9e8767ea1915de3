package portal

import (
	"errors"
	"net/http"
)

// Development sign-in (`veil dev` only): GET /auth/dev?persona=KEY, the
// link the terminal prints, changes nothing; it renders a form whose button
// POSTs to /auth/dev with a single-use token bound to the browser's
// pre-session cookie, so that another site can neither sign a browser in
// as a persona of its choosing nor skip the click.

func (a *Auth) persona(key string) (DevPersona, bool) {
	for _, p := range a.cfg.Dev {
		if p.Key == key {
			return p, true
		}
	}
	return DevPersona{}, false
}

// devForm renders the development sign-in form through cfg.RenderDev.
func (a *Auth) devForm(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Dev == nil {
		a.cfg.Fail(w, r, http.StatusNotFound, "Page not found", "Development sign-in is off.")
		return
	}
	selected := r.URL.Query().Get("persona")
	if _, ok := a.persona(selected); selected != "" && !ok {
		a.cfg.Fail(w, r, http.StatusNotFound, "Unknown persona", "There is no development persona "+truncate(selected, 64)+".")
		return
	}
	token, err := a.beginLogin(r.Context(), w, r, methodDev, "", "")
	if err != nil {
		a.log.ErrorContext(r.Context(), "development sign-in form", "error", err)
		a.cfg.Fail(w, r, http.StatusServiceUnavailable, storeUnavailable, storeUnavailableMsg)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	a.cfg.RenderDev(w, r, a.cfg.Dev, selected, token)
}

// devSignIn signs the browser in as the persona its form names.
func (a *Auth) devSignIn(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Dev == nil {
		a.cfg.Fail(w, r, http.StatusNotFound, "Page not found", "Development sign-in is off.")
		return
	}
	ctx := r.Context()
	if !a.sameOrigin(r) {
		a.signin(methodDev, resultRefused)
		a.refuseCSRF(w, r)
		return
	}
	login, err := a.takeLogin(ctx, r, methodDev, r.PostFormValue(csrfField))
	switch {
	case errors.Is(err, errLoginStale):
		a.signin(methodDev, resultRefused)
		a.refuseCSRF(w, r)
		return
	case err != nil:
		a.log.ErrorContext(ctx, "development sign-in", "error", err)
		a.signin(methodDev, resultError)
		a.cfg.Fail(w, r, http.StatusServiceUnavailable, storeUnavailable, storeUnavailableMsg)
		return
	}
	p, ok := a.persona(r.PostFormValue("persona"))
	if !ok {
		a.signin(methodDev, resultRefused)
		a.cfg.Fail(w, r, http.StatusBadRequest, "Unknown persona", "Choose one of the development personas.")
		return
	}
	if err := a.startSession(ctx, w, r, p.Principal, methodDev); err != nil {
		a.log.ErrorContext(ctx, "development sign-in", "error", err)
		a.signin(methodDev, resultError)
		a.cfg.Fail(w, r, http.StatusServiceUnavailable, storeUnavailable, storeUnavailableMsg)
		return
	}
	a.signin(methodDev, resultOK)
	a.log.InfoContext(ctx, "signed in", "method", methodDev, "persona", p.Key, "subject", p.Principal.Subject, "org", p.Principal.Org)
	http.Redirect(w, r, localPath(login.ReturnTo), http.StatusSeeOther)
}
