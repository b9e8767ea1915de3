// Package planfiles loads plans declared in YAML files (VEIL_PRICING_DIR)
// into Postgres, and reloads them when the files change.
//
// One file holds one plan of one API: its terms, the meters it charges and
// its charges with their tiers (the format is documented in the README,
// "Plans as files"). Parse decodes a file from yaml.v3 nodes, so decimals
// go from the file's text to a decimal.Decimal without passing through a
// float, and every error names the file, the line and the field
// (deploy/pricing/pro.yaml:14: charges[1].tiers[2].up_to: must rise above
// 100000). Parse needs no database: veil pricing validate runs it offline.
//
// Loader.Reload reads every *.yaml and *.yml file of the directory and
// validates them all before it writes anything. Then, in one transaction
// under one advisory lock (so replicas reloading at once take turns and the
// second finds nothing to do), it checks what only the database knows (the
// API exists, the plan is not managed over REST or by another file, a
// meter's changed definition is not charged by a version in use) and, for
// each file whose SHA-256 differs from its plan's latest version, creates
// the plan or adds a new version with source 'file'. A version is never
// edited. Any error, in any file, rolls the whole reload back: the running
// pricing stays as it was, and the errors are reported (the log, the
// veil_controlplane_pricing_reload* metrics, the answer of POST
// /v1/admin/pricing/reload). A file removed from the directory leaves its
// plan as it is: archive a plan by setting its status in the file. A plan
// whose file is gone follows the file that now declares it (a rename).
//
// Watch reloads at start and whenever the directory changes (fsnotify on
// the directory, so that editors' rename-into-place writes are seen),
// debounced.
package planfiles
