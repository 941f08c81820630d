/*
 * dedup.h - the dedup key of one image (DESIGN.md decision 9) and the storage key built on it.
 *
 * SHA-256 over a canonical serialisation of everything that determines the image: model,
 * prompt with whitespace normalised, size, quality, seed, negative prompt, the reference
 * images and mask as the job gives them (s3://, https:// or data: strings), output format and
 * compression, background, the image's index within n, and guidance_scale when set (appended
 * last, so keys of jobs without it are unchanged).
 * Objects are stored under this key, so a re-run of a job (at-least-once delivery) writes the
 * same object again instead of a second one.  Pure functions; never block.
 */
#ifndef IMGQ_DEDUP_H
#define IMGQ_DEDUP_H

#include <stddef.h>

#include "imgq/job.h"

/* Collapse whitespace runs to one space and trim; returns a new string. */
char *imgq_prompt_normalize(const char *prompt);
/* Lowercase hex SHA-256 dedup key of image 'index' (0-based) of the job. */
void imgq_dedup_key(const struct imgq_job_spec *spec, int index, char out[65]);
/* Object key "PREFIXimages/ab/abcdef....EXT" for a dedup key; a new string. */
char *imgq_object_key(const char *key_prefix, const char *dedup_key, const char *ext);

#endif
