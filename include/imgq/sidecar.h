/*
 * sidecar.h - the JSON document stored next to each image object: what made the image.
 *
 * Object KEY gets a sidecar object KEY.json (imgq_sidecar_key) holding the request that made
 * it (prompt, model, size, quality, seed, negative prompt, guidance, reference images as the
 * job gave them), the image's place in the job (n, index), what was stored (format,
 * compression, width, height, bytes), what it cost (the provider's usage object and
 * cost_micros), when (created) and by which imgq.  Anyone with read access to the bucket can
 * then tell where an image came from without Redis, which forgets ended jobs after the
 * retention period.
 *
 * The document is deterministic: fields always in the order below, absent optional fields
 * left out (never null, except usage when the provider returned none), so the same inputs
 * give the same bytes and a re-run of a job (at-least-once delivery) rewrites an identical
 * sidecar.  Layout (2-space indent, UTF-8, trailing newline):
 *
 *   key             the image's object key
 *   prompt          as submitted (not whitespace-normalised)
 *   model           catalog model that made it; requested_model: the alias the job used, if any
 *   size            "WxH" as requested; quality: when the model has one
 *   n, index        images the job asked for, and this one's 0-based index
 *   seed, negative_prompt, guidance_scale      when the job set them
 *   background      when set
 *   references      the job's reference images as given (s3://, https://, data:); mask
 *   format          "webp", "png" or "jpeg"; compression: the job's output_compression
 *                   (quality of lossy webp/jpeg), left out for png
 *   width, height, bytes   of the stored object
 *   usage           the provider's usage object (or array, one per call of a fan-out), or null
 *   cost_micros     what the caller says the image cost, in micro-dollars (the worker passes
 *                   the job's cost; an image reused through dedup costs 0)
 *   created         ISO 8601 UTC time given by the caller, when not NULL
 *   client_id       the job's "id", when set; metadata: the job's metadata, when set
 *   imgq            {"version": IMGQ_VERSION, "sidecar": IMGQ_SIDECAR_SCHEMA}
 *
 * Pure functions: no I/O, never block; memory exhaustion aborts (alloc.h).
 */
#ifndef IMGQ_SIDECAR_H
#define IMGQ_SIDECAR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "imgq/job.h"

/* imgq's version, as CMakeLists.txt's project(imgq VERSION ...) (a unit test keeps them
 * equal); a build may define it instead. */
#ifndef IMGQ_VERSION
#define IMGQ_VERSION "0.1.0"
#endif
/* Version of the sidecar layout above; raised when a field changes meaning or goes away. */
#define IMGQ_SIDECAR_SCHEMA 1
/* Content-Type to store a sidecar with. */
#define IMGQ_SIDECAR_CONTENT_TYPE "application/json"

/*
 * The sidecar of image 'index' (0-based) of the job 'spec', stored at 'key' as 'format'
 * ("webp", "png", "jpeg"), 'width' x 'height', 'bytes' long.  'usage' (borrowed, may be NULL)
 * is copied in as it is; 'created_iso' may be NULL (then left out).  Returns a new
 * NUL-terminated string (free()), or NULL for a bad argument: spec, key or format NULL or
 * empty, spec without prompt or model, index < 0, negative width or height, or key, prompt,
 * model or format not valid UTF-8 (they cannot be written as JSON).
 */
char *imgq_sidecar_json(const struct imgq_job_spec *spec, int index, const char *key, int width,
                        int height, size_t bytes, const char *format, const json_t *usage,
                        int64_t cost_micros, const char *created_iso);

/*
 * The sidecar's object key for an object key: "KEY.json" (a new string, free()).  NULL if
 * object_key is NULL or empty, or the result would exceed S3's 1024-byte key limit.
 */
char *imgq_sidecar_key(const char *object_key);

#endif
