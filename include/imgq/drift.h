/*
 * drift.h - catalog drift: a provider billing a call, from its own usage, above the ceiling the
 * catalog gave for it (its token table changed, or the catalog is wrong).
 *
 * The worker reserves a call's ceiling before sending it.  When the settled cost from usage is
 * above what was reserved, the queue (budget_settle in src/lua/lib.lua) records the ratio
 * cost / catalog ceiling for the call's cell (model, quality, size) as millionths ("ppm") in
 * the hash P:{Q}:drift, keeping the highest ratio seen, emits a catalog.drift event and counts
 * it.  Every later reservation of that cell is the catalog's ceiling scaled by that ratio
 * (budget.lua reserve), and `imgq quote` scales its worst cases the same way, so the ceiling
 * adapts upward to the observed maximum on every worker at once.
 *
 * The strings a cell is made of are borrowed; nothing here blocks but imgq_drift_load, which
 * runs one blocking HGETALL on the connection it is given.  Ownership: an imgq_drift owns its
 * cells; imgq_drift_clear frees them.
 */
#ifndef IMGQ_DRIFT_H
#define IMGQ_DRIFT_H

#include <stddef.h>
#include <stdint.h>

#include "imgq/catalog.h"
#include "imgq/error.h"

struct redisContext;
struct imgq_keys;

#define IMGQ_DRIFT_CELL_MAX 192
#define IMGQ_DRIFT_PPM_ONE 1000000

/* The cell "MODEL|QUALITY|WxH" of a call (quality NULL: empty), into buf (truncated to len). */
void imgq_drift_cell(const char *model, const char *quality, int width, int height, char *buf,
                     size_t len);

struct imgq_drift_cell {
    char *cell;    /* "MODEL|QUALITY|WxH" */
    int64_t ppm;   /* highest observed cost / ceiling, in millionths (> 1,000,000) */
    int64_t count; /* overshoots seen */
};

struct imgq_drift {
    struct imgq_drift_cell *cells;
    size_t ncells;
    int64_t events; /* overshoots seen, all cells */
};

/*
 * Read the queue's drift table (P:{Q}:drift) over a connected Redis.  IMGQ_EREDIS if the
 * command fails (err says why); entries that do not parse are skipped.  *out is empty on error.
 */
int imgq_drift_load(struct redisContext *rc, const struct imgq_keys *keys, struct imgq_drift *out,
                    char *err, size_t errlen) IMGQ_MUST_CHECK;

/* The cell's observed ratio in millionths, or IMGQ_DRIFT_PPM_ONE when none is recorded
 * (d may be NULL). */
int64_t imgq_drift_ppm(const struct imgq_drift *d, const char *cell);

/*
 * A ceiling 'amount' whose output-token part is 'part', with that part scaled by ppm/1,000,000
 * (rounded up to the micro-dollar), as budget.lua scales a reservation: the prompt and the
 * reference images are bounded by the request itself, only the output tokens drift.  ppm <=
 * 1,000,000 leaves amount as it is.  IMGQ_ERANGE on overflow.
 */
int imgq_drift_scale(imgq_micros amount, imgq_micros part, int64_t ppm,
                     imgq_micros *out) IMGQ_MUST_CHECK;

/* The output-token part of the ceiling of a call of shape s on m (the table's output tokens
 * for its images, priced on route); 0 for a model billed per image. */
int imgq_drift_output_part(const struct imgq_model *m, const struct imgq_route *route,
                           const struct imgq_request_shape *s, imgq_micros *out) IMGQ_MUST_CHECK;

/* What a call's usage says of the cell's drift: its output tokens over the catalog's table for
 * its images, in millionths rounded up; 0 when that cannot be said (a model billed per image,
 * no table row, no images). */
int64_t imgq_drift_observed_ppm(const struct imgq_model *m, const char *quality, int width,
                                int height, int64_t images, int64_t image_out);

void imgq_drift_clear(struct imgq_drift *d);

#endif
