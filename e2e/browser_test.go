package e2e

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/veil-platform/veil/control-plane/portal/portaltest"
	"github.com/veil-platform/veil/internal/testenv"
)

// axeSource is axe-core (testdata/vendor.sh), the accessibility checker
// injected into every page.
//
//go:embed testdata/axe.min.js
var axeSource string

// screenshotDir receives a PNG of each page at the desktop size; the
// README shows them.
var screenshotDir = filepath.Join("..", "docs", "screenshots")

// Viewports: a desktop browser, and a phone (an iPhone 12 to 15's CSS
// pixels).
const (
	desktopWidth, desktopHeight = 1280, 800
	phoneWidth, phoneHeight     = 390, 844
)

// reportViolations, a script the page runs before anything else, writes
// each Content-Security-Policy violation to the console as an error, so
// that the test sees it whether or not the browser logs it.
const reportViolations = `document.addEventListener('securitypolicyviolation', e =>
  console.error('Content-Security-Policy violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') +
    ' at ' + e.sourceFile + ':' + e.lineNumber));`

// browser is a tab of headless Chromium and what its pages reported: the
// console's errors, uncaught exceptions, the browser log's errors
// (failed loads, policy violations).
type browser struct {
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

// chromium returns the browser to run: VEIL_TEST_CHROMIUM, else chromium
// on the PATH (Debian's package). Without one the test fails: the
// portal's browser tests are part of make test.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("VEIL_TEST_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the portal's browser tests need headless Chromium, and there is no chromium on the PATH (%v): "+
			"install Debian's package (apt-get install chromium; deploy/local/services.sh up does it) or set VEIL_TEST_CHROMIUM to a Chromium binary", err)
	}
	return p
}

// startBrowser starts headless Chromium with a fresh profile until the
// test ends, with flags for a machine without internet where tests run as
// root, and opens a tab at the desktop size.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromium(t)
	profile := t.TempDir()
	out := &testenv.SyncBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		// Root in a container has no user namespace for the sandbox.
		chromedp.NoSandbox,
		// Nothing may reach for the internet: no updates, no field trials.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(desktopWidth, desktopHeight),
		chromedp.CombinedOutput(out),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	// Registered after TempDir: the browser has exited before its profile
	// is removed.
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	b := &browser{ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	if err := chromedp.Listen(ctx, b.record); err != nil {
		t.Fatalf("listen to the browser's console: %v", err)
	}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: reportViolations}); err != nil {
		t.Fatalf("add the policy violation reporter: %v", err)
	}
	b.do(t, "set the desktop viewport", chromedp.EmulateViewport(desktopWidth, desktopHeight))
	return b
}

// record keeps the events that tell of a broken page. It runs in the
// tab's event loop: it must return fast.
func (b *browser) record(ev any) {
	var p string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		var args []string
		for _, a := range ev.Args {
			if a.Description != "" {
				args = append(args, a.Description)
			} else {
				args = append(args, string(a.Value))
			}
		}
		p = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		p = fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, d.Text)
		if d.Exception != nil && d.Exception.Description != "" {
			p += " " + d.Exception.Description
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level != log.EntryLevelError {
			return
		}
		p = fmt.Sprintf("browser log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
	default:
		return
	}
	b.mu.Lock()
	b.problems = append(b.problems, p)
	b.mu.Unlock()
}

// take returns the problems recorded since the last take.
func (b *browser) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// do runs actions, failing the test with what when one fails.
func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a script (awaiting a promise) and decodes its value.
func eval[T any](t *testing.T, b *browser, script string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](script, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %.80q: %v", script, err)
	}
	return v
}

// visit loads url and waits until ready (a CSS selector) is visible.
func (b *browser) visit(t *testing.T, url, ready string) {
	t.Helper()
	b.do(t, "visit "+url, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(ready)))
	if loc, err := chromedp.Run(b.ctx, chromedp.Location()); err != nil || loc != url {
		t.Fatalf("visit %s: the browser is at %s (%v)", url, loc, err)
	}
}

// checkClean fails the test when the page reported a problem: a console
// error, an uncaught exception, a failed load or a policy violation. A
// problem the browser reports late (a favicon's failed load) may show at
// the next page's check.
func (b *browser) checkClean(t *testing.T, name string) {
	t.Helper()
	for _, p := range b.take() {
		t.Errorf("%s: %s", name, p)
	}
}

// axeViolation is a rule axe-core found broken, with the elements that
// break it.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target  string `json:"target"`
		HTML    string `json:"html"`
		Summary string `json:"summary"`
	} `json:"nodes"`
}

// maxAxeNodes bounds the elements a violation's message lists.
const maxAxeNodes = 8

func (v axeViolation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): %s", v.ID, v.Impact, v.Help)
	for i, n := range v.Nodes {
		if i == maxAxeNodes {
			fmt.Fprintf(&b, "\n    and %d more elements", len(v.Nodes)-i)
			break
		}
		fmt.Fprintf(&b, "\n    %s: %s\n      %s", n.Target, n.HTML, strings.ReplaceAll(n.Summary, "\n", "\n      "))
	}
	return b.String()
}

// checkAxe runs axe-core's rules on the page: a serious or critical
// violation fails the test; moderate and minor ones are logged.
func (b *browser) checkAxe(t *testing.T, name string) {
	t.Helper()
	b.do(t, "inject axe-core", chromedp.Evaluate[chromedp.Void](axeSource))
	violations := eval[[]axeViolation](t, b, `axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({
  id: v.id, impact: v.impact || '', help: v.help,
  nodes: v.nodes.map(n => ({target: n.target.flat().join(' >>> '), html: n.html, summary: n.failureSummary || ''})),
})))`)
	for _, v := range violations {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("%s: axe-core: %s", name, v)
		} else {
			t.Logf("%s: axe-core (not failing): %s", name, v)
		}
	}
}

