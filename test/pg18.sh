#!/usr/bin/env bash
# Build and test pg_llm against PostgreSQL 18.
#
# PostgreSQL 18 is built from Debian's source package (postgresql-18, taken
# from sid through a private apt configuration: the machine's own sources
# and package lists never see sid) into a private prefix that is kept
# between runs.  pg_llm is then built with -Werror from a scratch copy of
# this tree (the tree's own objects are left alone), installed into that
# prefix, and the pg_regress, TAP and isolation suites run against it.
#
# Usage: test/pg18.sh [--build-only] [--ref REF] [--patch FILE]... [suite...]
#   suite          regress, tap or isolation (default: all three)
#   --build-only   build PostgreSQL 18 (if needed) and pg_llm, run no suite
#                  (the build then counts as the one test)
#   --ref REF      test the committed tree REF (git archive) instead of the
#                  work tree as it is now
#   --patch FILE   apply FILE (a git diff of this tree, -p1) to the scratch
#                  copy before building, to try a fix without touching the tree
# Environment:
#   PG18_CACHE     cache directory (default /var/cache/pg_llm-pg18): the
#                  PostgreSQL prefix is $PG18_CACHE/pg18, the source package
#                  $PG18_CACHE/src, apt's private state $PG18_CACHE/apt
#   PG18_WORK      scratch copy of the tree (default $PG18_CACHE/work); it is
#                  replaced on every run and holds build.log and the results
#   PG18_JOBS      make -j for the PostgreSQL build (default 2)
#   PG18_REBUILD=1 rebuild PostgreSQL 18 even if the cached one is fine
# Runs as root on a fresh Debian 12 machine (it installs what is missing).
# The last line is "pg18: N passed, M failed"; the exit status is non-zero
# when anything failed.
set -euo pipefail
umask 022

SRC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${PG18_CACHE:-/var/cache/pg_llm-pg18}
PREFIX=$CACHE/pg18
WORK=${PG18_WORK:-$CACHE/work}
JOBS=${PG18_JOBS:-2}
SID_SOURCE="deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main"
CONFIGURE_FLAGS=(--enable-tap-tests --without-icu --with-readline --with-zlib)

log() { printf '==> pg18: %s\n' "$*" >&2; }
die() { log "$*"; echo "pg18: 0 passed, 1 failed"; exit 1; }

