# Third-party extensions the tests build from source (Debian 12 does not
# package them): pgvector and Citus, from ../shared/vendor/ beside the
# project (or $PG_LLM_VENDOR).  Each is built once per PostgreSQL version
# into a cache directory kept between runs ($PG_LLM_VENDOR_CACHE, default
# /var/cache/pg_llm-vendor) and installed from there into the server that
# `pg_config` on PATH names, so a rerun costs a `make install`, not a build.
# Source it after test/lib.sh, then call vendor_pgvector or vendor_citus.

PG_LLM_VENDOR=${PG_LLM_VENDOR:-$(cd "$PG_LLM_ROOT/.." && pwd)/shared/vendor}
PG_LLM_VENDOR_CACHE=${PG_LLM_VENDOR_CACHE:-/var/cache/pg_llm-vendor}

# The cache directory of one source archive for the PostgreSQL on PATH.
vendor_build_dir() {
  local name=$1 ver
  ver=$(pg_config --version | awk '{print $2}')
  echo "$PG_LLM_VENDOR_CACHE/$name-pg$ver"
}

# Unpack $1 (an archive in the vendor directory) into a fresh build
# directory; prints the source directory.
vendor_unpack() {
  local archive=$PG_LLM_VENDOR/$1 dir=$2
  [ -f "$archive" ] || { log "missing $archive (see the vendor README)"; return 1; }
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -xzf "$archive" -C "$dir"
  find "$dir" -mindepth 1 -maxdepth 1 -type d | head -1
}

# pgvector 0.8.6: build (seconds) if not cached, then install.
vendor_pgvector() {
  local dir src
  dir=$(vendor_build_dir pgvector-0.8.6)
  if [ ! -f "$dir/.built" ]; then
    log "building pgvector 0.8.6 (cache: $dir)"
    src=$(vendor_unpack pgvector-0.8.6.tar.gz "$dir")
    make -C "$src" -s -j2 OPTFLAGS="" >"$dir/build.log" 2>&1 ||
      { tail -20 "$dir/build.log" >&2; return 1; }
    echo "$src" > "$dir/.built"
  fi
  src=$(cat "$dir/.built")
  make -C "$src" -s install OPTFLAGS="" >/dev/null 2>&1 ||
    { log "pgvector: make install failed"; return 1; }
}

# Citus 13.2.2 with its one-line build patch: build (about a minute) if not
# cached, then install.  Citus needs lz4 and zstd headers.
vendor_citus() {
  local dir src p missing=()
  for p in liblz4-dev libzstd-dev autoconf; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { log "missing packages: ${missing[*]}"; return 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  dir=$(vendor_build_dir citus-13.2.2)
  if [ ! -f "$dir/.built" ]; then
    log "building Citus 13.2.2 (about a minute; cache: $dir)"
    src=$(vendor_unpack citus-13.2.2.tar.gz "$dir")
    (cd "$src" && patch -s -p1 < "$PG_LLM_VENDOR/citus-13.2.2-pg15.20-createdb.patch" &&
       ./configure PG_CONFIG="$(command -v pg_config)" >"$dir/build.log" 2>&1 &&
       make -s -j2 >>"$dir/build.log" 2>&1) ||
      { tail -30 "$dir/build.log" >&2; return 1; }
    echo "$src" > "$dir/.built"
  fi
  src=$(cat "$dir/.built")
  make -C "$src" -s install PG_CONFIG="$(command -v pg_config)" >/dev/null 2>&1 ||
    { log "citus: make install failed"; return 1; }
}
