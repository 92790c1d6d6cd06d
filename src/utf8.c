/*-------------------------------------------------------------------------
 *
 * utf8.c
 *	  UTF-8 validation and repair following the Unicode "maximal subpart"
 *	  practice that the WHATWG decoders use: each maximal invalid subpart
 *	  becomes one U+FFFD.  Pure C; no PostgreSQL headers, no allocation.
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "utf8.h"

/*
 * Length of the valid sequence starting at s (at most n bytes), or 0 when
 * it is invalid; *bad gets the length of the maximal invalid subpart.
 */
static size_t
sequence_length(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned char c = s[0];
	size_t		need;
	unsigned char lo = 0x80,
				hi = 0xBF;
	size_t		i;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		need = 2;
	else if (c >= 0xE0 && c <= 0xEF)
	{
		need = 3;
		if (c == 0xE0)
			lo = 0xA0;			/* no overlong forms */
		else if (c == 0xED)
			hi = 0x9F;			/* no surrogates */
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		need = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;			/* nothing above U+10FFFF */
	}
	else
	{
		*bad = 1;
		return 0;
	}
	for (i = 1; i < need; i++)
	{
		if (i >= n || s[i] < lo || s[i] > hi)
		{
			*bad = i;
			return 0;
		}
		lo = 0x80;
		hi = 0xBF;
	}
	return need;
}

size_t
Utf8ValidPrefix(const char *buf, size_t len)
{
	const unsigned char *s = (const unsigned char *) buf;
	size_t		i = 0;

	while (i < len)
	{
		size_t		bad;
		size_t		k;

		if (s[i] < 0x80)
		{
			i++;
			continue;
		}
		k = sequence_length(s + i, len - i, &bad);
		if (k == 0)
			return i;
		i += k;
	}
	return len;
}

size_t
Utf8Repair(const char *buf, size_t len, char *out)
{
	const unsigned char *s = (const unsigned char *) buf;
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		size_t		valid = Utf8ValidPrefix(buf + i, len - i);
		size_t		bad = 1;

		memcpy(out + o, buf + i, valid);
		o += valid;
		i += valid;
		if (i >= len)
			break;
		(void) sequence_length(s + i, len - i, &bad);
		out[o++] = (char) 0xEF;
		out[o++] = (char) 0xBF;
		out[o++] = (char) 0xBD;
		i += bad;
	}
	return o;
}
