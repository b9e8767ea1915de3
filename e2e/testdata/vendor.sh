#!/bin/sh
# Vendors the browser tests' third-party files from the npm registry into
# this directory, each at the version and integrity pinned below: axe-core,
# the accessibility checker the browser tests inject into every page. Run it
# after changing a pin; the files are committed, so the tests never need npm.
set -eu
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package version integrity file-in-package vendored-name
pins='
axe-core 4.14.1 sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ== axe.min.js axe.min.js
axe-core 4.14.1 sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ== LICENSE axe.LICENSE
'
echo "$pins" | while read -r pkg version integrity file name; do
	[ -n "$pkg" ] || continue
	tgz="$work/$pkg-$version.tgz"
	if [ ! -f "$tgz" ]; then
		(cd "$work" && npm pack --silent "$pkg@$version" >/dev/null)
		got="sha512-$(openssl dgst -sha512 -binary "$tgz" | openssl base64 -A)"
		if [ "$got" != "$integrity" ]; then
			echo "vendor: $pkg@$version has integrity $got, want $integrity" >&2
			exit 1
		fi
		mkdir -p "$work/$pkg"
		tar xzf "$tgz" -C "$work/$pkg"
	fi
	cp "$work/$pkg/package/$file" "$out/$name"
	echo "vendor: $pkg@$version $file -> e2e/testdata/$name"
done
