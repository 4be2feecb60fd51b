/*-------------------------------------------------------------------------
 *
 * auto.c
 *	  Enrich on insert: the SQL functions enrich.auto_enrich() and
 *	  enrich.stop_auto_enrich(), and the trigger that fills the inbox.
 *
 * An INSERT must never wait for a provider and should cost little, so the
 * statement-level trigger only copies the new keys, raw, into the
 * index-less table enrich.auto_inbox (and an UPDATE of the key column does
 * the same for the changed rows).  After commit the worker takes the inbox
 * in and writes every answer into the target rows whose key normalises to
 * it (auto_deliver.c).
 *
 * auto_enrich checks that its caller may have answers written into the
 * target (UPDATE on the result column, SELECT on the key column, or
 * ownership), records the caller as the role the writes run as, and has
 * the extension owner make the triggers and, if none is there, an index
 * on the key column.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "entry.h"

PG_FUNCTION_INFO_V1(auto_enrich);
PG_FUNCTION_INFO_V1(stop_auto_enrich);
PG_FUNCTION_INFO_V1(auto_enrich_trigger);

/*
 * Runs SQL as the extension owner inside the caller's SPI connection
 * (auto_deliver.c's statements too).
 */
int
enrich_auto_exec_owner(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	Oid			save_userid;
	int			save_sec;
	int			rc;

	enrich_as_owner_begin(&save_userid, &save_sec);
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	enrich_as_owner_end(save_userid, save_sec);
	if (rc < 0)
		elog(ERROR, "statement failed: %s", SPI_result_code_string(rc));
	return rc;
}

/* The attribute number of a column, raising 42703 if it does not exist. */
static AttrNumber
column_attnum(Oid relid, const char *col)
{
	AttrNumber	att = get_attnum(relid, col);

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						col, get_rel_name(relid))));
	if (att < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot use system column \"%s\"", col)));
	return att;
}

/* Whether the current user has a privilege on a column (or its table). */
static bool
column_privilege(Oid relid, AttrNumber att, AclMode mode)
{
	return pg_class_aclcheck(relid, GetUserId(), mode) == ACLCHECK_OK ||
		pg_attribute_aclcheck(relid, att, GetUserId(), mode) == ACLCHECK_OK;
}

/* Checks that the caller may have answers written into the target. */
static void
check_target(Oid relid, AttrNumber keyatt, AttrNumber resatt)
{
	char		relkind = get_rel_relkind(relid);
	Oid			keytype = get_atttype(relid, keyatt);
	char		category;
	bool		preferred;

	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", get_rel_name(relid))));
	get_type_category_preferred(getBaseType(keytype), &category, &preferred);
	if (category != TYPCATEGORY_STRING)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("key column \"%s\" must be of a string type", get_attname(relid, keyatt, false))));
	if (get_atttype(relid, resatt) != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("result column \"%s\" must be of type jsonb", get_attname(relid, resatt, false))));
	if (pg_class_ownercheck(relid, GetUserId()))
		return;
	if (!column_privilege(relid, resatt, ACL_UPDATE) ||
		!column_privilege(relid, keyatt, ACL_SELECT))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(relid)),
				 errdetail("enrich.auto_enrich needs UPDATE on the result column and SELECT on the key column, or ownership of the table.")));
}

/* Whether some index of the table starts with the given column. */
static bool
has_index_on(Oid relid, AttrNumber att)
{
	Relation	rel = table_open(relid, AccessShareLock);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		found = false;

	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));

		if (HeapTupleIsValid(tup))
		{
			Form_pg_index ix = (Form_pg_index) GETSTRUCT(tup);

			if (ix->indnatts > 0 && ix->indkey.values[0] == att)
				found = true;
			ReleaseSysCache(tup);
		}
	}
	list_free(indexes);
	table_close(rel, AccessShareLock);
	return found;
}

/* The names of our two triggers for one result column. */
static void
trigger_names(const char *result_col, char *ins, char *upd)
{
	snprintf(ins, NAMEDATALEN, "enrich_%s_ins", result_col);
	snprintf(upd, NAMEDATALEN, "enrich_%s_upd", result_col);
}

