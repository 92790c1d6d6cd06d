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
