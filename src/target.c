/*-------------------------------------------------------------------------
 *
 * target.c
 *	  Write-back targets: finding a row by the JSON object of its key
 *	  columns, the same way when llm.enqueue checks a target and when the
 *	  worker writes a reply into it.
 *
 *	  Nothing here resolves a name through a search_path: the table comes
 *	  by OID and is named schema-qualified, each key is compared with its
 *	  type's own equality operator named with its schema, and values are
 *	  parameters of the column's types, made by the types' input functions
 *	  (with the column's typmod where it matters) rather than by casts in
 *	  SQL text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_operator.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "names.h"
#include "target.h"

/* Start an empty set of arguments. */
void
TargetArgsInit(TargetArgs *args)
{
	args->nargs = 0;
	initStringInfo(&args->signature);
}

/* The schema-qualified name of a relation, quoted. */
char *
TargetRelationName(Relation rel)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
}

/*
 * Why a queue item's target can no longer take any reply (its table, or
 * the column, was dropped, or the table is another session's temporary
 * table), or NULL.  Checked before the prompt is sent, so that nothing is
 * paid for a reply that has nowhere to go; the write-back checks again.
 */
char *
TargetGone(Oid relid, const char *column)
{
	HeapTuple	tup;
	Form_pg_class c;
	char	   *name;
	char	   *problem = NULL;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return pstrdup("the target table no longer exists; the prompt was not sent");
	c = (Form_pg_class) GETSTRUCT(tup);
	if (c->relpersistence == RELPERSISTENCE_TEMP || (column && get_attnum(relid, column) <= 0))
	{
		name = quote_qualified_identifier(get_namespace_name(c->relnamespace), NameStr(c->relname));
		if (c->relpersistence == RELPERSISTENCE_TEMP)
			problem = psprintf("the target table %s is a temporary table, which the worker cannot reach; "
							   "the prompt was not sent", name);
		else
			problem = psprintf("column \"%s\" of table %s no longer exists; the prompt was not sent",
							   column, name);
	}
	ReleaseSysCache(tup);
	return problem;
}

/* Add an argument: a value of a type (with a typmod) given as text. */
void
TargetAddArgument(TargetArgs *args, Oid typid, int32 typmod, char *text)
{
	int			k = args->nargs;

	if (k >= TARGET_MAX_ARGS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("target_key has more than %d columns", TARGET_MAX_ARGS - 1),
				 errhint("Name the columns of the table's primary key or of one unique key.")));
	args->types[k] = typid;
	args->typmods[k] = typmod;
	args->texts[k] = text;
	appendStringInfo(&args->signature, "%s%u.%d", k ? "," : "", typid, typmod);
	args->nargs++;
}

/* The equality operator of a type, schema-qualified for OPERATOR(). */
char *
TargetEqualityOperator(Oid typid, const char *column)
{
	TypeCacheEntry *tc = lookup_type_cache(typid, TYPECACHE_EQ_OPR);
	HeapTuple	tup;
	Form_pg_operator op;
	char	   *s;

	if (!OidIsValid(tc->eq_opr))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("key column \"%s\" has a type without an equality operator", column),
				 errhint("Name key columns of types that can be compared for equality, such as the table's primary key.")));
	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(tc->eq_opr));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator %u", tc->eq_opr);
	op = (Form_pg_operator) GETSTRUCT(tup);
	s = psprintf("OPERATOR(%s.%s)", quote_identifier(get_namespace_name(op->oprnamespace)),
				 NameStr(op->oprname));
	ReleaseSysCache(tup);
	return s;
}

/* A key's JSON value as the text its column's input function reads. */
static char *
key_text(JsonbValue *v, const char *column)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvNull:
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("key column \"%s\" is null in target_key", column),
					 errhint("A key identifies one row; give each key column a value.")));
			break;
		default:
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("key column \"%s\" is a JSON object or array in target_key", column),
			 errhint("Give each key column a string, number or boolean.")));
	return NULL;				/* keep the compiler quiet */
}

