/*-------------------------------------------------------------------------
 *
 * http_int.h
 *	  What http.c and http_transport.c, the two files that talk to
 *	  libcurl, share.  Only they include it (it includes curl.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_HTTP_INT_H
#define PG_LLM_HTTP_INT_H

#include <curl/curl.h>

#include "http.h"

extern void HttpReadEnvironment(void);
extern void HttpSetTransport(HttpTransfer *t, CURL *e, const char *url,
							 const HttpTransport *tr, void *share,
							 const char *default_ca_file);
extern HttpCause HttpClassify(CURL *e, CURLcode rc, HttpTransfer *t);

/*
 * http_gate.c, below http.c: http.c drives it and hands it, once, the two
 * things of its own the gate needs (giving a transfer to libcurl, the list
 * of live transfers), so that the gate never calls back up.
 */
typedef void (*HttpGateAttachFn) (HttpTransfer *t);
extern void HttpGateSetup(HttpGateAttachFn attach, HttpTransfer *const *live);
extern void HttpGateStart(HttpTransfer *t, const char *url, bool may_multiplex);
extern void HttpGateDone(HttpTransfer *t);
extern void HttpGateLearn(HttpTransfer *t, long http_version);
extern void HttpGatePump(void);

#endif							/* PG_LLM_HTTP_INT_H */
