/*-------------------------------------------------------------------------
 *
 * fuzz_normalize.c
 *	  libFuzzer target for the key normalisers of src/normalize_domain.c
 *	  and src/normalize_linkedin.c (with src/normalize.c), built as
 *	  fuzz_domain, and with -DFUZZ_LINKEDIN as fuzz_linkedin.
 *
 * Beyond not crashing under AddressSanitizer and UBSan, every run checks
 * what the callers rely on: a key or a reason, never both or neither; a key
 * of printable ASCII in the canonical form; and a key that normalises to
 * itself, since it is what the cache, the queue and the requests use.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_normalize.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "normalize.h"

#include "fuzz.h"

#ifdef FUZZ_LINKEDIN
#define NORMALIZE enrich_normalize_linkedin_str
#define KEY_PREFIX "https://www.linkedin.com/in/"
#define KEY_MAX (2048 * 3)
#define KEY_PERCENT true
#else
#define NORMALIZE enrich_normalize_domain_str
#define KEY_PREFIX ""
#define KEY_MAX 253
#define KEY_PERCENT false
#endif

#define HEX_UPPER "0123456789ABCDEF"

/*
 * Checks the form of a key: the prefix, then lower-case letters, digits,
 * '-', '.' and (LinkedIn) '_' or %XX with upper-case hex digits.
 */
static void
check_key(const char *key, const uint8_t *data, size_t size)
{
	const char *p = key + strlen(KEY_PREFIX);

	FUZZ_ASSERT(strncmp(key, KEY_PREFIX, strlen(KEY_PREFIX)) == 0,
				"the key has the canonical prefix", data, size);
	FUZZ_ASSERT(*p != '\0' && strlen(key) <= KEY_MAX,
				"the key has a sensible length", data, size);
	for (; *p; p++)
	{
		if (KEY_PERCENT && p[0] == '%' && strchr(HEX_UPPER, p[1]) && p[1] &&
			strchr(HEX_UPPER, p[2]) && p[2])
			p += 2;
		else
			FUZZ_ASSERT((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
						*p == '-' || *p == '.' || (KEY_PERCENT && *p == '_'),
						"the key has only the characters of its canonical form",
						data, size);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *input = fuzz_cstring(data, size);
	const char *reason = NULL;
	char	   *key = NORMALIZE(input, &reason);

	FUZZ_ASSERT((key == NULL) != (reason == NULL),
				"a key or a reason, never both or neither", data, size);
	if (key != NULL)
	{
		const char *again_reason = NULL;
		char	   *again;

		check_key(key, data, size);
		again = NORMALIZE(key, &again_reason);
		FUZZ_ASSERT(again != NULL && strcmp(again, key) == 0,
					"the key normalises to itself", data, size);
	}
	free(input);
	fuzz_arena_reset();
	return 0;
}
