#!/usr/bin/env python3
"""The README's reference against the catalog of an installed pg_llm.

The section "## Reference" of README.md lists every public function, table,
view, setting and provider option in tables, the name in the first column
between backquotes.  Checked against the database psql reaches (PGHOST,
PGPORT, PGDATABASE; pg_llm installed there and preloaded, so that every
setting is defined):

  functions   every function of the extension in schema llm whose name does
              not start with _ (trigger functions left out) is listed once,
              as llm.name(required [, optional]) with its input arguments'
              names in order, the optional ones (those with a default) in
              brackets; nothing else is listed
  tables and views
              every table and view of the extension in schema llm whose
              name does not start with _ is listed once, with its kind
              (table, view); nothing else is listed
  settings    every llm.* setting of pg_settings is listed once with its
              default (boot_val, in its unit or a larger one: 10s, 5min,
              16MB, '' for empty) and who may change it (session,
              superuser, reload, restart); nothing else is listed
  provider options
              the options llm._check_provider_options knows (the list its
              hint gives for an unknown option), each listed once; a listed
              name it calls unknown fails

Called by test/readme_run.py for README.md (each check one ok / not ok
line in its report); alone, with a running server:
  python3 test/readme_reference.py README.md
"""
import re
import subprocess
import sys

SECTIONS = {"functions": "Functions", "relations": "Tables and views",
            "settings": "Settings", "options": "Provider options"}
CONTEXT = {"user": "session", "superuser": "superuser", "sighup": "reload",
           "postmaster": "restart"}
