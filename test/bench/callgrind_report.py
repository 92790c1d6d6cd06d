#!/usr/bin/python3
"""test/bench/callgrind_report.py: instructions per call from two callgrind
profiles written by profile_chat.sh.

usage: callgrind_report.py CALLS PG_LLM.callgrind RAW_CURL.callgrind

CALLS is the number of calls each profile covers (warm-up included; the
first call's one-off costs, such as loading the configuration and opening
the connection, are spread over all of them).  Prints the inclusive
instructions per call of every pg_llm function and of the library entry
points pg_llm calls, then the top functions by self cost, for both.
"""
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?):(\S+?)(?:'\d+)?\s+\[(.*)\]\s*$")

# library entry points worth showing inclusive (called from pg_llm's code)
ENTRIES = [
    "curl_multi_socket_action", "curl_multi_add_handle", "curl_multi_remove_handle",
    "curl_multi_info_read", "curl_easy_reset", "curl_easy_setopt", "curl_slist_append",
    "curl_slist_free_all", "curl_easy_perform",
    "json_tokener_parse_ex", "json_tokener_new", "json_object_to_json_string_ext",
    "json_object_deep_copy", "json_object_put", "json_object_object_add",
    "WaitEventSetWait", "CreateWaitEventSet", "AddWaitEventToSet", "FreeWaitEventSet",
    "pg_server_to_any", "pg_any_to_server", "cstring_to_text", "text_to_cstring",
    "SPI_execute", "malloc", "free", "calloc", "realloc",
]


def annotate(path, inclusive):
    out = subprocess.run(["callgrind_annotate", "--threshold=100",
                          "--inclusive=" + ("yes" if inclusive else "no"), path],
                         capture_output=True, text=True, check=True).stdout
    funcs = {}
    for line in out.splitlines():
        if "Auto-annotated source" in line:
            break
        m = LINE.match(line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        fn, obj = m.group(3), m.group(4).rsplit("/", 1)[-1]
        key = (fn, obj)
        funcs[key] = max(funcs.get(key, 0), ir)   # recursion: keep the outermost
    return funcs


def show(title, items, calls):
    print(title)
    for (fn, obj), ir in items:
        print("  %9.0f  %-36s %s" % (ir / calls, fn, obj))


def main():
    calls = int(sys.argv[1])
    pg, raw = sys.argv[2], sys.argv[3]
    pg_inc, pg_self = annotate(pg, True), annotate(pg, False)
    raw_inc, raw_self = annotate(raw, True), annotate(raw, False)

    top = pg_inc.get(("pg_llm_chat", "pg_llm.so"), 0)
    perform = raw_inc.get(("curl_easy_perform", "libcurl.so.4.8.0"), 0) or max(raw_inc.values())
    print("instructions (Ir) per call, %d calls each (warm-up included):" % calls)
    print("  pg_llm_chat(), inclusive:          %9.0f" % (top / calls))
    print("  raw_curl curl_easy_perform(), incl: %8.0f" % (perform / calls))
    print("  ratio: %.2f" % (top / perform if perform else float("nan")))
    print()
    own = sorted(((k, v) for k, v in pg_inc.items() if k[1] == "pg_llm.so"), key=lambda x: -x[1])
    show("pg_llm functions, inclusive Ir per call:", own, calls)
    print()
    libs = sorted(((k, v) for k, v in pg_inc.items() if k[0] in ENTRIES and k[1] != "pg_llm.so"),
                  key=lambda x: -x[1])
    show("library entry points under pg_llm_chat(), inclusive Ir per call:", libs, calls)
    print()
    by_obj = {}
    for (fn, obj), ir in pg_self.items():
        by_obj[obj] = by_obj.get(obj, 0) + ir
    print("pg_llm_chat(), self Ir per call by object:")
    for obj, ir in sorted(by_obj.items(), key=lambda x: -x[1])[:8]:
        print("  %9.0f  %s" % (ir / calls, obj))
    by_obj = {}
    for (fn, obj), ir in raw_self.items():
        by_obj[obj] = by_obj.get(obj, 0) + ir
    print("raw_curl curl_easy_perform(), self Ir per call by object:")
    for obj, ir in sorted(by_obj.items(), key=lambda x: -x[1])[:8]:
        print("  %9.0f  %s" % (ir / calls, obj))
    print()
    show("pg_llm_chat(): top 25 functions by self Ir per call:",
         sorted(pg_self.items(), key=lambda x: -x[1])[:25], calls)
    print()
    show("raw_curl: top 15 functions by self Ir per call:",
         sorted(raw_self.items(), key=lambda x: -x[1])[:15], calls)


if __name__ == "__main__":
    main()