// checkNoOverflow fails the test when the page is wider than the
// viewport (it scrolls sideways), naming the elements that stick out. The
// viewport's width is the root element's clientWidth: a mobile browser
// widens innerWidth to the content's width when it overflows.
func (b *browser) checkNoOverflow(t *testing.T, name string) {
	t.Helper()
	type widths struct {
		Scroll, Inner int
		Wide          []string
	}
	w := eval[widths](t, b, `(() => {
  const inner = document.documentElement.clientWidth, scroll = document.documentElement.scrollWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > inner + 1)
    .slice(0, 5)
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\s+/).join('.') : '') +
      ' (right edge ' + Math.round(e.getBoundingClientRect().right) + 'px)');
  return {Scroll: scroll, Inner: inner, Wide: wide};
})()`)
	if w.Scroll > w.Inner {
		t.Errorf("%s at %dpx: document.documentElement.scrollWidth = %d; want at most the viewport's %d (no sideways scrolling); wide elements: %s",
			name, phoneWidth, w.Scroll, w.Inner, strings.Join(w.Wide, ", "))
	}
}

// checkSkipLink presses Tab once on a freshly loaded page: the focus must
// land on the skip link, visible.
func (b *browser) checkSkipLink(t *testing.T, name string) {
	t.Helper()
	b.do(t, "press Tab", chromedp.KeyEvent(kb.Tab))
	type focus struct {
		Skip    bool
		Visible bool
		HTML    string
	}
	f := eval[focus](t, b, `(() => {
  const e = document.activeElement, r = e.getBoundingClientRect();
  return {Skip: e.matches('a.skip[href="#main"]') && !!document.getElementById('main'),
    Visible: r.width > 1 && r.height > 1 && r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight,
    HTML: e.outerHTML.slice(0, 200)};
})()`)
	switch {
	case !f.Skip:
		t.Errorf("%s: the first Tab focuses %s; want the skip link to #main", name, f.HTML)
	case !f.Visible:
		t.Errorf("%s: the skip link is focused but not visible in the viewport: %s", name, f.HTML)
	}
}

// screenshot saves the viewport as docs/screenshots/<name>.png.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot of %s: %v", name, err)
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(screenshotDir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// signIn signs user in as a person does: the sign-in page's button, the
// OpenID provider's form typed into, back at the portal's start page. What
// the provider's own page reported is dropped: it is not the portal's.
func (b *browser) signIn(t *testing.T, base string, op *portaltest.OP, user portaltest.User) {
	t.Helper()
	b.do(t, "sign in through the OpenID provider",
		chromedp.Click(chromedp.CSS(`a[href^="/auth/login"]`)),
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), user.Username),
		chromedp.SendKeys(chromedp.CSS("#password"), portaltest.Password),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(".who-name")),
	)
	if loc, err := chromedp.Run(b.ctx, chromedp.Location()); err != nil || loc != base+"/" {
		t.Fatalf("after signing in the browser is at %s (%v); want %s/", loc, err, base)
	}
	name, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(".who-name")))
	if want := user.FirstName + " " + user.LastName; err != nil || name != want {
		t.Fatalf("signed in as %q (%v); want %q", name, err, want)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.problems[:0]
	for _, p := range b.problems {
		if !strings.Contains(p, op.Issuer()) {
			kept = append(kept, p)
		}
	}
	b.problems = kept
}

// TestPortalInBrowser signs a consumer in through the OpenID provider in
// headless Chromium and checks each page of the portal: no console error
// or policy violation, no serious accessibility violation (axe-core), no
// sideways scrolling on a phone, the skip link first in the tab order. It
// saves the screenshots the README shows.
func TestPortalInBrowser(t *testing.T) {
	chromium(t) // fail at once, before starting the rest, without a browser
	env := newPortalEnv(t)
	b := startBrowser(t)
	base := env.cp.URL

	type portalPage struct {
		name, path string
		ready      string // a selector visible once the page has rendered
		layout     bool   // the portal's layout, with the skip link
	}
	signedOut := portalPage{"signin", "/signin", `a[href^="/auth/login"]`, true}
	pages := []portalPage{
		{"home", "/", "main h1", true},
		{"catalog", "/catalog", "main .api-list", true},
		{"api", "/catalog/" + env.api.Id.String(), "main .plans", true},
		{"docs", "/docs", "redoc .api-content", false},
	}
	check := func(t *testing.T, p portalPage) {
		t.Helper()
		b.visit(t, base+p.path, p.ready)
		b.checkClean(t, p.name)
		b.checkAxe(t, p.name)
		b.checkClean(t, p.name+" (after axe-core)")
		b.screenshot(t, p.name)
		if p.layout {
			b.visit(t, base+p.path, p.ready)
			b.checkSkipLink(t, p.name)
		}
	}

	signedIn := false
	t.Run("desktop", func(t *testing.T) {
		check(t, signedOut)
		b.signIn(t, base, env.op, portalConsumer)
		signedIn = true
		for _, p := range pages {
			check(t, p)
		}
	})
	t.Run("phone", func(t *testing.T) {
		if !signedIn {
			t.Fatal("the desktop pass did not sign in")
		}
		b.do(t, "set the phone viewport", chromedp.EmulateViewport(phoneWidth, phoneHeight, chromedp.EmulateMobile, chromedp.EmulateTouch))
		for _, p := range pages {
			b.visit(t, base+p.path, p.ready)
			b.checkClean(t, p.name)
			b.checkNoOverflow(t, p.name)
		}
		b.checkClean(t, "after the last page")
	})
}
