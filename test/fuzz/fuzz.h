/*-------------------------------------------------------------------------
 *
 * fuzz.h
 *	  What the libFuzzer targets of enrich share: the palloc arena of
 *	  pg_shim.c and a way to stop on a broken promise.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENRICH_FUZZ_H
#define ENRICH_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Frees everything palloc'd since the last reset, like a context reset. */
extern void fuzz_arena_reset(void);

/* Reports a broken promise of the code under test and aborts. */
extern void fuzz_fail(const char *what, const uint8_t *data, size_t size)
			pg_attribute_noreturn();

/* Checks cond; on failure reports what and aborts (a crash to libFuzzer). */
#define FUZZ_ASSERT(cond, what, data, size) \
	do { if (!(cond)) fuzz_fail((what), (data), (size)); } while (0)

/* A NUL-terminated malloc'd copy of the input, cut at an inner NUL. */
extern char *fuzz_cstring(const uint8_t *data, size_t size);

/* libFuzzer's entry point, defined by each target. */
extern int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif							/* ENRICH_FUZZ_H */
