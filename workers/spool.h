/*
 * spool.h - where a worker keeps the encoded bytes of images it paid for and S3 has not taken
 * yet, so that a storage outage never makes a job pay the provider again (run.c's storing).
 *
 * The spool is keyed by the object's S3 key, which is content-addressed (dedup.h): one key,
 * one content, so a key found in the spool is exactly what its job would have stored.  It
 * keeps two accounts, each with a cap:
 *
 *   memory  bytes that jobs waiting to store hold in RAM (spool_mem_take / _force / _give).
 *           The spool only counts them; the jobs own the buffers.
 *   disk    files in the spool directory (spool_write / spool_read / spool_remove), when one
 *           is configured: a durable copy that survives the worker, and that lets a job give
 *           its memory back while it waits.
 *
 * What a caller does when both are full is its own decision (run.c keeps the bytes in memory
 * over the cap and the worker claims nothing new until it is under again; see README.md):
 * the spool never drops bytes it was given.
 *
 * Files: DIR/<hex SHA-256 of the key>.spool, written as a temporary file in DIR, flushed
 * (fsync) and renamed over the final name, so a file under its final name is always whole.
 * Content: a text header, then the payload:
 *
 *   imgq-spool 1\n key KEY\n type CONTENT-TYPE\n length N\n sha256 HEX\n \n PAYLOAD
 *
 * A file whose header, length, checksum or name does not agree is damaged: it is refused
 * (IMGQ_EPARSE with the reason), renamed to NAME.damaged (kept for an operator, never used or
 * counted again) and logged at ERROR.  Temporary files left by a crash are removed at open.
 *
 * Threads: every function may be called from any thread (one mutex inside).  Functions that
 * touch files block (spool_open, spool_write, spool_read, spool_list, spool_remove,
 * spool_has): call them on the thread pool, except spool_open at start-up and spool_has /
 * spool_remove, which are one stat / one unlink.  The accounting functions never block.
 *
 * Errors are imgq error codes (error.h); 'why' (may be NULL) gets a sentence naming the file
 * and what is wrong.  Out of memory aborts (alloc.h).
 */
#ifndef IMGQ_WORKER_SPOOL_H
#define IMGQ_WORKER_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"

struct spool;

#define SPOOL_DEFAULT_MAX_BYTES ((uint64_t)10 << 30)     /* disk: 10 GiB */
#define SPOOL_DEFAULT_MEMORY_BYTES ((uint64_t)256 << 20) /* memory: 256 MiB */
#define SPOOL_KEY_MAX 1024                               /* longest object key (S3's own limit) */

/*
 * A new spool in *out.  dir NULL or "": memory accounting only (every file function answers
 * IMGQ_ECONFIG).  Otherwise dir is created (mode 0700) if missing, temporary files of an
 * earlier run are removed, and the .spool files found count toward max_disk (they may exceed
 * it: nothing is dropped; writes wait for room).  IMGQ_EIO when dir cannot be created or read.
 */
IMGQ_MUST_CHECK int spool_open(struct spool **out, const char *dir, uint64_t max_disk,
                               uint64_t max_mem, char *why, size_t whylen);
/* Frees the spool; the files stay.  NULL is a no-op. */
void spool_free(struct spool *sp);
/* The directory (NULL when memory only): borrowed, valid until spool_free. */
const char *spool_dir(const struct spool *sp);

/* Memory: count len bytes if they fit under the cap (true), else count nothing (false). */
bool spool_mem_take(struct spool *sp, size_t len);
/* Memory: count len bytes even over the cap (bytes nobody may drop). */
void spool_mem_force(struct spool *sp, size_t len);
/* Memory: len bytes counted by take or force are gone. */
void spool_mem_give(struct spool *sp, size_t len);
/* Memory counted is above the cap (a worker then claims no new jobs). */
bool spool_mem_over(struct spool *sp);
/* What is counted now. */
uint64_t spool_mem_used(struct spool *sp);
uint64_t spool_disk_used(struct spool *sp);

/*
 * Write the object 'key' (content type 'type', len bytes at data; all borrowed) to the spool
 * directory, atomically.  An existing file of the same key is replaced.  IMGQ_ECONFIG (no
 * directory), IMGQ_ERANGE (the disk cap has no room for it), IMGQ_EINVAL (empty key or type,
 * a key longer than SPOOL_KEY_MAX, a newline in either), IMGQ_EIO (the file system).  Blocks.
 */
IMGQ_MUST_CHECK int spool_write(struct spool *sp, const char *key, const char *type,
                                const void *data, size_t len, char *why, size_t whylen);

/*
 * Read the object 'key' back: *data (new buffer, len bytes, the caller frees it) and, when type
 * is not NULL, *type (new string).  IMGQ_ENOTFOUND (no file), IMGQ_EPARSE (damaged: refused,
 * renamed aside and logged), IMGQ_EIO, IMGQ_ECONFIG.  Blocks.
 */
IMGQ_MUST_CHECK int spool_read(struct spool *sp, const char *key, uint8_t **data, size_t *len,
                               char **type, char *why, size_t whylen);

/* Is there a file for 'key'?  (Not verified: spool_read does that.)  One stat. */
bool spool_has(struct spool *sp, const char *key);

/* The object 'key' is stored: its file goes.  0, or IMGQ_ENOTFOUND / IMGQ_EIO.  One unlink. */
int spool_remove(struct spool *sp, const char *key);

/*
 * The keys of every file in the spool directory, read from their headers: *keys is a new
 * array of n new strings (free with spool_list_free).  A file whose header is damaged is
 * refused as spool_read does (and not listed).  IMGQ_ECONFIG, IMGQ_EIO.  Blocks.
 */
IMGQ_MUST_CHECK int spool_list(struct spool *sp, char ***keys, size_t *n);
void spool_list_free(char **keys, size_t n);

/*
 * The parser of a spool file's whole content (buf, len bytes; borrowed): on success *key and
 * *type are new strings and *payload / *payload_len point into buf.  IMGQ_EPARSE with why
 * when the magic, a field, the length or the checksum is wrong.  Pure: no file, no lock.
 */
struct spool_entry {
    char *key;
    char *type;
    const uint8_t *payload;
    size_t payload_len;
};
IMGQ_MUST_CHECK int spool_parse(const uint8_t *buf, size_t len, struct spool_entry *out, char *why,
                                size_t whylen);
void spool_entry_clear(struct spool_entry *e);

#endif
