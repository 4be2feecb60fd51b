/*-------------------------------------------------------------------------
 *
 * response.c
 *	  Checks a provider's response body before jsonb_in sees it.
 *
 * A response is paid for before it is parsed.  If jsonb_in raised an ERROR
 * on it, a synchronous caller would see an unexplained error, and the
 * background worker would restart and pay for the same answer again.  So
 * enrich_response_check() refuses, with a reason and without throwing,
 * everything jsonb_in would refuse: empty bodies, NUL bytes, invalid UTF-8,
 * invalid JSON, \u0000 and unpaired surrogates, numbers that numeric cannot
 * hold, strings and containers larger than jsonb can store; and, before the
 * parser runs, nesting deeper than ENRICH_MAX_JSON_DEPTH, so that neither
 * our recursive-descent parse nor jsonb_in's runs out of stack.  It also
 * checks the shape that each provider's 200 answer must have, with jsonb's
 * rule that the last of duplicate keys wins.
 *
 * In a database whose encoding is not UTF-8, only ASCII passes (raw or as
 * \u escapes): converting other characters can fail, and outside a
 * transaction, where the worker parses, cannot even be attempted.
 *
 * Only what PostgreSQL offers frontend programs too is used (the JSON
 * parser of common/jsonapi.h and the encoding checks of common/wchar.c), so
 * the fuzz harness in test/fuzz drives this very file without a server.
 * Memory comes from palloc; the caller runs the check in a short-lived
 * memory context, because the JSON parser does not free what it allocated
 * when it stops at an error.
 *
 * The response headers are parsed by response_headers.c under the same
 * rules, since that code runs in libcurl's header callback, which must
 * never throw, on bytes from the network.
 *
 * IDENTIFICATION
 *	  src/response.c
 *
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include <limits.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#ifndef FRONTEND
#include "utils/jsonb.h"
#endif

#include "response.h"

/*
 * numeric_in's limits (src/backend/utils/adt/numeric.c, PostgreSQL 15): it
 * refuses an exponent of INT_MAX / 2 or more either way; a display scale
 * (digits after the point, less the exponent) above NUMERIC_DSCALE_MAX; and
 * a weight (the power of NBASE of the first significant digit) that does
 * not fit the int16 of the stored format.
 */
#define NUMERIC_DSCALE_MAX		0x3FFF
#define NUMERIC_DEC_DIGITS		4	/* decimal digits in one NBASE digit */
#define NUMERIC_EXPONENT_LIMIT	(INT_MAX / 2)

/*
 * jsonb's limits (utils/jsonb.h and jsonb_util.c): a string, and the data
 * of one array or object, at most JENTRY_OFFLENMASK bytes.  jsonb_in also
 * fails to allocate arrays of 2^24 elements and objects of 2^23 members;
 * we allow 2^20 of either, far beyond any real answer.
 */
#define JSONB_MAX_DATA			0x0FFFFFFF
#define JSONB_MAX_ITEMS			(1 << 20)
#define JSONB_JENTRY			4	/* per element, key or value */
#define JSONB_HEADER			4	/* per container */
#define JSONB_ALIGN_PAD			3	/* numerics and containers are int-aligned */

#ifndef FRONTEND
StaticAssertDecl(JSONB_MAX_DATA == JENTRY_OFFLENMASK,
				 "jsonb's size limit changed");
#endif

/* Why a body is refused: completes "... cannot be used: ". */
static const char *const R_EMPTY = "the response body is empty";
static const char *const R_NUL = "the response contains a NUL byte";
static const char *const R_UTF8 = "the response is not valid UTF-8";
static const char *const R_ASCII = "the response has non-ASCII characters, which only a UTF-8 database can store";
static const char *const R_DEEP = "the response nests JSON deeper than allowed";
static const char *const R_JSON = "the response is not valid JSON";
static const char *const R_NUL_ESCAPE = "the response contains \\u0000, which jsonb cannot store";
static const char *const R_NUMBER = "the response has a number that numeric cannot hold";
static const char *const R_TOO_BIG = "the response is too large for jsonb";
static const char *const R_NOT_OBJECT = "the response is not a JSON object";
static const char *const R_NO_DATA = "the member \"data\" is missing or not an object";
static const char *const R_NO_COMPANY = "the member \"data.company\" is missing or not an object";
static const char *const R_DATA_MISSING = "the member \"data\" is missing";
static const char *const R_DATA_NOT_OBJECT = "the member \"data\" is not an object";

