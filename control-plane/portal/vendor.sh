#!/bin/sh
# Vendors the portal's third-party browser files from the npm registry into
# assets/vendor, each at the version and integrity pinned below. Run it
# (make portal-vendor) after changing a pin; the files are committed, so
# building Veil never needs npm.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/assets/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package version integrity file-in-package vendored-name
pins='
redoc 2.5.4 sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ== bundles/redoc.standalone.js redoc.standalone.js
redoc 2.5.4 sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ== LICENSE redoc.LICENSE
redoc 2.5.4 sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ== bundles/redoc.standalone.js.LICENSE.txt redoc.standalone.js.LICENSE.txt
uplot 1.6.32 sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw== dist/uPlot.iife.min.js uPlot.iife.min.js
uplot 1.6.32 sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw== dist/uPlot.min.css uPlot.min.css
uplot 1.6.32 sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw== LICENSE uPlot.LICENSE
'
mkdir -p "$out"
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
	if [ "$name" = redoc.standalone.js ]; then
		# Redoc's sidebar footer shows a logo from its CDN, which the API
		# reference's policy (and a machine without internet) refuses: an
		# empty data URL instead, which its error handler hides.
		sed -i 's#https://cdn.redoc.ly/redoc/logo-mini.svg#data:,#' "$out/$name"
		! grep -q 'cdn.redoc.ly' "$out/$name" || { echo "vendor: redoc still names cdn.redoc.ly" >&2; exit 1; }
	fi
	echo "vendor: $pkg@$version $file -> assets/vendor/$name"
done
