package portal

import (
	"net/http"
)

// docsPolicy is the API reference's Content-Security-Policy: the vendored
// renderer injects its styles at run time and searches in a worker it
// makes from a blob, so this page alone allows inline styles and blob
// workers; scripts still come from this origin only.
const docsPolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; " +
	"connect-src 'self'; worker-src blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

const docsPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API reference · Veil</title>
<link rel="icon" href="/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/docs.css">
</head>
<body>
<header class="docs-top"><a href="/">Veil</a> · API reference · <a href="/openapi.json">openapi.json</a></header>
<main>
<redoc spec-url="/openapi.json" hide-download-button="false"></redoc>
</main>
<script src="/assets/vendor/redoc.standalone.js"></script>
</body>
</html>
`

// docs is the REST API's reference, rendered in the browser from
// /openapi.json.
func (p *portal) docs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", docsPolicy)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(docsPage))
}
