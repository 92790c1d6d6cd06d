/*
 * libpq_client.c
 *	  The libpq client of the streaming client matrix (test/clients/run.sh).
 *	  Runs one query and prints, one line each, what reached it and when
 *	  (wall clock, microseconds since the epoch, comparable with the mock
 *	  provider's trace):
 *
 *	      <t_us> ROW <text>            a row (single-row mode) or COPY line
 *	      <t_us> EV <NAME> [detail]    CANCEL, CLOSE, ERROR <sqlstate> <msg>,
 *	                                   AFTER <value of SELECT 1>, DONE
 *
 *	  usage: libpq_client MODE [N] QUERY
 *	    single      single-row mode (PQsetSingleRowMode)
 *	    copy        the query is a COPY ... TO STDOUT; one ROW per CopyData
 *	    plain       the ordinary way: PQexec, the whole result at once
 *	    cancel N    single-row mode; after N rows a PQcancel, then the
 *	                rest of the result, then SELECT 1 on the same connection
 *	  The connection comes from the PG* environment variables.  Exit
 *	  status 0, or 1 when something unexpected happened (printed as an EV
 *	  FATAL line).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

	printf("%lld EV ERROR %s %s\n", now_us(), state ? state : "?", msg ? msg : "?");
}

/* the text of a row, without its line end */
static void
print_row(long long t, const char *s, int len)
{
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	printf("%lld ROW %.*s\n", t, len, s);
}

/* SELECT 1 on the same connection, after the stream */
static int
after(PGconn *conn)
{
	PGresult   *res = PQexec(conn, "SELECT 1");
	int			ok = PQresultStatus(res) == PGRES_TUPLES_OK;

	if (ok)
		printf("%lld EV AFTER %s\n", now_us(), PQgetvalue(res, 0, 0));
	else
		printf("%lld EV AFTER-FAILED %s\n", now_us(), PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

int
main(int argc, char **argv)
{
	const char *mode;
	const char *query;
	long		cancel_rows = -1;
	long		rows = 0;
	PGconn	   *conn;
	PGresult   *res;

	if (argc < 3)
	{
		fprintf(stderr, "usage: libpq_client single|copy|plain|cancel N QUERY\n");
		return 2;
	}
	mode = argv[1];
	if (strcmp(mode, "cancel") == 0)
	{
		if (argc < 4)
			return 2;
		cancel_rows = atol(argv[2]);
		query = argv[3];
	}
	else
		query = argv[2];

	setvbuf(stdout, NULL, _IOLBF, 0);
	conn = PQconnectdb("");
	if (PQstatus(conn) != CONNECTION_OK)
	{
		printf("%lld EV FATAL %s", now_us(), PQerrorMessage(conn));
		return 1;
	}

	if (strcmp(mode, "plain") == 0)
	{
		int			i;
		long long	t;

		res = PQexec(conn, query);
		t = now_us();
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			for (i = 0; i < PQntuples(res); i++)
				print_row(t, PQgetvalue(res, i, 0), PQgetlength(res, i, 0));
		else
			print_error(res);
		PQclear(res);
		printf("%lld EV DONE\n", now_us());
		PQfinish(conn);
		return 0;
	}

	if (!PQsendQuery(conn, query))
	{
		printf("%lld EV FATAL %s", now_us(), PQerrorMessage(conn));
		return 1;
	}
	if (strcmp(mode, "copy") == 0)
	{
		char	   *buf;
		int			n;

		res = PQgetResult(conn);
		if (PQresultStatus(res) != PGRES_COPY_OUT)
		{
			print_error(res);
			return 1;
		}
		PQclear(res);
		while ((n = PQgetCopyData(conn, &buf, 0)) > 0)
		{
			print_row(now_us(), buf, n);
			PQfreemem(buf);
		}
		while ((res = PQgetResult(conn)) != NULL)
		{
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				print_error(res);
			PQclear(res);
		}
		printf("%lld EV DONE\n", now_us());
		PQfinish(conn);
		return 0;
	}

	PQsetSingleRowMode(conn);
	while ((res = PQgetResult(conn)) != NULL)
	{
		switch (PQresultStatus(res))
		{
			case PGRES_SINGLE_TUPLE:
				print_row(now_us(), PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0));
				rows++;
				if (rows == cancel_rows)
				{
					PGcancel   *c = PQgetCancel(conn);
					char		err[256];

					printf("%lld EV CANCEL\n", now_us());
					if (!PQcancel(c, err, sizeof(err)))
						printf("%lld EV FATAL cancel: %s\n", now_us(), err);
					PQfreeCancel(c);
				}
				break;
			case PGRES_TUPLES_OK:
			case PGRES_COMMAND_OK:
				break;
			default:
				print_error(res);
				break;
		}
		PQclear(res);
	}
	if (cancel_rows >= 0 && !after(conn))
		return 1;
	printf("%lld EV DONE\n", now_us());
	PQfinish(conn);
	return 0;
}
