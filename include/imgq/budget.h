/*
 * budget.h - the C side of spend caps (the atomic side is src/lua/budget.lua).
 *
 * A budget caps what one scope (global, team:T, batch:B, model:M, route:R) spends per window:
 * an hour, day or month of the calendar in a time zone, or a lifetime total.  Redis' Lua has no
 * time zone database, so `imgq budget set` computes here, with the system's zone rules, the
 * zone's UTC-offset transitions for the next IMGQ_BUDGET_TRANSITION_DAYS days and stores them
 * with the budget; the script finds the local calendar period from them.  Re-run
 * `imgq budget set` before they run out (imgq budget list warns).
 *
 * Not thread-safe: conversions set TZ for the duration of a call (the CLI is single-threaded).
 */
#ifndef IMGQ_BUDGET_H
#define IMGQ_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"

/* How far ahead the zone's transitions are computed, and how far back (a month window's start
 * is before now). */
#define IMGQ_BUDGET_TRANSITION_DAYS 730
#define IMGQ_BUDGET_TRANSITION_BACK_DAYS 40

/* IMGQ_EINVAL unless name is "global" or team:/batch:/model:/route: followed by 1-128
 * characters without ',', '|', spaces or control characters. */
int imgq_budget_name_check(const char *name) IMGQ_MUST_CHECK;
/* IMGQ_EINVAL unless window is hour, day, month or total. */
int imgq_budget_window_check(const char *window) IMGQ_MUST_CHECK;

/*
 * The UTC-offset transitions of zone tz between from_ms and to_ms as a new string
 * "epoch_ms:offset_s,epoch_ms:offset_s,...": the first entry is from_ms with the offset in
 * force then, then one entry per change (to the second), and a last entry at to_ms with the
 * offset then (so the string says how far it is valid).  IMGQ_EINVAL for an unknown zone.
 */
int imgq_budget_transitions(const char *tz, int64_t from_ms, int64_t to_ms,
                            char **out) IMGQ_MUST_CHECK;

/*
 * The window of a budget at t_ms: its id ("2026-11-22T14", "2026-11-22", "2026-11", "total")
 * into id, and its start and end in ms (end -1 for total).  The same periods the script uses.
 */
int imgq_budget_window(const char *window, const char *tz, int64_t t_ms, char *id, size_t idlen,
                       int64_t *start_ms, int64_t *end_ms) IMGQ_MUST_CHECK;

/*
 * The budgets a provider call is reserved against, as src/lua/budget.lua's reserve names them:
 * "global", then team:T, batch:B, model:M and route:R for each of team, batch, model and route
 * that is neither NULL nor empty.  Writes the names (new strings: free each) into names and
 * returns how many.
 */
#define IMGQ_BUDGET_SCOPES 5
size_t imgq_budget_scopes(const char *team, const char *batch, const char *model, const char *route,
                          char *names[IMGQ_BUDGET_SCOPES]);

/* t_ms as local time in tz, "2026-11-22T00:00:00+01:00", into buf. */
void imgq_budget_local_time(int64_t t_ms, const char *tz, char *buf, size_t len);

#endif