build_only=0
ref=
patches=()
suites=()
while [ $# -gt 0 ]; do
  case $1 in
    --build-only) build_only=1 ;;
    --ref) [ $# -ge 2 ] || die "--ref needs a commit"; ref=$2; shift ;;
    --ref=*) ref=${1#--ref=} ;;
    --patch|--patch=*)
      if [ "$1" = --patch ]; then
        [ $# -ge 2 ] || die "--patch needs a file"
        p=$2; shift
      else
        p=${1#--patch=}
      fi
      [ -f "$p" ] || die "no patch file $p"
      patches+=("$(cd "$(dirname "$p")" && pwd)/$(basename "$p")") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    regress|tap|isolation) suites+=("$1") ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
  shift
done
[ ${#suites[@]} -gt 0 ] || suites=(regress tap isolation)

# --- what the build and the suites need, from Debian 12's own sources -------
PACKAGES=(build-essential pkg-config bison flex perl libreadline-dev zlib1g-dev
  libipc-run-perl dpkg-dev patch bzip2 xz-utils debian-archive-keyring
  libcurl4-openssl-dev libjson-c-dev python3)
ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
  [ ${#missing[@]} -gt 0 ] || return 0
  [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run as root to install them)"
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
# the suites run the server as "postgres" (initdb refuses root)
ensure_postgres_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  id postgres >/dev/null 2>&1 && return 0
  log "creating the postgres system user"
  useradd --system --user-group --create-home --home-dir /var/lib/postgresql \
    --shell /bin/bash postgres
}

# --- PostgreSQL 18 from Debian's source package, cached ----------------------
# (PGXS lives under pg_config --pkglibdir: $PREFIX/lib/postgresql/pgxs here,
# since the prefix does not name postgres)
pg18_ok() {
  local pgxs
  [ -x "$PREFIX/bin/pg_config" ] &&
    "$PREFIX/bin/pg_config" --version 2>/dev/null | grep -q '^PostgreSQL 18' &&
    pgxs=$("$PREFIX/bin/pg_config" --pkglibdir)/pgxs/src/test &&
    [ -x "$pgxs/isolation/pg_isolation_regress" ] &&
    [ -x "$pgxs/regress/pg_regress" ] &&
    [ -f "$pgxs/perl/PostgreSQL/Test/Cluster.pm" ] &&
    [ "$(cat "$PREFIX/.configure-flags" 2>/dev/null)" = "${CONFIGURE_FLAGS[*]}" ]
}

# apt-get with a private sources list, lists and cache: sid is known only here
private_apt() {
  local a=$CACHE/apt
  mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
  echo "$SID_SOURCE" > "$a/sources.list"
  apt-get -q -o Dir::Etc::sourcelist="$a/sources.list" -o Dir::Etc::sourceparts=- \
    -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" \
    -o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts=- \
    -o APT::Sandbox::User=root "$@"
}

build_pg18() {
  local t0 srcdir dsc
  t0=$(date +%s)
  log "fetching Debian's postgresql-18 source package (sid)"
  private_apt update >/dev/null
  rm -rf "$CACHE/src"
  mkdir -p "$CACHE/src"
  (cd "$CACHE/src" && private_apt source --download-only postgresql-18 >/dev/null)
  dsc=$(find "$CACHE/src" -maxdepth 1 -name "postgresql-18_*.dsc" | head -1)
  [ -n "$dsc" ] || die "apt-get source fetched no postgresql-18 .dsc"
  # upstream source only: Debian's patches move paths about for its own
  # multi-version layout, which a private prefix does not want
  (cd "$CACHE/src" && dpkg-source --skip-patches -x "$dsc" build >/dev/null 2>&1) ||
    die "dpkg-source could not unpack $dsc"
  srcdir=$CACHE/src/build
  log "building $(basename "$dsc" .dsc) into $PREFIX (log: $CACHE/src/pg18-build.log)"
  rm -rf "$PREFIX"
  {
    cd "$srcdir" &&
    ./configure --prefix="$PREFIX" "${CONFIGURE_FLAGS[@]}" &&
    make -j"$JOBS" &&
    make install &&
    make -C src/test/isolation install &&
    make -C src/test/perl install
  } > "$CACHE/src/pg18-build.log" 2>&1 ||
    { tail -40 "$CACHE/src/pg18-build.log" >&2; die "the PostgreSQL 18 build failed"; }
  echo "${CONFIGURE_FLAGS[*]}" > "$PREFIX/.configure-flags"
  rm -rf "$srcdir"
  log "PostgreSQL 18 built in $(( $(date +%s) - t0 ))s: $("$PREFIX/bin/pg_config" --version)"
}

mkdir -p "$CACHE" 2>/dev/null || die "cannot create $CACHE (set PG18_CACHE to a writable directory)"
ensure_packages
ensure_postgres_user
# one run at a time per cache (the build and the scratch copy are shared)
exec 9>"$CACHE/.lock"
flock 9
if [ "${PG18_REBUILD:-0}" = 1 ] || ! pg18_ok; then
  build_pg18
else
  log "using the cached $("$PREFIX/bin/pg_config" --version) in $PREFIX"
fi
export PATH="$PREFIX/bin:$PATH"
hash -r

# --- pg_llm from a scratch copy ----------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK"
if [ -n "$ref" ]; then
  log "copying $ref of $SRC_ROOT to $WORK"
  git -C "$SRC_ROOT" archive --format=tar "$ref" | tar -C "$WORK" -xf - ||
    die "git archive $ref failed"
else
  # the work tree as it is, without its build outputs and test results
  log "copying $SRC_ROOT to $WORK"
  tar -C "$SRC_ROOT" -cf - --exclude=./.git --exclude='*.o' --exclude='*.so' \
    --exclude='*.bc' --exclude=node_modules --exclude=./results --exclude=./tmp_check \
    --exclude=./log --exclude=./output_iso --exclude=./regression.diffs \
    --exclude=./regression.out --exclude=./.build . | tar -C "$WORK" -xf -
fi
for p in "${patches[@]}"; do
  log "applying $p"
  patch -d "$WORK" -p1 --forward --quiet < "$p" || die "$p does not apply"
done

log "building pg_llm with -Werror (log: $WORK/build.log)"
rc=0
make -C "$WORK" -k -j2 PG_CONFIG="$PREFIX/bin/pg_config" COPT=-Werror > "$WORK/build.log" 2>&1 || rc=$?
if [ $rc -ne 0 ] || grep -q 'warning:' "$WORK/build.log"; then
  log "the build failed; compiler diagnostics:"
  grep -E '(error|warning):' "$WORK/build.log" | sort -u >&2 || tail -40 "$WORK/build.log" >&2
  echo "pg18: 0 passed, 1 failed"
  exit 1
fi
make -C "$WORK" -s PG_CONFIG="$PREFIX/bin/pg_config" install >> "$WORK/build.log" 2>&1 ||
  die "make install failed (see $WORK/build.log)"
if [ $build_only = 1 ]; then
  log "built and installed into $PREFIX; no suites run (--build-only)"
  echo "pg18: 1 passed, 0 failed"
  exit 0
fi

# --- the suites, from the scratch copy so that results land there -----------
passed=0
failed=0
failed_suites=()
suite() {
  local name=$1 out rc=0 p f line
  shift
  log "suite: $name"
  out=$WORK/$name.out
  (cd "$WORK" && "$@") 2>&1 | tee "$out" || rc=${PIPESTATUS[0]}
  line=$(grep -Eo '^([a-z]+: )?[0-9]+ passed, [0-9]+ failed' "$out" | tail -1 || true)
  if [ -n "$line" ]; then
    p=$(grep -Eo '[0-9]+ passed' <<<"$line" | grep -Eo '[0-9]+')
    f=$(grep -Eo '[0-9]+ failed' <<<"$line" | grep -Eo '[0-9]+')
  else
    # pg_regress: "test x ... ok" (15) or "ok 1 - x" (16+)
    p=$(grep -Ec '^(ok|test) .* \.\.\. ok|^ok [0-9]+ ' "$out" || true)
    f=$(grep -Ec '\.\.\. FAILED|^not ok ' "$out" || true)
  fi
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  if [ "$rc" -ne 0 ]; then
    failed_suites+=("$name")
    [ "${f:-0}" -gt 0 ] || failed=$((failed + 1))
  fi
  log "$name: ${p:-0} passed, ${f:-0} failed (exit $rc; output in $out)"
}
for s in "${suites[@]}"; do
  case $s in
    regress) suite regress bash test/regress.sh ;;
    # PostgreSQL::Test::Utils writes its logs to $TESTLOGDIR (default ./log)
    # from 16 on, not to tmp_check/log as in 15, where test/tap.sh counts
    # the assertions: point it there (15 ignores both variables)
    tap) if [ -d "$WORK/test/t" ]; then
      TESTDATADIR=${TESTDATADIR:-tmp_check} TESTLOGDIR=${TESTLOGDIR:-tmp_check/log} \
        suite tap bash test/tap.sh
    fi ;;
    isolation) if [ -f "$WORK/test/isolation.sh" ]; then suite isolation bash test/isolation.sh; fi ;;
  esac
done

[ ${#failed_suites[@]} -eq 0 ] || log "failed suites: ${failed_suites[*]} (results in $WORK)"
echo "pg18: $passed passed, $failed failed"
[ $failed -eq 0 ] && [ ${#failed_suites[@]} -eq 0 ]
