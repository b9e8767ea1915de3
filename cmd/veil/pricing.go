package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/veil-platform/veil/control-plane/planfiles"
)

// runPricing runs veil pricing's subcommands; validate is the one.
func runPricing(_ context.Context, args []string, stdout, _ io.Writer) error {
	f := newFlags("pricing validate FILE…", `Checks plan files offline, without a database: each file is parsed and validated
as the control plane would before loading it from VEIL_PRICING_DIR, and the files
together must not declare a plan twice nor a meter two ways. Each error is printed
as file:line: field: message; the exit status is 1 when there is any. A directory
stands for its *.yaml and *.yml files.

  veil pricing validate deploy/pricing/*.yaml`, stdout)
	if len(args) == 0 || args[0] != "validate" {
		f.fs.Usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return errors.New("usage: veil pricing validate FILE…")
	}
	if err := f.fs.Parse(args[1:]); err != nil {
		return err
	}
	if f.fs.NArg() == 0 {
		return errors.New("name at least one plan file")
	}
	return validatePlanFiles(f.fs.Args(), stdout)
}

// validatePlanFiles prints each error, or one line per valid file.
func validatePlanFiles(paths []string, stdout io.Writer) error {
	var sources []planfiles.Source
	var errs planfiles.Errors
	for _, path := range paths {
		st, err := os.Stat(path)
		if err != nil {
			errs = append(errs, planfiles.Error{File: path, Message: err.Error()})
			continue
		}
		if st.IsDir() {
			srcs, es := planfiles.ReadDir(path)
			for i := range srcs {
				srcs[i].Rel = filepath.Join(path, srcs[i].Rel)
			}
			for i := range es {
				es[i].File = filepath.Join(path, es[i].File)
			}
			sources, errs = append(sources, srcs...), append(errs, es...)
			continue
		}
		src, err := planfiles.ReadFile(path)
		if err != nil {
			errs = append(errs, planfiles.Error{File: path, Message: err.Error()})
			continue
		}
		sources = append(sources, src)
	}
	plans, perrs := planfiles.ParseAll(sources)
	errs = append(errs, perrs...)
	for _, e := range errs {
		fmt.Fprintln(stdout, e.String())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d errors in the plan files", len(errs))
	}
	for _, p := range plans {
		fmt.Fprintf(stdout, "%s: ok: plan %s of API %s, %s, %s, %d meters, %d charges\n",
			p.File, p.Slug, p.API, p.Type, p.Currency, len(p.Meters), len(p.Charges))
	}
	return nil
}
