/*-------------------------------------------------------------------------
 *
 * names.c
 *	  The names nearest to a misspelt one, for "did you mean" hints: model
 *	  names that have no route, and option keys one typo away from a known
 *	  one.
 *
 *	  Distances are the optimal string alignment distance (Levenshtein with
 *	  transpositions: "chaep" is one step from "cheap"), case-insensitive,
 *	  so that "Cheap" is found too.  Nothing here touches the catalogs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/memutils.h"

#include "names.h"

/* Names longer than this are compared by their case only. */
#define NAMES_MAX_LEN 64

/*
 * The optimal string alignment distance of two names, case-insensitive;
 * NAMES_FAR when either is too long to compare.
 */
int
NamesDistance(const char *a, const char *b)
{
	int			la = strlen(a);
	int			lb = strlen(b);
	int			d[NAMES_MAX_LEN + 1][NAMES_MAX_LEN + 1];
	int			i,
				j;

	if (la > NAMES_MAX_LEN || lb > NAMES_MAX_LEN)
		return pg_strcasecmp(a, b) == 0 ? 0 : NAMES_FAR;
	for (i = 0; i <= la; i++)
		d[i][0] = i;
	for (j = 0; j <= lb; j++)
		d[0][j] = j;
	for (i = 1; i <= la; i++)
		for (j = 1; j <= lb; j++)
		{
			int			ca = tolower((unsigned char) a[i - 1]);
			int			cb = tolower((unsigned char) b[j - 1]);
			int			cost = (ca == cb) ? 0 : 1;
			int			v = Min(d[i - 1][j] + 1, d[i][j - 1] + 1);

			v = Min(v, d[i - 1][j - 1] + cost);
			if (i > 1 && j > 1 &&
				ca == tolower((unsigned char) b[j - 2]) &&
				tolower((unsigned char) a[i - 2]) == cb)
				v = Min(v, d[i - 2][j - 2] + 1);
			d[i][j] = v;
		}
	return d[la][lb];
}

/*
 * How far a name may be from a known one and still be taken for a typo
 * of it: case only for names of one or two characters, one step up to
 * five, two beyond.
 */
int
NamesMaxDistance(const char *known)
{
	int			len = strlen(known);

	return len <= 2 ? 0 : len <= 5 ? 1 : 2;
}

/*
 * The known names nearest to a name, when they are near enough to be a
 * typo of it (and the name is not one of them): "\"a\"", "\"a\" or
 * \"b\"", up to three; NULL when none is.
 */
char *
NamesSuggest(const char *name, const char *const *known, int n)
{
	int			best = NAMES_FAR;
	int			i;
	int			shown = 0;
	int			count = 0;
	StringInfoData buf;

	/* a known name (the common case) costs no distance at all */
	for (i = 0; i < n; i++)
		if (strcmp(name, known[i]) == 0)
			return NULL;
	for (i = 0; i < n; i++)
	{
		int			dist;

		dist = NamesDistance(name, known[i]);
		if (dist <= NamesMaxDistance(known[i]) && dist < best)
			best = dist;
	}
	if (best == NAMES_FAR)
		return NULL;
	for (i = 0; i < n; i++)
		if (NamesDistance(name, known[i]) == best && best <= NamesMaxDistance(known[i]))
			count++;
	initStringInfo(&buf);
	for (i = 0; i < n && shown < 3; i++)
	{
		if (NamesDistance(name, known[i]) != best || best > NamesMaxDistance(known[i]))
			continue;
		if (shown > 0)
			appendStringInfoString(&buf, (shown == count - 1 || shown == 2) ? " or " : ", ");
		appendStringInfo(&buf, "\"%s\"", known[i]);
		shown++;
	}
	return buf.data;
}

/*
 * Quoting hints.  target_table, source_table and result_table are
 * regclass: an SQL name inside a string, folded to lower case unless
 * quoted, so that target_table => 'SupportTickets' looks for
 * supporttickets and PostgreSQL's input function says only that this
 * relation does not exist, before any function of pg_llm runs.  A log
 * hook adds the hint to that error when the statement calls pg_llm and
 * has the name with its capitals as a string: quote it as in SQL.  The
 * hook reads only the error and the statement's text (no catalog: the
 * transaction has failed).
 */
