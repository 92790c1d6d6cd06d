/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The one place where pg_llm copes with differences between PostgreSQL
 *	  major versions 14 to 18.  Every PG_VERSION_NUM test lives here; the
 *	  other files use the names defined below.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_COMPAT_H
#define PG_LLM_COMPAT_H

#include "postgres.h"
#include "storage/latch.h"
#include "utils/guc.h"

#if PG_VERSION_NUM < 140000
#error "pg_llm requires PostgreSQL 14 or later"
#endif

/*
 * CreateWaitEventSet() took a MemoryContext until 16 and takes a
 * ResourceOwner from 17 on; NULL there means "session lifetime", which is
 * what a set kept across calls in TopMemoryContext means before 17.
 */
#if PG_VERSION_NUM >= 170000
#define LlmCreateWaitEventSet(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define LlmCreateWaitEventSet(nevents) CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * The varlena macros (VARDATA_ANY, VARSIZE_ANY_EXHDR ...) left postgres.h
 * for varatt.h in 16; a file that uses them without a header that brings
 * them includes this one.
 */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * Shared memory is requested from shmem_request_hook from 15 on; before,
 * straight from _PG_init while preloading.
 */
#if PG_VERSION_NUM >= 150000
#define LLM_HAS_SHMEM_REQUEST_HOOK 1
#endif

/* MarkGUCPrefixReserved() appeared in 15; EmitWarningsOnPlaceholders before. */
#if PG_VERSION_NUM >= 150000
#define LlmReserveGucPrefix(prefix) MarkGUCPrefixReserved(prefix)
#else
#define LlmReserveGucPrefix(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * InitMaterializedSRF() is 15+; before it, a set-returning function set up
 * its tuplestore by hand.
 */
#if PG_VERSION_NUM < 150000
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/tuplestore.h"
static inline void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	TupleDesc	tupdesc;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(old);
}
#endif

/*
 * A function that does not return: 18 wants pg_noreturn before the
 * declaration and dropped pg_attribute_noreturn(); before 18 the GCC
 * attribute it stands for may precede the declaration too.
 */
#if PG_VERSION_NUM >= 180000
#define LlmNoReturn pg_noreturn
#else
#define LlmNoReturn pg_attribute_noreturn()
#endif

/* IsBackgroundWorker became AmBackgroundWorkerProcess() in 18. */
#if PG_VERSION_NUM >= 180000
#include "miscadmin.h"
#define LlmAmBackgroundWorker() AmBackgroundWorkerProcess()
#else
#include "miscadmin.h"
#define LlmAmBackgroundWorker() (IsBackgroundWorker)
#endif

/*
 * WL_SOCKET_CLOSED (a peer that hung up) is 15+; on 14 a client that goes
 * away is noticed at the next send, as PostgreSQL itself does.
 */
#ifdef WL_SOCKET_CLOSED
#define LlmWaitClientClosed WL_SOCKET_CLOSED
#else
#define LlmWaitClientClosed 0
#endif

/* The local transaction id of this backend moved into vxid in 17. */
#if PG_VERSION_NUM >= 170000
#define LlmMyLocalXid() (MyProc->vxid.lxid)
#else
#define LlmMyLocalXid() (MyProc->lxid)
#endif

/* Custom wait events got names of their own in 17. */
#define LlmWaitEventHttp PG_WAIT_EXTENSION

/*
 * The directory and prefix of temporary files (removed at every server
 * start) moved from storage/fd.h to common/file_utils.h in 16.
 */
#if PG_VERSION_NUM >= 160000
#include "common/file_utils.h"
#else
#include "storage/fd.h"
#endif

/*
 * pg_namespace_aclcheck() became object_aclcheck(NamespaceRelationId, ...)
 * in 16.
 */
#include "utils/acl.h"
#if PG_VERSION_NUM >= 160000
#include "catalog/pg_namespace.h"
#define LlmNamespaceAclCheck(nsp, role, mode) object_aclcheck(NamespaceRelationId, (nsp), (role), (mode))
#else
#define LlmNamespaceAclCheck(nsp, role, mode) pg_namespace_aclcheck((nsp), (role), (mode))
#endif

/* pg_cryptohash_final() takes the digest's length from 15 on. */
#if PG_VERSION_NUM >= 150000
#define LlmCryptohashFinal(ctx, dest, len) pg_cryptohash_final((ctx), (dest), (len))
#else
#define LlmCryptohashFinal(ctx, dest, len) pg_cryptohash_final((ctx), (dest))
#endif

/*
 * ExecutorRun and its hook lost the execute_once argument in 18: a hook is
 * declared with LLM_EXECUTOR_RUN_PARAMS and passes LLM_EXECUTOR_RUN_ARGS on.
 */
#if PG_VERSION_NUM >= 180000
#define LLM_EXECUTOR_RUN_PARAMS QueryDesc *queryDesc, ScanDirection direction, uint64 count
#define LLM_EXECUTOR_RUN_ARGS queryDesc, direction, count
#else
#define LLM_EXECUTOR_RUN_PARAMS QueryDesc *queryDesc, ScanDirection direction, uint64 count, \
	bool execute_once
#define LLM_EXECUTOR_RUN_ARGS queryDesc, direction, count, execute_once
#endif

/* A query's LIMIT kind when it has none: LIMIT_OPTION_DEFAULT went in 18. */
#if PG_VERSION_NUM >= 180000
#define LLM_LIMIT_OPTION_NONE LIMIT_OPTION_COUNT
#else
#define LLM_LIMIT_OPTION_NONE LIMIT_OPTION_DEFAULT
#endif

#endif							/* PG_LLM_COMPAT_H */