/*
 * The hint for a column a target does not have (target_column, a key of
 * target_key): the column of that name but for case or SQL quotes, or
 * NULL.
 */
char *
TargetColumnHint(Relation rel, const char *given, const char *what)
{
	TupleDesc	desc = RelationGetDescr(rel);
	const char **names = palloc(sizeof(char *) * Max(desc->natts, 1));
	int			n = 0;
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped)
			names[n++] = NameStr(a->attname);
	}
	return NamesColumnHint(given, names, n, what);
}

/*
 * Append to sql the condition that finds the row of a key (a JSON object
 * of key column names and values): "t.k1 OPERATOR(..) $n AND ...", with
 * the values added to args (param is what comes before each argument's
 * number: "$", or a column prefix such as "v.a").  The key columns'
 * numbers go to *keycols.  A key column that is missing is an error.
 */
void
TargetKeyClause(Relation rel, const char *relname, Jsonb *key, TargetArgs *args,
				StringInfo sql, Bitmapset **keycols, const char *param)
{
	TupleDesc	desc = RelationGetDescr(rel);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;

	if (key == NULL || !JB_ROOT_IS_OBJECT(key) || JB_ROOT_COUNT(key) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target_key must be a JSON object of the target row's key columns"),
				 errhint("For example '{\"id\": 17}'.")));
	it = JsonbIteratorInit(&key->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *name;
		AttrNumber	att;
		Form_pg_attribute a;
		Oid			base;

		if (tok != WJB_KEY)
			continue;
		name = pnstrdup(v.val.string.val, v.val.string.len);
		att = get_attnum(RelationGetRelid(rel), name);
		if (att <= 0)
		{
			char	   *hint = TargetColumnHint(rel, name, "A key of target_key");

			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of table %s does not exist", name, relname),
					 hint ? errhint("%s", hint) :
					 errhint("target_key names the target row's key columns, such as '{\"id\": 17}'.")));
		}
		a = TupleDescAttr(desc, att - 1);
		base = getBaseType(a->atttypid);
		(void) JsonbIteratorNext(&it, &v, true);
		TargetAddArgument(args, base, -1, key_text(&v, name));
		appendStringInfo(sql, "%st.%s %s %s%d", first ? "" : " AND ", quote_identifier(name),
						 TargetEqualityOperator(base, name), param, args->nargs);
		if (keycols)
			*keycols = bms_add_member(*keycols, att);
		first = false;
	}
}

/*
 * The values of a key (a JSON object) as texts, in the order in which
 * TargetKeyClause adds them as arguments, into texts (up to max); the
 * key's column names, in that order, are appended to names: the shape of
 * its clause.  Returns the number of columns.
 */
int
TargetKeyTexts(Jsonb *key, char **texts, int max, StringInfo names)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;

	if (key == NULL || !JB_ROOT_IS_OBJECT(key))
		return 0;
	it = JsonbIteratorInit(&key->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *name;

		if (tok != WJB_KEY)
			continue;
		name = pnstrdup(v.val.string.val, v.val.string.len);
		appendStringInfo(names, "%s%s", n ? "," : "", quote_identifier(name));
		(void) JsonbIteratorNext(&it, &v, true);
		if (n < max)
			texts[n] = key_text(&v, name);
		n++;
	}
	return n;
}

/*
 * The values of the arguments from number `from` on, made by their types'
 * input functions with their typmods: a value that does not fit its type
 * raises the type's own error here.
 */
void
TargetValues(TargetArgs *args, Datum *values, int from)
{
	int			k;

	for (k = from; k < args->nargs; k++)
	{
		Oid			input;
		Oid			ioparam;

		getTypeInputInfo(args->types[k], &input, &ioparam);
		values[k] = OidInputFunctionCall(input, args->texts[k], ioparam, args->typmods[k]);
	}
}