/*
 * enrich.auto_enrich(target regclass, kind text, key_column name,
 *					  result_column name) RETURNS void
 */
Datum
auto_enrich(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *kname = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *keycol = NameStr(*PG_GETARG_NAME(2));
	char	   *rescol = NameStr(*PG_GETARG_NAME(3));
	EnrichKind	kind;
	AttrNumber	keyatt;
	AttrNumber	resatt;
	char	   *qrel;
	char		ins[NAMEDATALEN];
	char		upd[NAMEDATALEN];
	Oid			types[5] = {OIDOID, TEXTOID, NAMEOID, NAMEOID, OIDOID};
	Datum		values[5];

	if (!enrich_kind_from_name(kname, &kind) ||
		(strcmp(kname, "company") != 0 && strcmp(kname, "lead") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown kind \"%s\"", kname),
				 errhint("The kinds are \"company\" and \"lead\".")));
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	enrich_require_primary("configure enrich.auto_enrich");
	keyatt = column_attnum(relid, keycol);
	resatt = column_attnum(relid, rescol);
	check_target(relid, keyatt, resatt);
	qrel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
	trigger_names(rescol, ins, upd);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(enrich_kind_name(kind));
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_GETARG_DATUM(3);
	values[4] = ObjectIdGetDatum(GetUserId());
	enrich_auto_exec_owner("INSERT INTO enrich.auto_targets (target, kind, key_column, result_column, run_as) "
						   "VALUES ($1, $2, $3, $4, $5) "
						   "ON CONFLICT (target, result_column) DO UPDATE SET kind = excluded.kind, "
						   "key_column = excluded.key_column, run_as = excluded.run_as, created_at = now()",
						   5, types, values, NULL);
	/* triggers and the index are made by the extension owner */
	enrich_auto_exec_owner(psprintf("CREATE OR REPLACE TRIGGER %s AFTER INSERT ON %s REFERENCING NEW TABLE AS enrich_new "
									"FOR EACH STATEMENT EXECUTE FUNCTION enrich.auto_enrich_trigger(%s, '%d')",
									quote_identifier(ins), qrel,
									quote_literal_cstr(enrich_kind_name(kind)), keyatt),
						   0, NULL, NULL, NULL);
	enrich_auto_exec_owner(psprintf("CREATE OR REPLACE TRIGGER %s AFTER UPDATE OF %s ON %s FOR EACH ROW "
									"WHEN (OLD.%s IS DISTINCT FROM NEW.%s) "
									"EXECUTE FUNCTION enrich.auto_enrich_trigger(%s, '%d')",
									quote_identifier(upd), quote_identifier(keycol), qrel,
									quote_identifier(keycol), quote_identifier(keycol),
									quote_literal_cstr(enrich_kind_name(kind)), keyatt),
						   0, NULL, NULL, NULL);
	if (!has_index_on(relid, keyatt))
	{
		ereport(NOTICE,
				(errmsg("creating an index on %s (%s) so that answers can be written back",
						qrel, quote_identifier(keycol))));
		enrich_auto_exec_owner(psprintf("CREATE INDEX ON %s (%s)", qrel, quote_identifier(keycol)),
							   0, NULL, NULL, NULL);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Whether the current user may stop the auto enrichment of a table: its
 * owner, a member of a role that configured it, or a role that could
 * configure it now (UPDATE on a result column).  Needs SPI.
 */
static bool
may_stop(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	SPITupleTable *tt;
	uint64		n;

	if (pg_class_ownercheck(relid, GetUserId()))
		return true;
	enrich_auto_exec_owner("SELECT run_as::oid, result_column::text FROM enrich.auto_targets "
						   "WHERE target OPERATOR(pg_catalog.=) $1", 1, types, values, NULL);
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Oid			role = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		AttrNumber	att = get_attnum(relid, SPI_getvalue(tt->vals[i], tt->tupdesc, 2));

		if (has_privs_of_role(GetUserId(), role) ||
			(att > 0 && column_privilege(relid, att, ACL_UPDATE)))
			return true;
	}
	return pg_class_aclcheck(relid, GetUserId(), ACL_UPDATE) == ACLCHECK_OK;
}