static emit_log_hook_type prev_emit_log_hook = NULL;

/* The single-quoted literal of a statement equal to name but for case. */
static char *
literal_with_capitals(const char *query, const char *name)
{
	const char *p = query;
	size_t		nlen = strlen(name);

	while ((p = strchr(p, '\'')) != NULL)
	{
		const char *start = ++p;
		const char *end = strchr(start, '\'');
		bool		upper = false;
		const char *c;

		if (end == NULL)
			return NULL;
		p = end + 1;
		if ((size_t) (end - start) != nlen || memchr(start, '"', end - start) != NULL)
			continue;
		for (c = start; c < end; c++)
			if (*c >= 'A' && *c <= 'Z')
				upper = true;
		if (upper && pg_strncasecmp(start, name, nlen) == 0)
			return pnstrdup(start, nlen);
	}
	return NULL;
}

static void
quoting_hint_hook(ErrorData *edata)
{
	if (edata->elevel == ERROR && edata->sqlerrcode == ERRCODE_UNDEFINED_TABLE &&
		edata->hint == NULL && edata->message_id != NULL &&
		(strcmp(edata->message_id, "relation \"%s\" does not exist") == 0 ||
		 strcmp(edata->message_id, "relation \"%s.%s\" does not exist") == 0) &&
		debug_query_string != NULL && strstr(debug_query_string, "llm.") != NULL &&
		edata->message != NULL)
	{
		const char *q1 = strchr(edata->message, '"');
		const char *q2 = q1 ? strrchr(q1 + 1, '"') : NULL;

		if (q2 != NULL && q2 - q1 - 1 < NAMEDATALEN * 2 + 2)
		{
			MemoryContext old = MemoryContextSwitchTo(ErrorContext);
			char	   *missing = pnstrdup(q1 + 1, q2 - q1 - 1);
			char	   *lit = literal_with_capitals(debug_query_string, missing);

			if (lit)
			{
				StringInfoData quoted;
				char	   *part;
				char	   *save = NULL;

				/* each part of the name with capitals in double quotes */
				initStringInfo(&quoted);
				for (part = strtok_r(lit, ".", &save); part; part = strtok_r(NULL, ".", &save))
				{
					const char *c;
					bool		upper = false;

					for (c = part; *c; c++)
						upper |= (*c >= 'A' && *c <= 'Z');
					appendStringInfo(&quoted, quoted.len ? (upper ? ".\"%s\"" : ".%s") : (upper ? "\"%s\"" : "%s"), part);
				}
				edata->hint = psprintf("A table name with capitals is quoted inside the string, as in SQL: '%s'. "
									   "target_table, source_table and result_table are SQL names; target_column and the keys of target_key are taken as they are written.",
									   quoted.data);
			}
			MemoryContextSwitchTo(old);
		}
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Install the quoting hints; called from _PG_init. */
void
NamesInstallHints(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = quoting_hint_hook;
}

/*
 * The hint for a column name that a table does not have, taken as it is
 * written (target_column, target_key's keys): the column of the same name
 * but for case, or the name without the SQL quotes put around it; NULL
 * when there is neither.
 */
char *
NamesColumnHint(const char *given, const char *const *columns, int n, const char *what)
{
	size_t		len = strlen(given);
	int			i;

	if (len > 2 && given[0] == '"' && given[len - 1] == '"')
	{
		char	   *bare = pnstrdup(given + 1, len - 2);

		for (i = 0; i < n; i++)
			if (strcmp(columns[i], bare) == 0)
				return psprintf("%s is the column's name as it is, without SQL quotes: '%s'.", what, bare);
	}
	for (i = 0; i < n; i++)
		if (pg_strcasecmp(columns[i], given) == 0)
			return psprintf("%s is the column's name as it is written, case included (not an SQL name folded to lower case): did you mean \"%s\"?",
							what, columns[i]);
	return NULL;
}
