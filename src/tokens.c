/*-------------------------------------------------------------------------
 *
 * tokens.c
 *	  How many tokens a text is, without a tokenizer: the one estimate
 *	  behind budget reservations, rate-limit reservations and
 *	  llm.estimate().
 *
 *	  The text is cut the way byte-pair tokenizers pre-split it (runs of
 *	  letters, of digits, of punctuation, of white space), and each piece
 *	  costs what such a vocabulary usually makes of it: a word of ASCII
 *	  letters one token per 9 letters (common words are one token, a space
 *	  before them included), a letter outside ASCII (Vietnamese
 *	  diacritics, Cyrillic, CJK) 0.55 of a token, digits one token per
 *	  3, punctuation one per 3 characters, a run of spaces or a line break
 *	  half a token.  Fitted against OpenAI's o200k_base vocabulary on
 *	  English, Vietnamese, code and JSON; test/bench/bench_estimate.sh
 *	  measures the error, and the README states the bound.
 *
 *	  Pure C (no PostgreSQL headers): test/unit can run it alone.
 *
 *-------------------------------------------------------------------------
 */
#include "tokens.h"

#include <math.h>

#define LETTERS_PER_TOKEN 9.0
#define NON_ASCII_LETTER 0.55
#define DIGITS_PER_TOKEN 3.0
#define PUNCT_PER_TOKEN 3.0
#define BREAK_TOKENS 0.5

static int
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int
is_break(unsigned char c)
{
	return c == '\n' || c == '\r' || c == '\t';
}

/*
 * The estimated tokens of a UTF-8 text (invalid bytes count as letters
 * outside ASCII).  0 for an empty text.
 */
int64_t
TokensEstimate(const char *utf8, size_t len)
{
	const unsigned char *s = (const unsigned char *) utf8;
	size_t		i = 0;
	double		n = 0;

	while (i < len)
	{
		unsigned char c = s[i];

		if (is_alpha(c) || c >= 0x80)
		{
			/* a word: ASCII letters and characters outside ASCII */
			size_t		ascii = 0;
			size_t		other = 0;
			double		t;

			while (i < len)
			{
				c = s[i];
				if (is_alpha(c))
				{
					ascii++;
					i++;
				}
				else if (c >= 0x80)
				{
					/* one character: its lead byte and continuation bytes */
					other++;
					i++;
					while (i < len && (s[i] & 0xC0) == 0x80)
						i++;
				}
				else
					break;
			}
			t = ceil(ascii / LETTERS_PER_TOKEN + other * NON_ASCII_LETTER);
			n += t < 1 ? 1 : t;
		}
		else if (is_digit(c))
		{
			size_t		d = 0;

			while (i < len && is_digit(s[i]))
			{
				d++;
				i++;
			}
			n += ceil(d / DIGITS_PER_TOKEN);
		}
		else if (c == ' ')
		{
			/* one space goes with the word after it; more are a piece */
			i++;
			if (i < len && s[i] == ' ')
			{
				while (i < len && s[i] == ' ')
					i++;
				n += 1;
			}
		}
		else if (is_break(c))
		{
			while (i < len && (is_break(s[i]) || s[i] == ' '))
				i++;
			n += BREAK_TOKENS;
		}
		else
		{
			size_t		p = 0;

			while (i < len && s[i] < 0x80 && !is_alpha(s[i]) && !is_digit(s[i]) &&
				   s[i] != ' ' && !is_break(s[i]))
			{
				p++;
				i++;
			}
			n += ceil(p / PUNCT_PER_TOKEN);
		}
	}
	return (int64_t) ceil(n);
}
