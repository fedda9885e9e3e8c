#!/usr/bin/env bash
# Writes DIR/sw.js (the service worker) from public/sw.js for the app built in DIR: __AVIARY_SHELL__ becomes the list
# of DIR's files (the shell the worker precaches: every file there but sw.js) and __AVIARY_BUILD__ a hash over their
# names and contents and the template, which names the worker's cache (aviary-shell-<hash>). scripts/build-web.sh
# calls it on the staged dist/; the browser tests call it on a changed copy of dist/ to publish an update.
set -euo pipefail
die() { echo "stamp-sw: $*" >&2; exit 1; }
[ $# -eq 1 ] && [ -d "$1" ] || die "usage: stamp-sw.sh DIR (a built app)"
template="$(cd "$(dirname "$0")/.." && pwd)/public/sw.js"
[ -f "$template" ] || die "$template is missing"
cd "$1"
[ -f index.html ] || die "$1 has no index.html"

files=$(find . -type f ! -path ./sw.js ! -name '.*' -printf '%P\n' | LC_ALL=C sort)
# The names go into a JavaScript array literal unquoted by anything but "": keep them to plain characters.
bad=$(grep -v '^[A-Za-z0-9._/-]*$' <<<"$files" || true)
[ -z "$bad" ] || die "file names the worker cannot list: $bad"
hash=$( (sha256sum <"$template"; while read -r f; do printf '%s\n' "$f"; sha256sum <"$f"; done <<<"$files") |
  sha256sum | cut -c1-16)
shell=$(awk 'BEGIN { printf "[" } { printf "%s\"%s\"", (NR > 1 ? ", " : ""), $0 } END { printf "]" }' <<<"$files")
# Only the two declarations are stamped (the comments name the placeholders too).
sed -e "s|^const BUILD = '__AVIARY_BUILD__';\$|const BUILD = '$hash';|" \
    -e "s|^const SHELL = __AVIARY_SHELL__;\$|const SHELL = $shell;|" "$template" >sw.js.tmp
grep -q "^const BUILD = '$hash';\$" sw.js.tmp && grep -q '^const SHELL = \[' sw.js.tmp ||
  { rm -f sw.js.tmp; die "$template lacks the lines const BUILD = '__AVIARY_BUILD__'; and const SHELL = __AVIARY_SHELL__;"; }
mv sw.js.tmp sw.js
echo "stamped $1/sw.js: cache aviary-shell-$hash, $(wc -l <<<"$files") files"