TIME_MS = {"ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}
MEMORY_KB = {"kB": 1, "MB": 1024, "GB": 1024 * 1024, "TB": 1024 * 1024 * 1024}


def reference_tables(text):
    """{subsection title: [rows as lists of cells]} of the Reference section."""
    m = re.search(r"^## Reference[ \t]*\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not m:
        return None
    tables = {}
    current = None
    lines = m.group(1).split("\n")
    for i, line in enumerate(lines):
        h = re.match(r"^### (.+?)\s*$", line)
        if h:
            current = tables.setdefault(h.group(1), [])
            continue
        if current is None or not line.startswith("|") or re.match(r"^\|[\s|:-]+\|\s*$", line):
            continue
        if i + 1 < len(lines) and re.match(r"^\|[\s|:-]+\|\s*$", lines[i + 1]):
            continue            # a header row
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        current.append(cells)
    return tables


def psql(sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return r


def rows(sql):
    return [l.split("\t") for l in psql(sql).stdout.split("\n") if l]


MEMBER = """EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                    WHERE d.classid = '%s'::regclass AND d.objid = %s.oid
                      AND d.deptype = 'e' AND e.extname = 'pg_llm')"""


def catalog_functions():
    """{name: [(required names, optional names)]} of the public functions."""
    out = {}
    for name, nreq, args in rows("""
        SELECT p.proname, p.pronargs - p.pronargdefaults,
               coalesce((SELECT string_agg(a.n, ',' ORDER BY a.k)
                           FROM unnest(p.proargnames,
                                       coalesce(p.proargmodes::text[],
                                                array_fill('i'::text, ARRAY[coalesce(cardinality(p.proargnames), 0)])))
                                WITH ORDINALITY AS a(n, m, k)
                          WHERE a.m IN ('i', 'b', 'v')), '')
          FROM pg_proc p
         WHERE p.pronamespace = 'llm'::regnamespace AND p.proname !~ '^_'
           AND p.prorettype <> 'trigger'::regtype AND """ + MEMBER % ("pg_proc", "p")):
        names = [a for a in args.split(",") if a]
        out.setdefault(name, []).append((names[:int(nreq)], names[int(nreq):]))
    return out


def catalog_relations():
    kinds = {"r": "table", "p": "table", "v": "view", "m": "materialized view"}
    return {name: kinds[k] for name, k in rows("""
        SELECT c.relname, c.relkind FROM pg_class c
         WHERE c.relnamespace = 'llm'::regnamespace AND c.relname !~ '^_'
           AND c.relkind IN ('r', 'p', 'v', 'm') AND """ + MEMBER % ("pg_class", "c"))}


def catalog_settings():
    return {name: (boot, unit, ctx) for name, boot, unit, ctx in rows(
        "SELECT name, coalesce(boot_val, ''), coalesce(unit, ''), context "
        "FROM pg_settings WHERE name LIKE 'llm.%'")}


def option_probe(names):
    """(the options the check's hint lists, the given names it calls unknown)."""
    arr = "ARRAY[%s]::text[]" % ", ".join("'%s'" % n.replace("'", "''") for n in names)
    r = psql("""DO $$
DECLARE n text; h text;
BEGIN
    FOREACH n IN ARRAY %s LOOP
        BEGIN
            PERFORM llm._check_provider_options(jsonb_build_object(n, 'pg_llm reference probe'));
        EXCEPTION WHEN others THEN
            IF SQLERRM LIKE 'unknown provider option%%' THEN
                RAISE NOTICE 'unknown: %%', n;
            END IF;
        END;
    END LOOP;
    BEGIN
        PERFORM llm._check_provider_options('{"pg_llm_reference_probe": 0}');
    EXCEPTION WHEN others THEN
        GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
        RAISE NOTICE 'hint: %%', h;
    END;
END $$""" % arr)
    unknown = re.findall(r"NOTICE:  unknown: (\S+)", r.stderr)
    m = re.search(r"NOTICE:  hint: Known options: (.*?)\.?\s*$", r.stderr, re.M)
    known = [o.strip() for o in m.group(1).split(",")] if m else []
    return known, unknown


def normal_default(shown, unit):
    """A default as the README shows it, in the setting's own unit (or None)."""
    shown = shown.strip("`")
    if shown == "''":
        return ""
    m = re.match(r"^(-?\d+)\s*([A-Za-z]*)$", shown)
    if not m or not unit:
        return shown
    value, u = int(m.group(1)), m.group(2)
    if not u:
        return str(value)
    for table in (TIME_MS, MEMORY_KB):
        if u in table and unit in table:
            scaled = value * table[u]
            if scaled % table[unit]:
                return None
            return str(scaled // table[unit])
    return None


def listed_once(kind, listed, catalog):
    """Problems of a list of names against the catalog's."""
    problems = []
    seen = set()
    for n in listed:
        if n in seen:
            problems.append("%s %s listed twice" % (kind, n))
        seen.add(n)
    problems += ["%s %s is not listed" % (kind, n) for n in sorted(set(catalog) - seen)]
    problems += ["%s %s is listed but does not exist" % (kind, n) for n in sorted(seen - set(catalog))]
    return problems


def first_name(cells, pattern):
    m = re.match(pattern, cells[0]) if cells else None
    return m


def check_functions(table):
    catalog = catalog_functions()
    problems, listed = [], []
    for cells in table:
        m = first_name(cells, r"^`llm\.([a-z0-9_]+)\((.*)\)`$")
        if not m:
            problems.append("not a function's row (`llm.name(arguments)` first): %s" % " | ".join(cells))
            continue
        name, args = m.group(1), m.group(2)
        req, _, opt = args.partition("[")
        req = [a for a in re.split(r"[\s,]+", req) if a]
        opt = [a for a in re.split(r"[\s,\]]+", opt) if a]
        listed.append(name)
        if name in catalog and (req, opt) not in catalog[name]:
            problems.append("llm.%s(%s) has the arguments %s" % (
                name, args, " or ".join("(%s%s)" % (", ".join(r), " [, %s]" % ", ".join(o) if o else "")
                                        for r, o in catalog[name])))
    # an overloaded name is listed once a signature
    counted = {n: len(s) for n, s in catalog.items()}
    for n in sorted(set(listed) | set(catalog)):
        have, want = listed.count(n), counted.get(n, 0)
        if want == 0:
            problems.append("function llm.%s is listed but does not exist" % n)
        elif have < want:
            problems.append("function llm.%s is not listed%s" % (n, "" if have == 0 else " for every signature"))
        elif have > want:
            problems.append("function llm.%s is listed more often than it has signatures" % n)
    return sum(counted.values()), problems


def check_relations(table):
    catalog = catalog_relations()
    problems, listed = [], []
    for cells in table:
        m = first_name(cells, r"^`llm\.([a-z0-9_]+)`$")
        if not m or len(cells) < 2:
            problems.append("not a table's or view's row (`llm.name` | kind first): %s" % " | ".join(cells))
            continue
        listed.append(m.group(1))
        kind = catalog.get(m.group(1))
        if kind and cells[1] != kind:
            problems.append("llm.%s is a %s, not a %s" % (m.group(1), kind, cells[1]))
    return len(catalog), problems + listed_once("table or view", ["llm." + n for n in listed],
                                                ["llm." + n for n in catalog])


def check_settings(table):
    catalog = catalog_settings()
    problems, listed = [], []
    for cells in table:
        m = first_name(cells, r"^`(llm\.[a-z0-9_]+)`$")
        if not m or len(cells) < 3:
            problems.append("not a setting's row (`llm.name` | default | set by first): %s" % " | ".join(cells))
            continue
        name = m.group(1)
        listed.append(name)
        if name not in catalog:
            continue
        boot, unit, ctx = catalog[name]
        if normal_default(cells[1], unit) != boot:
            problems.append("%s: the default is %s%s, not %s" % (name, boot or "''", " " + unit if unit else "",
                                                                 cells[1]))
        if CONTEXT.get(ctx, ctx) != cells[2]:
            problems.append("%s is set by %s, not %s" % (name, CONTEXT.get(ctx, ctx), cells[2]))
    return len(catalog), problems + listed_once("setting", listed, catalog)


def check_options(table):
    problems, listed = [], []
    for cells in table:
        m = first_name(cells, r"^`([a-z0-9_]+)`$")
        if not m:
            problems.append("not an option's row (`name` first): %s" % " | ".join(cells))
            continue
        listed.append(m.group(1))
    known, unknown = option_probe(listed)
    if not known:
        problems.append("llm._check_provider_options gave no list of known options")
    problems += ["provider option %s is refused as unknown" % n for n in unknown]
    return len(known), problems + listed_once("provider option", listed, known)


CHECKS = [("functions", check_functions), ("relations", check_relations),
          ("settings", check_settings), ("options", check_options)]


def check(path, report):
    """Run every check of the file's reference; report(ok, name, detail)."""
    tables = reference_tables(open(path, encoding="utf-8").read())
    if tables is None:
        report(False, "%s: its section ## Reference" % path, "no section \"## Reference\"")
        return
    for key, fn in CHECKS:
        title = SECTIONS[key]
        name = "%s reference, %s" % (path, title.lower())
        if title not in tables:
            report(False, name, "no subsection \"### %s\" in the reference" % title)
            continue
        try:
            n, problems = fn(tables[title])
        except RuntimeError as e:
            report(False, name, str(e))
            continue
        report(not problems, "%s: %d listed, as in the catalog" % (name, n) if not problems else name,
               "\n".join(problems))


def main():
    counts = [0, 0]

    def report(ok, name, detail=None):
        counts[0 if ok else 1] += 1
        print("%s - %s" % ("ok" if ok else "not ok", name))
        if not ok and detail:
            for d in detail.split("\n"):
                print("#   " + d)

    for path in sys.argv[1:] or ["README.md"]:
        check(path, report)
    print("reference: %d passed, %d failed" % tuple(counts))
    return 1 if counts[1] else 0


if __name__ == "__main__":
    sys.exit(main())