/* What the next value is to the shape check. */
typedef enum ValueRole
{
	ROLE_OTHER = 0,
	ROLE_DATA,					/* the root's member "data" */
	ROLE_COMPANY,				/* the member "company" of that */
} ValueRole;

/* One open array or object (or, at level 0, what holds the root value). */
typedef struct OpenContainer
{
	bool		is_data;		/* the value of the root's "data" */
	int64		items;			/* elements or members so far */
	int64		size;			/* upper bound of its jsonb data so far */
} OpenContainer;

/* What the semantic callbacks keep while the parser walks a body. */
typedef struct CheckState
{
	const char *reason;			/* the first problem found, or NULL */
	int			depth;			/* arrays and objects open */
	OpenContainer open[ENRICH_MAX_JSON_DEPTH + 1];
	ValueRole	role;			/* of the value about to come */
	JsonTokenType root;			/* type of the top-level value */
	JsonTokenType data;			/* of the root's last "data", or INVALID */
	bool		data_empty;		/* that "data" is null, {} or [] */
	JsonTokenType company;		/* of its last "company", or INVALID */
} CheckState;

/* Keeps the first reason a body is refused. */
static void
check_fail(CheckState *st, const char *reason)
{
	if (st->reason == NULL)
		st->reason = reason;
}

