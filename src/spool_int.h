/*-------------------------------------------------------------------------
 *
 * spool_int.h
 *	  What the two files of the spool share: spool.c (writing) and
 *	  spool_read.c (reading).  Included only by those two.
 *
 * IDENTIFICATION
 *	  src/spool_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SPOOL_INT_H
#define SPOOL_INT_H

#include "storage.h"

#define SPOOL_DIR "pg_enrich"

/* ---- spool.c ---- */
struct SpoolEntry;
extern void enrich_spool_key_path(EnrichKind kind, const char *key, char *path);
extern struct SpoolEntry *enrich_spool_remember(const char *path);

#endif							/* SPOOL_INT_H */
