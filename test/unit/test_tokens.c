/*
 * Unit tests of the tokenizer-free token estimate (src/tokens.c): the
 * pieces it cuts text into and what each costs, on vectors whose counts
 * follow from the rules; random bytes (invalid UTF-8, cut characters) are
 * read without going past the end.  Last line: "N passed, M failed", in
 * test cases (the random rounds are one, see cases.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokens.h"

#include "cases.h"

static int passed = 0;
static int failed = 0;

static void
expect(const char *text, int64_t want)
{
	int64_t		got = TokensEstimate(text, strlen(text));

	if (got == want)
		passed++;
	else
	{
		failed++;
		printf("not ok - \"%s\": %lld tokens, want %lld\n", text, (long long) got, (long long) want);
	}
}

int
main(int argc, char **argv)
{
	int			rounds = argc > 2 && strcmp(argv[1], "--rounds") == 0 ? atoi(argv[2]) : 2000;
	int			i;

	expect("", 0);
	expect("hello", 1);
	expect("hello world", 2);			/* a space goes with the word after it */
	expect("internationalization", 3);	/* 20 letters, 9 a token */
	expect("123", 1);
	expect("1234567", 3);				/* digits, 3 a token */
	expect("a, b.", 4);					/* a, ",", b, "." each rounded up */
	expect("...", 1);
	expect("....", 2);
	expect("x\n\n  y", 3);				/* a line break and its indent: half a token, rounded up */
	expect("x    y", 3);				/* a run of spaces is a piece */
	expect("chào", 1);					/* 3 ASCII letters and one outside: 1/3 + 0.55 */
	expect("Đơn hàng", 3);				/* ceil(0.55 + 0.55 + 1/9) + ceil(3/9 + 0.55) */
	expect("日本語", 2);					/* 3 x 0.55 */
	expect("{\"a\": 1}", 5);			/* {" a ": 1 } */
	expect("\xff\xfe", 2);				/* invalid bytes: letters outside ASCII */
	expect("ab\xc3", 1);				/* a character cut at the end */

	/* random bytes: no read past the end (ASan), never negative, bounded */
	srand(25);
	for (i = 0; i < rounds; i++)
	{
		size_t		len = (size_t) (rand() % 200);
		unsigned char *buf = malloc(len ? len : 1);
		size_t		k;
		int64_t		n;

		for (k = 0; k < len; k++)
			buf[k] = (unsigned char) (rand() % 256);
		n = TokensEstimate((const char *) buf, len);
		if (!UnitProperty("random bytes: never negative, at most a token a byte",
						  n >= 0 && n <= (int64_t) len))
			printf("not ok - random text of %zu bytes: %lld tokens\n", len, (long long) n);
		free(buf);
	}
	UnitPropertiesEnd("random byte strings", rounds, &passed, &failed);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
