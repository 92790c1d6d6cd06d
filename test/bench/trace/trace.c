/*
 * trace.c
 *	  Function entry and exit hooks for a build of pg_llm made with
 *	  -finstrument-functions (test/bench/hops.sh): every entry and exit of
 *	  a function of pg_llm, with the process id, goes to a file of
 *	  $PG_LLM_TRACE_DIR, one per process, as "E offset" and "X offset"
 *	  lines (the offset of the function in the library, resolved later
 *	  with nm).  Nothing is written when the variable is not set.
 *
 *	  This file is compiled without -finstrument-functions and only into
 *	  the measuring build; it never ships.
 */

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NO_TRACE __attribute__((no_instrument_function))
/* hidden: the calls bind here, not to the empty hooks glibc exports */
#define HOOK __attribute__((no_instrument_function, visibility("hidden")))

static FILE *trace_file = NULL;
static int	trace_pid = 0;
static int	trace_off = 0;

void		__cyg_profile_func_enter(void *fn, void *site) HOOK;
void		__cyg_profile_func_exit(void *fn, void *site) HOOK;

static FILE *
trace_open(void)
NO_TRACE;

/* The trace file of this process (a forked child gets its own). */
static FILE *
trace_open(void)
{
	const char *dir;
	char		path[4096];

	if (trace_off)
		return NULL;
	if (trace_file && trace_pid == getpid())
		return trace_file;
	dir = getenv("PG_LLM_TRACE_DIR");
	if (dir == NULL || dir[0] == '\0')
	{
		trace_off = 1;
		return NULL;
	}
	trace_pid = getpid();
	snprintf(path, sizeof(path), "%s/trace.%d", dir, trace_pid);
	trace_file = fopen(path, "a");
	if (trace_file)
		setvbuf(trace_file, NULL, _IOLBF, 0);
	return trace_file;
}

static void
trace_write(char kind, void *fn)
NO_TRACE;

static void
trace_write(char kind, void *fn)
{
	FILE	   *f = trace_open();
	Dl_info		info;

	if (f == NULL || dladdr(fn, &info) == 0)
		return;
	fprintf(f, "%c %lx\n", kind, (unsigned long) ((char *) fn - (char *) info.dli_fbase));
}

void
__cyg_profile_func_enter(void *fn, void *site)
{
	trace_write('E', fn);
}

void
__cyg_profile_func_exit(void *fn, void *site)
{
	trace_write('X', fn);
}
