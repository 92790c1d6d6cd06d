/*-------------------------------------------------------------------------
 *
 * utf8.c
 *	  UTF-8 validation and repair following the Unicode "maximal subpart"
 *	  practice that the WHATWG decoders use: each maximal ill-formed
 *	  subpart becomes one U+FFFD.  Shared by the SSE parser and the reply
 *	  decoder.  Pure C: no PostgreSQL headers, no allocation.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <string.h>

#include "utf8.h"

/*
 * utf8_seq
 *		Classify the sequence starting at s (avail > 0 bytes available).
 *
 * Returns the length of a well-formed sequence (1-4), or minus the length
 * of its maximal subpart when ill-formed: the longest prefix that could
 * still have begun a well-formed sequence, at least one byte.  That is the
 * unit the WHATWG decoder (and Unicode's "best practice") replaces by one
 * U+FFFD.  The second-byte ranges rule out overlongs (E0, F0), surrogates
 * (ED) and code points above U+10FFFF (F4).  A sequence cut short by the end
 * of the span is ill-formed: spans always end before an ASCII byte or at the
 * end of a line, which is where the stream decoder would also fail it.
 */
static int
utf8_seq(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80;
	unsigned char hi = 0xBF;
	int			need;
	int			i;

	if (c < 0x80)
		return 1;
	if (c < 0xC2)
		return -1;				/* continuation byte, or overlong C0/C1 */
	if (c < 0xE0)
		need = 1;
	else if (c < 0xF0)
	{
		need = 2;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	}
	else if (c < 0xF5)
	{
		need = 3;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	}
	else
		return -1;

	for (i = 1; i <= need; i++)
	{
		if ((size_t) i >= avail || s[i] < lo || s[i] > hi)
			return -i;
		lo = 0x80;
		hi = 0xBF;
	}
	return need + 1;
}

/*
 * Utf8ValidPrefix
 *		Length of the longest well-formed UTF-8 prefix of buf.
 *
 * LLM output is mostly ASCII JSON, so runs of ASCII are skipped a machine
 * word at a time; memcpy keeps the unaligned load well-defined.
 */
size_t
Utf8ValidPrefix(const char *buf, size_t len)
{
	const unsigned char *s = (const unsigned char *) buf;
	size_t		i = 0;

	while (i < len)
	{
		int			n;

		if (s[i] < 0x80)
		{
			while (len - i >= 8)
			{
				uint64_t	w;

				memcpy(&w, s + i, 8);
				if (w & UINT64_C(0x8080808080808080))
					break;
				i += 8;
			}
			while (i < len && s[i] < 0x80)
				i++;
			continue;
		}
		n = utf8_seq(s + i, len - i);
		if (n < 0)
			return i;
		i += (size_t) n;
	}
	return len;
}

/*
 * Utf8Repair
 *		Copy buf to out, replacing each maximal ill-formed subpart by U+FFFD.
 *		out must hold 3 * len bytes; returns the bytes written.
 */
size_t
Utf8Repair(const char *buf, size_t len, char *out)
{
	const unsigned char *s = (const unsigned char *) buf;
	char	   *o = out;
	size_t		i = 0;

	while (i < len)
	{
		size_t		ok = Utf8ValidPrefix(buf + i, len - i);
		int			k;

		memcpy(o, buf + i, ok);
		o += ok;
		i += ok;
		if (i >= len)
			break;
		k = utf8_seq(s + i, len - i);
		*o++ = (char) 0xEF;
		*o++ = (char) 0xBF;
		*o++ = (char) 0xBD;
		i += (size_t) (k < 0 ? -k : 1);
	}
	return (size_t) (o - out);
}
