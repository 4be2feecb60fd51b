/*-------------------------------------------------------------------------
 *
 * pg_shim.c
 *	  palloc and friends for the fuzz harness, as an arena that each run
 *	  frees in one go.
 *
 * The code under test allocates with palloc and, in the backend, relies on
 * a memory context reset to free what it leaves behind (PostgreSQL's JSON
 * parser does not free its allocations when it stops at an error).  This
 * arena plays the context: every chunk is its own malloc block, so
 * AddressSanitizer still sees every overflow and use after free, and
 * fuzz_arena_reset() frees the lot after each input.  Memory that libraries
 * malloc (libcurl, libidn2) is not in the arena, so LeakSanitizer still
 * finds what the code under test forgets to give back to them.
 *
 * Defining these symbols keeps fe_memutils.o of libpgcommon out of the
 * link; the rest of libpgcommon (JSON parser, StringInfo, encodings) uses
 * them.  As in the backend, a request above MaxAllocSize is a failure (an
 * ERROR there), reported here as a crash.
 *
 * IDENTIFICATION
 *	  test/fuzz/pg_shim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "fuzz.h"

/* The backend's limit for one palloc (utils/memutils.h). */
#define SHIM_MAX_ALLOC ((Size) 0x3fffffff)

/* The header in front of every chunk; 32 bytes keep the data aligned. */
typedef struct ShimChunk
{
	struct ShimChunk *prev;
	struct ShimChunk *next;
	Size		size;
	Size		unused;
} ShimChunk;

static ShimChunk *shim_chunks = NULL;

/* Links a fresh chunk in and returns its data. */
static void *
shim_link(ShimChunk *c, Size size)
{
	c->size = size;
	c->prev = NULL;
	c->next = shim_chunks;
	if (shim_chunks)
		shim_chunks->prev = c;
	shim_chunks = c;
	return c + 1;
}

/* Unlinks the chunk of a palloc'd pointer and returns it. */
static ShimChunk *
shim_unlink(void *pointer)
{
	ShimChunk  *c = (ShimChunk *) pointer - 1;

	if (c->prev)
		c->prev->next = c->next;
	else
		shim_chunks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	return c;
}

/* Refuses what the backend would refuse, then allocates. */
static void *
shim_alloc(Size size, int flags)
{
	ShimChunk  *c;

	if (size > SHIM_MAX_ALLOC)
	{
		fprintf(stderr, "palloc of %zu bytes: an ERROR in the backend\n", size);
		abort();
	}
	c = (flags & MCXT_ALLOC_ZERO) ? calloc(1, sizeof(ShimChunk) + size) :
		malloc(sizeof(ShimChunk) + size);
	if (c == NULL)
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		fprintf(stderr, "out of memory\n");
		abort();
	}
	return shim_link(c, size);
}

void *
palloc(Size size)
{
	return shim_alloc(size, 0);
}

void *
palloc0(Size size)
{
	return shim_alloc(size, MCXT_ALLOC_ZERO);
}

void *
palloc_extended(Size size, int flags)
{
	return shim_alloc(size, flags);
}

void *
repalloc(void *pointer, Size size)
{
	ShimChunk  *c;

	if (size > SHIM_MAX_ALLOC)
	{
		fprintf(stderr, "repalloc to %zu bytes: an ERROR in the backend\n", size);
		abort();
	}
	c = realloc(shim_unlink(pointer), sizeof(ShimChunk) + size);
	if (c == NULL)
	{
		fprintf(stderr, "out of memory\n");
		abort();
	}
	return shim_link(c, size);
}

void
pfree(void *pointer)
{
	free(shim_unlink(pointer));
}

char *
pstrdup(const char *in)
{
	return pnstrdup(in, strlen(in));
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

/* Frees every chunk allocated since the last reset. */
void
fuzz_arena_reset(void)
{
	while (shim_chunks)
		free(shim_unlink(shim_chunks + 1));
}

/* Prints the input that broke a promise, then aborts for libFuzzer. */
void
fuzz_fail(const char *what, const uint8_t *data, size_t size)
{
	fprintf(stderr, "broken promise: %s\ninput (%zu bytes): \"", what, size);
	for (size_t i = 0; i < size && i < 400; i++)
	{
		if (data[i] >= 0x20 && data[i] < 0x7F && data[i] != '"' && data[i] != '\\')
			fputc(data[i], stderr);
		else
			fprintf(stderr, "\\x%02X", data[i]);
	}
	fprintf(stderr, "%s\"\n", size > 400 ? "..." : "");
	abort();
}

/* A NUL-terminated malloc'd copy of the input, cut at an inner NUL. */
char *
fuzz_cstring(const uint8_t *data, size_t size)
{
	char	   *s = malloc(size + 1);

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}