/* ASCII-only digit test, independent of the locale. */
static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Value of four hex digits at s, or -1. */
static int
hex4(const char *s)
{
	int			v = 0;

	for (int i = 0; i < 4; i++)
	{
		char		c = s[i];

		v <<= 4;
		if (is_digit(c))
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/*
 * Scans the body once before parsing: refuses nesting of arrays and objects
 * deeper than ENRICH_MAX_JSON_DEPTH (outside strings) and, when only ASCII
 * may pass, other bytes and \u escapes.  The parser stops at the first
 * error and agrees with this scan on everything before it, so it never
 * nests deeper, nor meets an escape, that this scan has not seen.
 */
static const char *
prescan(const char *s, size_t len, bool ascii_only)
{
	int			depth = 0;
	bool		instr = false;

	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (ascii_only && c >= 0x80)
			return R_ASCII;
		if (instr)
		{
			if (c == '\\')
			{
				if (ascii_only && i + 5 < len && s[i + 1] == 'u' &&
					hex4(s + i + 2) > 0x7F)
					return R_ASCII;
				i++;
			}
			else if (c == '"')
				instr = false;
		}
		else if (c == '"')
			instr = true;
		else if (c == '[' || c == '{')
		{
			if (++depth > ENRICH_MAX_JSON_DEPTH)
				return R_DEEP;
		}
		else if (c == ']' || c == '}')
			depth--;
	}
	return NULL;
}

/*
 * Whether numeric_in takes a JSON number (whose syntax the lexer checked),
 * and if so an upper bound of its size in jsonb.
 */
static bool
number_fits(const char *num, int64 *size)
{
	const char *p = num;
	int64		intdigits = 0;
	int64		fracdigits = 0;
	int64		firstsig = -1;	/* index of the first non-zero digit */
	int64		exponent = 0;
	bool		negative = false;
	int64		dscale;

	if (*p == '-')
		p++;
	for (; is_digit(*p); p++, intdigits++)
		if (*p != '0' && firstsig < 0)
			firstsig = intdigits;
	if (*p == '.')
		for (p++; is_digit(*p); p++, fracdigits++)
			if (*p != '0' && firstsig < 0)
				firstsig = intdigits + fracdigits;
	if (*p == 'e' || *p == 'E')
	{
		p++;
		if (*p == '+' || *p == '-')
			negative = (*p++ == '-');
		/* saturate like strtol: anything this large is refused below */
		for (; is_digit(*p); p++)
			if (exponent < PG_INT32_MAX)
				exponent = exponent * 10 + (*p - '0');
		if (negative)
			exponent = -exponent;
	}
	if (exponent >= NUMERIC_EXPONENT_LIMIT || exponent <= -NUMERIC_EXPONENT_LIMIT)
		return false;
	dscale = Max(fracdigits - exponent, 0);
	if (dscale > NUMERIC_DSCALE_MAX)
		return false;
	if (firstsig >= 0)
	{
		/* decimal weight of the first significant digit, then floor(/4) */
		int64		dweight = intdigits - 1 - firstsig + exponent;
		int64		weight = dweight >= 0 ? dweight / NUMERIC_DEC_DIGITS :
			-((-dweight - 1) / NUMERIC_DEC_DIGITS + 1);

		if (weight > PG_INT16_MAX || weight < PG_INT16_MIN)
			return false;
	}
	/* varlena and numeric headers, and two bytes per four digits */
	*size = 8 + 2 * ((intdigits + fracdigits) / NUMERIC_DEC_DIGITS + 2);
	return true;
}

/* The innermost open container (level 0 holds the root value). */
static OpenContainer *
innermost(CheckState *st)
{
	return &st->open[Min(st->depth, ENRICH_MAX_JSON_DEPTH)];
}

/* Adds a value of `bytes` bytes of jsonb data to the innermost container. */
static void
add_value(CheckState *st, int64 bytes)
{
	OpenContainer *c = innermost(st);

	c->size += JSONB_JENTRY + bytes;
	if (c->size > JSONB_MAX_DATA)
		check_fail(st, R_TOO_BIG);
}

/* Counts an element or member of the innermost container. */
static void
add_item(CheckState *st)
{
	if (++innermost(st)->items > JSONB_MAX_ITEMS)
		check_fail(st, R_TOO_BIG);
}

/* Records the type of a value for the shape check, before it is entered. */
static void
value_seen(CheckState *st, JsonTokenType type)
{
	if (st->depth == 0)
		st->root = type;
	if (st->role == ROLE_DATA)
	{
		/* a later "data" replaces an earlier one, as in jsonb */
		st->data = type;
		st->data_empty = (type == JSON_TOKEN_NULL);
		st->company = JSON_TOKEN_INVALID;
	}
	else if (st->role == ROLE_COMPANY)
		st->company = type;
}

/* Opens an array or object. */
static void
container_start(CheckState *st, JsonTokenType type)
{
	OpenContainer *c;

	value_seen(st, type);
	if (++st->depth > ENRICH_MAX_JSON_DEPTH)
	{
		/* the prescan makes this impossible */
		check_fail(st, R_DEEP);
		return;
	}
	c = innermost(st);
	c->is_data = (st->role == ROLE_DATA);
	c->items = 0;
	c->size = JSONB_HEADER;
	st->role = ROLE_OTHER;
}

/* Closes an array or object and counts it into the one around it. */
static void
container_end(CheckState *st)
{
	OpenContainer *c = innermost(st);
	int64		size = c->size;

	if (st->depth-- > ENRICH_MAX_JSON_DEPTH)
		return;
	if (c->is_data)
		st->data_empty = (c->items == 0);
	add_value(st, JSONB_ALIGN_PAD + size);
}

/* json_struct_action for object_start. */
static void
cb_object_start(void *state)
{
	container_start((CheckState *) state, JSON_TOKEN_OBJECT_START);
}

/* json_struct_action for array_start. */
static void
cb_array_start(void *state)
{
	container_start((CheckState *) state, JSON_TOKEN_ARRAY_START);
}

/* json_struct_action for object_end and array_end. */
static void
cb_container_end(void *state)
{
	container_end((CheckState *) state);
}

/* json_aelem_action: an array element is about to come. */
static void
cb_array_element_start(void *state, bool isnull)
{
	add_item((CheckState *) state);
}

/* json_ofield_action: counts the member and notes the ones the shape needs. */
static void
cb_object_field_start(void *state, char *fname, bool isnull)
{
	CheckState *st = (CheckState *) state;

	add_item(st);
	add_value(st, strlen(fname));
	st->role = ROLE_OTHER;
	if (st->depth == 1 && strcmp(fname, "data") == 0)
		st->role = ROLE_DATA;
	else if (st->depth == 2 && innermost(st)->is_data &&
			 strcmp(fname, "company") == 0)
		st->role = ROLE_COMPANY;
	pfree(fname);
}

/* json_scalar_action: checks numbers and sizes. */
static void
cb_scalar(void *state, char *token, JsonTokenType type)
{
	CheckState *st = (CheckState *) state;
	int64		bytes = 0;

	value_seen(st, type);
	st->role = ROLE_OTHER;
	if (type == JSON_TOKEN_STRING)
		bytes = strlen(token);
	else if (type == JSON_TOKEN_NUMBER)
	{
		if (!number_fits(token, &bytes))
			check_fail(st, R_NUMBER);
		bytes += JSONB_ALIGN_PAD;
	}
	add_value(st, bytes);
	pfree(token);
}

/* The verdict on the shape of a parsed body; NULL when it fits. */
static const char *
shape_verdict(const CheckState *st, EnrichResponseShape shape, bool *no_match)
{
	if (shape == RESPONSE_ANY_JSON)
		return NULL;
	if (st->root != JSON_TOKEN_OBJECT_START)
		return R_NOT_OBJECT;
	if (shape == RESPONSE_LEADLEX)
	{
		if (st->data != JSON_TOKEN_OBJECT_START)
			return R_NO_DATA;
		if (st->company != JSON_TOKEN_OBJECT_START)
			return R_NO_COMPANY;
		return NULL;
	}
	if (st->data == JSON_TOKEN_INVALID)
		return R_DATA_MISSING;
	if (st->data_empty)
		*no_match = true;
	else if (st->data != JSON_TOKEN_OBJECT_START)
		return R_DATA_NOT_OBJECT;
	return NULL;
}

/* Parses a body already found to be UTF-8, shallow and NUL-free. */
static const char *
parse_body(const char *body, size_t len, EnrichResponseShape shape,
		   bool *no_match)
{
	CheckState *st = palloc0(sizeof(CheckState));
	JsonSemAction sem = {0};
	JsonLexContext *lex;
	JsonParseErrorType perr;
	const char *reason;

	st->data = JSON_TOKEN_INVALID;
	st->company = JSON_TOKEN_INVALID;
	sem.semstate = st;
	sem.object_start = cb_object_start;
	sem.object_end = cb_container_end;
	sem.array_start = cb_array_start;
	sem.array_end = cb_container_end;
	sem.object_field_start = cb_object_field_start;
	sem.array_element_start = cb_array_element_start;
	sem.scalar = cb_scalar;

	/* with de-escaped strings: that is where \u0000 is found */
	lex = makeJsonLexContextCstringLen((char *) body, (int) len, PG_UTF8, true);
	perr = pg_parse_json(lex, &sem);
	if (st->reason != NULL)
		reason = st->reason;
	else if (perr == JSON_UNICODE_CODE_POINT_ZERO)
		reason = R_NUL_ESCAPE;
	else if (perr != JSON_SUCCESS)
		reason = R_JSON;
	else
		reason = shape_verdict(st, shape, no_match);
	pfree(st);
	return reason;
}

/*
 * Checks a response body for a database of the given encoding.  Returns
 * NULL when jsonb_in will take it and it has the shape asked for, else why
 * not (a phrase such as "the response is not valid JSON").  *no_match is
 * set for a Slintel answer whose "data" is null, {} or [].  Never throws
 * for bad input.
 */
const char *
enrich_response_check(const char *body, size_t len, int encoding,
					  EnrichResponseShape shape, bool *no_match)
{
	const char *reason;

	*no_match = false;
	if (body == NULL || len == 0)
		return R_EMPTY;
	if (len > (size_t) INT_MAX)
		return R_TOO_BIG;
	if (memchr(body, '\0', len) != NULL)
		return R_NUL;
	if (pg_encoding_verifymbstr(PG_UTF8, body, (int) len) != (int) len)
		return R_UTF8;
	if ((reason = prescan(body, len, encoding != PG_UTF8)) != NULL)
		return reason;
	return parse_body(body, len, shape, no_match);
}
