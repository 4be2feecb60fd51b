/*-------------------------------------------------------------------------
 *
 * response_verdict.c
 *	  Prints the verdict of enrich_response_check() on files, for
 *	  jsonb-agree.sh to hold against the server's jsonb_in.
 *
 *	  response_verdict FILE...
 *
 * One line per file: the file name, a tab, and "ok" or the reason the body
 * is refused (as any JSON, for a UTF-8 database).
 *
 * IDENTIFICATION
 *	  test/fuzz/response_verdict.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "mb/pg_wchar.h"

#include "response.h"

#include "fuzz.h"

/* Reads a whole file into a malloc'd buffer; exits on failure. */
static char *
read_file(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf = NULL;
	size_t		cap = 0;
	size_t		n;

	*len = 0;
	if (f == NULL)
	{
		perror(path);
		exit(1);
	}
	do
	{
		if (*len == cap && (buf = realloc(buf, cap = cap * 2 + 65536)) == NULL)
			abort();
		n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
	} while (n > 0);
	fclose(f);
	return buf;
}

int
main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
	{
		size_t		len;
		char	   *body = read_file(argv[i], &len);
		bool		no_match;
		const char *reason = enrich_response_check(body, len, PG_UTF8,
												   RESPONSE_ANY_JSON, &no_match);

		printf("%s\t%s\n", argv[i], reason ? reason : "ok");
		free(body);
		fuzz_arena_reset();
	}
	return 0;
}
