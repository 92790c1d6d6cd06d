/*
 * stream_client.c
 *	  A small libpq client for the streaming tests and benchmark: runs one
 *	  query in single-row mode (or a COPY ... TO STDOUT) and prints each row
 *	  with the wall-clock time it arrived, in microseconds since the epoch:
 *
 *	      <t_us> <row text>
 *
 *	  Options: --copy (the query is a COPY TO STDOUT), --cancel-after-ms N
 *	  (send a cancel request N ms after the query starts, and print the
 *	  time the error arrived), --close-after-rows N (drop the connection
 *	  after N rows, without waiting), --pause-ms N (stop reading for N ms
 *	  after the first row, as a slow client does).  The connection comes from the PG*
 *	  environment variables.  Exit status: 0 on success, 2 when the query
 *	  ended in an error (printed as "<t_us> ERROR <sqlstate> <message>").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include "libpq-fe.h"

static long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
print_error(PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	printf("%lld ERROR %s %s\n", now_us(), state ? state : "?", msg ? msg : "?");
}

int
main(int argc, char **argv)
{
	const char *query = NULL;
	int			copy = 0;
	long		cancel_ms = -1;
	long		close_rows = -1;
	long		pause_ms = -1;
	long		rows = 0;
	int			failed = 0;
	long long	start;
	int			cancelled = 0;
	PGconn	   *conn;
	PGresult   *res;
	int			i;

	for (i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--copy") == 0)
			copy = 1;
		else if (strcmp(argv[i], "--cancel-after-ms") == 0 && i + 1 < argc)
			cancel_ms = atol(argv[++i]);
		else if (strcmp(argv[i], "--close-after-rows") == 0 && i + 1 < argc)
			close_rows = atol(argv[++i]);
		else if (strcmp(argv[i], "--pause-ms") == 0 && i + 1 < argc)
			pause_ms = atol(argv[++i]);
		else
			query = argv[i];
	}
	if (query == NULL)
	{
		fprintf(stderr, "usage: stream_client [--copy] [--cancel-after-ms N] [--close-after-rows N] [--pause-ms N] QUERY\n");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	conn = PQconnectdb("");
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		return 1;
	}
	start = now_us();
	if (!PQsendQuery(conn, query))
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		return 1;
	}
	if (!copy)
		PQsetSingleRowMode(conn);

	for (;;)
	{
		/* wait for input, or for the moment to cancel */
		while (PQisBusy(conn))
		{
			fd_set		rfds;
			struct timeval tv,
					   *tvp = NULL;
			int			sock = PQsocket(conn);

			FD_ZERO(&rfds);
			FD_SET(sock, &rfds);
			if (cancel_ms >= 0 && !cancelled)
			{
				long long	left = start + cancel_ms * 1000 - now_us();

				if (left <= 0)
				{
					PGcancel   *c = PQgetCancel(conn);
					char		err[256];

					PQcancel(c, err, sizeof(err));
					PQfreeCancel(c);
					printf("%lld CANCEL\n", now_us());
					cancelled = 1;
					continue;
				}
				tv.tv_sec = left / 1000000;
				tv.tv_usec = left % 1000000;
				tvp = &tv;
			}
			if (select(sock + 1, &rfds, NULL, NULL, tvp) < 0)
				return 1;
			if (!PQconsumeInput(conn))
			{
				fprintf(stderr, "%s", PQerrorMessage(conn));
				return 1;
			}
		}
		if (copy)
		{
			char	   *buf;
			int			n = PQgetCopyData(conn, &buf, 1);

			if (n > 0)
			{
				printf("%lld %.*s", now_us(), n, buf);
				if (n == 0 || buf[n - 1] != '\n')
					printf("\n");
				PQfreemem(buf);
				rows++;
				continue;
			}
			if (n == 0)
			{
				fd_set		rfds;
				int			sock = PQsocket(conn);

				FD_ZERO(&rfds);
				FD_SET(sock, &rfds);
				select(sock + 1, &rfds, NULL, NULL, NULL);
				PQconsumeInput(conn);
				continue;
			}
			copy = 0;			/* -1: COPY done, results follow */
			continue;
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		switch (PQresultStatus(res))
		{
			case PGRES_SINGLE_TUPLE:
				printf("%lld %s\n", now_us(), PQgetvalue(res, 0, 0));
				rows++;
				if (rows == 1 && pause_ms > 0)
				{
					struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000};

					nanosleep(&ts, NULL);
				}
				break;
			case PGRES_TUPLES_OK:
			case PGRES_COMMAND_OK:
			case PGRES_COPY_OUT:
				break;
			default:
				print_error(res);
				failed = 1;
				break;
		}
		PQclear(res);
		if (close_rows >= 0 && rows >= close_rows)
		{
			printf("%lld CLOSE\n", now_us());
			PQfinish(conn);
			return 0;
		}
	}
	PQfinish(conn);
	return failed ? 2 : 0;
}
