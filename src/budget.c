/*-------------------------------------------------------------------------
 *
 * budget.c
 *	  The bookkeeping of a credit budget: its period, what is left, what
 *	  the views show.
 *
 * A budget (EnrichBudget) is a provider's or a role's; credits.c and
 * credits_role.c keep them in shared memory and call these with the lock
 * held.  Nothing here locks, reads a table or throws.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "base.h"

/* Moves a budget's period forward if it has ended.  Caller holds the lock. */
void
enrich_budget_roll(EnrichBudget *b, TimestampTz now)
{
	if (b->credit_limit < 0 || b->credit_period_us <= 0)
		return;
	if (now >= b->period_start + b->credit_period_us)
	{
		int64		n = (now - b->period_start) / b->credit_period_us;

		b->period_start += n * b->credit_period_us;
		b->credits_used = 0;
		b->used_saved = 0;
		b->used_ledgers = 0;
		b->usage_version++;
	}
}

/* Credits of a budget that may still be reserved now; -1 means no limit. */
int64
enrich_budget_left(const EnrichBudget *b)
{
	if (b->credit_limit < 0)
		return -1;
	return Max(b->credit_limit - b->credits_used - b->credits_reserved, 0);
}

/*
 * Sets a budget's limit (-1: none) and period (0: a total).  A new period
 * starts now, unless the period is the one it had: then what was used in
 * it still counts.  What is reserved stays reserved.  Caller holds the
 * lock.
 */
void
enrich_budget_set(EnrichBudget *b, int64 credits, int64 per_us, TimestampTz now)
{
	if (per_us <= 0 || per_us != b->credit_period_us)
	{
		/* a new period: nothing of earlier server lives counts in it */
		b->period_start = now;
		b->credits_used = 0;
		b->used_saved = 0;
		b->used_ledgers = 0;
	}
	b->credit_limit = credits;
	b->credit_period_us = per_us;
	b->usage_version++;
}

/* What the views show of a budget, as it is now (its period may have turned). */
void
enrich_budget_view(const EnrichBudget *b, TimestampTz now, EnrichBudgetView *v)
{
	v->limited = b->credit_limit >= 0;
	v->limit = b->credit_limit;
	v->period_us = b->credit_period_us;
	v->used = b->credits_used;
	v->reserved = b->credits_reserved;
	v->remaining = Max(b->credit_limit - b->credits_used - b->credits_reserved, 0);
	v->resets = v->limited && b->credit_period_us > 0;
	v->resets_at = b->period_start + b->credit_period_us;
	if (v->resets && v->resets_at <= now)
	{
		/* the period has turned but nobody has asked since */
		v->used = 0;
		v->remaining = Max(b->credit_limit - b->credits_reserved, 0);
		v->resets_at = b->period_start +
			((now - b->period_start) / b->credit_period_us + 1) * b->credit_period_us;
	}
}

/*
 * Adds n charges of earlier server lives, found in a ledger, to a
 * budget's use: the use of earlier lives is the most of what was saved
 * and what the ledgers counted so far.  Caller holds the lock.
 */
void
enrich_budget_add_earlier(EnrichBudget *b, int64 n)
{
	int64		before = Max(b->used_saved, b->used_ledgers);

	b->used_ledgers += n;
	b->credits_used += Max(b->used_saved, b->used_ledgers) - before;
	b->usage_version++;
}