/* enrich.stop_auto_enrich(target regclass) RETURNS void */
Datum
stop_auto_enrich(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		exists = SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid));
	char	   *qrel = NULL;
	uint64		n;
	SPITupleTable *tt;

	enrich_require_primary("stop enrich.auto_enrich");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (exists)
	{
		qrel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
										  get_rel_name(relid));
		if (!may_stop(relid))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", get_rel_name(relid)),
					 errdetail("Only the table's owner, a role that could configure it, or a member of the role that did may stop it.")));
	}
	enrich_auto_exec_owner("DELETE FROM enrich.auto_targets WHERE target OPERATOR(pg_catalog.=) $1 "
						   "RETURNING result_column::text", 1, types, values, NULL);
	n = SPI_processed;
	tt = SPI_tuptable;
	if (n == 0)
		ereport(NOTICE,
				(errmsg("relation with OID %u is not enriched automatically", relid)));
	for (uint64 i = 0; i < n && exists; i++)
	{
		char		ins[NAMEDATALEN];
		char		upd[NAMEDATALEN];
		trigger_names(SPI_getvalue(tt->vals[i], tt->tupdesc, 1), ins, upd);
		enrich_auto_exec_owner(psprintf("DROP TRIGGER IF EXISTS %s ON %s; DROP TRIGGER IF EXISTS %s ON %s",
										quote_identifier(ins), qrel, quote_identifier(upd), qrel),
							   0, NULL, NULL, NULL);
	}
	enrich_auto_exec_owner("DELETE FROM enrich.auto_keys WHERE target OPERATOR(pg_catalog.=) $1", 1, types, values, NULL);
	enrich_auto_exec_owner("DELETE FROM enrich.auto_inbox WHERE target OPERATOR(pg_catalog.=) $1", 1, types, values, NULL);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * enrich.auto_enrich_trigger(kind, key column number): AFTER INSERT
 * (statement, with the new rows as transition table enrich_new) or AFTER
 * UPDATE OF the key (row).  Copies raw keys into the inbox and asks for the
 * worker to be woken at commit.  Never normalises, never waits, and never
 * makes the user's statement fail: a key column that has since been
 * dropped is skipped (renamed is fine: it goes by number).
 */
Datum
auto_enrich_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Oid			relid;
	const char *kind;
	AttrNumber	att;
	TupleDesc	desc;
	Form_pg_attribute attr;
	Oid			types[3] = {OIDOID, TEXTOID, TEXTOID};
	Datum		values[3];

	if (!CALLED_AS_TRIGGER(fcinfo) || td->tg_trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("auto_enrich_trigger must be created by enrich.auto_enrich")));
	relid = RelationGetRelid(td->tg_relation);
	kind = td->tg_trigger->tgargs[0];
	att = (AttrNumber) pg_strtoint32(td->tg_trigger->tgargs[1]);
	desc = RelationGetDescr(td->tg_relation);
	if (att < 1 || att > desc->natts)
		return PointerGetDatum(NULL);
	attr = TupleDescAttr(desc, att - 1);
	if (attr->attisdropped)
		return PointerGetDatum(NULL);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(kind);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
	{
		if (td->tg_newtable == NULL)
			elog(ERROR, "auto_enrich_trigger needs the transition table enrich_new");
		SPI_register_trigger_data(td);
		enrich_auto_exec_owner(psprintf("INSERT INTO enrich.auto_inbox (target, kind, raw_key) "
										"SELECT $1, $2, k FROM (SELECT %s::text AS k FROM enrich_new) s "
										"WHERE k IS NOT NULL",
										quote_identifier(NameStr(attr->attname))),
							   2, types, values, NULL);
	}
	else
	{
		char	   *raw = SPI_getvalue(td->tg_newtuple, desc, att);

		if (raw != NULL)
		{
			values[2] = CStringGetTextDatum(raw);
			enrich_auto_exec_owner("INSERT INTO enrich.auto_inbox (target, kind, raw_key) VALUES ($1, $2, $3)",
								   3, types, values, NULL);
		}
	}
	if (SPI_processed > 0)
		enrich_queue_wake_at_commit();
	SPI_finish();
	return PointerGetDatum(NULL);
}
