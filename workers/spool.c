/* spool.c - the worker's spool of paid-for bytes S3 has not taken yet (see spool.h). */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "imgq/alloc.h"
#include "imgq/log.h"

#define MAGIC "imgq-spool 1\n"
#define TYPE_MAX 255
#define SUFFIX ".spool"
#define TMP_PREFIX ".tmp."

struct spool {
    char *dir; /* NULL: memory only */
    uint64_t max_disk, max_mem;
    uint64_t disk_used, mem_used;
    unsigned long tmp_seq; /* temporary file names, with the pid */
    uv_mutex_t mu;
};

static void sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        memset(md, 0, sizeof md); /* cannot happen with libcrypto's SHA-256; never matches */
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* DIR/<sha256(key)>.spool: a new string. */
static char *file_of(const struct spool *sp, const char *key)
{
    char hex[65];
    sha256_hex(key, strlen(key), hex);
    return imgq_xasprintf("%s/%s" SUFFIX, sp->dir, hex);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *dir)
{
    char *p = imgq_xstrdup(dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            rc = -1;
            break;
        }
        *s = c;
        if (!c)
            break;
    }
    free(p);
    if (rc == 0) {
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            rc = -1;
        }
    }
    return rc;
}

int spool_open(struct spool **out, const char *dir, uint64_t max_disk, uint64_t max_mem, char *why,
               size_t whylen)
{
    *out = NULL;
    struct spool *sp = imgq_xcalloc(1, sizeof *sp);
    sp->max_disk = max_disk;
    sp->max_mem = max_mem;
    if (uv_mutex_init(&sp->mu) != 0) {
        free(sp);
        return imgq_fail(IMGQ_EIO, why, whylen, "spool: cannot create a mutex");
    }
    if (!dir || !*dir) {
        *out = sp;
        return 0;
    }
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    sp->dir = imgq_xstrndup(dir, n);
    if (make_dirs(sp->dir) != 0) {
        int e = errno;
        spool_free(sp);
        return imgq_fail(IMGQ_EIO, why, whylen, "spool directory %.*s: cannot create it: %s",
                         (int)n, dir, strerror(e));
    }
    DIR *d = opendir(sp->dir);
    if (!d) {
        int e = errno;
        spool_free(sp);
        return imgq_fail(IMGQ_EIO, why, whylen, "spool directory %.*s: cannot read it: %s", (int)n,
                         dir, strerror(e));
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        bool tmp = strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0;
        if (!tmp && !ends_with(de->d_name, SUFFIX))
            continue;
        char *path = imgq_xasprintf("%s/%s", sp->dir, de->d_name);
        struct stat st;
        if (tmp) {
            /* A write that never reached its rename: its job still had the bytes, or its
             * worker died before they were safe; either way the file is incomplete. */
            if (unlink(path) == 0)
                imgq_log(IMGQ_LOG_WARN, "spool", "removed %s: an unfinished write", path);
        } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            sp->disk_used += (uint64_t)st.st_size;
        }
        free(path);
    }
    closedir(d);
    *out = sp;
    return 0;
}

void spool_free(struct spool *sp)
{
    if (!sp)
        return;
    uv_mutex_destroy(&sp->mu);
    free(sp->dir);
    free(sp);
}

const char *spool_dir(const struct spool *sp)
{
    return sp->dir;
}

bool spool_mem_take(struct spool *sp, size_t len)
{
    uv_mutex_lock(&sp->mu);
    bool fits = sp->mem_used + len <= sp->max_mem;
    if (fits)
        sp->mem_used += len;
    uv_mutex_unlock(&sp->mu);
    return fits;
}

void spool_mem_force(struct spool *sp, size_t len)
{
    uv_mutex_lock(&sp->mu);
    sp->mem_used += len;
    uv_mutex_unlock(&sp->mu);
}

void spool_mem_give(struct spool *sp, size_t len)
{
    uv_mutex_lock(&sp->mu);
    sp->mem_used = sp->mem_used >= len ? sp->mem_used - len : 0;
    uv_mutex_unlock(&sp->mu);
}

bool spool_mem_over(struct spool *sp)
{
    uv_mutex_lock(&sp->mu);
    bool over = sp->mem_used > sp->max_mem;
    uv_mutex_unlock(&sp->mu);
    return over;
}

uint64_t spool_mem_used(struct spool *sp)
{
    uv_mutex_lock(&sp->mu);
    uint64_t v = sp->mem_used;
    uv_mutex_unlock(&sp->mu);
    return v;
}

uint64_t spool_disk_used(struct spool *sp)
{
    uv_mutex_lock(&sp->mu);
    uint64_t v = sp->disk_used;
    uv_mutex_unlock(&sp->mu);
    return v;
}

static void disk_adjust(struct spool *sp, int64_t delta)
{
    uv_mutex_lock(&sp->mu);
    if (delta < 0 && (uint64_t)-delta > sp->disk_used)
        sp->disk_used = 0;
    else
        sp->disk_used = (uint64_t)((int64_t)sp->disk_used + delta);
    uv_mutex_unlock(&sp->mu);
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
}

static bool field_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max && !strchr(s, '\n');
}

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int spool_write(struct spool *sp, const char *key, const char *type, const void *data, size_t len,
                char *why, size_t whylen)
{
    if (!sp->dir)
        return imgq_fail(IMGQ_ECONFIG, why, whylen, "no spool directory is configured");
    if (!key || !type || !field_ok(key, SPOOL_KEY_MAX) || !field_ok(type, TYPE_MAX))
        return imgq_fail(IMGQ_EINVAL, why, whylen,
                         "spool: key and content type must be non-empty single lines");
    char hex[65];
    sha256_hex(data, len, hex);
    char *hdr =
        imgq_xasprintf(MAGIC "key %s\ntype %s\nlength %zu\nsha256 %s\n\n", key, type, len, hex);
    size_t hlen = strlen(hdr);
    uint64_t total = hlen + (uint64_t)len;
    char *path = file_of(sp, key);
    int64_t old = file_size(path);

    /* Room first, counted before the write so that writers on other threads see it taken. */
    uv_mutex_lock(&sp->mu);
    uint64_t after =
        sp->disk_used - (old > 0 && (uint64_t)old <= sp->disk_used ? (uint64_t)old : 0);
    bool room = after + total <= sp->max_disk;
    if (room)
        sp->disk_used += total;
    unsigned long seq = sp->tmp_seq++;
    uv_mutex_unlock(&sp->mu);
    if (!room) {
        free(hdr);
        free(path);
        return imgq_fail(IMGQ_ERANGE, why, whylen,
                         "spool directory %s is full (%" PRIu64 " of %" PRIu64
                         " bytes): no room for %" PRIu64 " bytes of %s",
                         sp->dir, spool_disk_used(sp), sp->max_disk, total, key);
    }
    char *tmp = imgq_xasprintf("%s/" TMP_PREFIX "%.16s.%ld.%lu", sp->dir, hex, (long)getpid(), seq);
    int rc = IMGQ_EIO, e = 0;
    const char *step = "create";
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        step = "write";
        if (write_all(fd, hdr, hlen) == 0 && write_all(fd, data, len) == 0) {
            step = "flush";
            if (fsync(fd) == 0)
                rc = 0;
        }
        e = errno;
        if (close(fd) != 0 && rc == 0) {
            e = errno;
            rc = IMGQ_EIO;
        }
    } else {
        e = errno;
    }
    if (rc == 0) {
        step = "rename";
        if (rename(tmp, path) != 0) {
            e = errno;
            rc = IMGQ_EIO;
        }
    }
    if (rc == 0) {
        /* The rename itself is durable once the directory is flushed. */
        int dfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        if (old > 0)
            disk_adjust(sp, -old);
    } else {
        unlink(tmp);
        disk_adjust(sp, -(int64_t)total);
        imgq_fail(rc, why, whylen, "spool file %s for %s: cannot %s it: %s", path, key, step,
                  strerror(e));
    }
    free(tmp);
    free(path);
    free(hdr);
    return rc;
}

/* One header line "NAME VALUE\n" at *p (before end): the value, as a new string. */
static char *header_field(const uint8_t **p, const uint8_t *end, const char *name, size_t max)
{
    size_t nl = strlen(name);
    if ((size_t)(end - *p) < nl + 1 || memcmp(*p, name, nl) != 0 || (*p)[nl] != ' ')
        return NULL;
    const uint8_t *v = *p + nl + 1;
    const uint8_t *eol = memchr(v, '\n', (size_t)(end - v));
    if (!eol || eol == v || (size_t)(eol - v) > max || memchr(v, '\0', (size_t)(eol - v)))
        return NULL;
    *p = eol + 1;
    return imgq_xstrndup((const char *)v, (size_t)(eol - v));
}

void spool_entry_clear(struct spool_entry *e)
{
    free(e->key);
    free(e->type);
    memset(e, 0, sizeof *e);
}

int spool_parse(const uint8_t *buf, size_t len, struct spool_entry *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    const uint8_t *p = buf, *end = buf + len;
    const char *bad = NULL;
    char *lens = NULL, *sum = NULL;
    if (len < strlen(MAGIC) || memcmp(buf, MAGIC, strlen(MAGIC)) != 0) {
        bad = "it does not start with \"imgq-spool 1\"";
        goto fail;
    }
    p += strlen(MAGIC);
    if (!(out->key = header_field(&p, end, "key", SPOOL_KEY_MAX))) {
        bad = "its 'key' line is missing or malformed";
        goto fail;
    }
    if (!(out->type = header_field(&p, end, "type", TYPE_MAX))) {
        bad = "its 'type' line is missing or malformed";
        goto fail;
    }
    if (!(lens = header_field(&p, end, "length", 20))) {
        bad = "its 'length' line is missing or malformed";
        goto fail;
    }
    uint64_t n = 0;
    for (const char *s = lens; *s; s++) {
        if (*s < '0' || *s > '9' || n > (UINT64_MAX - 9) / 10) {
            bad = "its length is not a number";
            goto fail;
        }
        n = n * 10 + (uint64_t)(*s - '0');
    }
    if (!(sum = header_field(&p, end, "sha256", 64)) || strlen(sum) != 64 ||
        strspn(sum, "0123456789abcdef") != 64) {
        bad = "its 'sha256' line is missing or malformed";
        goto fail;
    }
    if (p == end || *p != '\n') {
        bad = "its header does not end with an empty line";
        goto fail;
    }
    p++;
    if ((uint64_t)(end - p) != n) {
        bad = (uint64_t)(end - p) < n ? "it is shorter than its length says (truncated)"
                                      : "it is longer than its length says";
        goto fail;
    }
    char hex[65];
    sha256_hex(p, (size_t)n, hex);
    if (strcmp(hex, sum) != 0) {
        bad = "its content does not match its SHA-256 (corrupted)";
        goto fail;
    }
    out->payload = p;
    out->payload_len = (size_t)n;
    free(lens);
    free(sum);
    return 0;
fail:
    free(lens);
    free(sum);
    spool_entry_clear(out);
    return imgq_fail(IMGQ_EPARSE, why, whylen, "%s", bad);
}

/* A damaged file: out of the way (NAME.damaged), out of the count, and said at ERROR. */
static void refuse(struct spool *sp, const char *path, const char *reason)
{
    int64_t size = file_size(path);
    char *aside = imgq_xasprintf("%s.damaged", path);
    bool moved = rename(path, aside) == 0;
    if (moved && size > 0)
        disk_adjust(sp, -size);
    imgq_log(IMGQ_LOG_ERROR, "spool", "spool file %s is damaged and refused: %s; %s", path, reason,
             moved ? "renamed to .damaged" : "left in place (cannot rename it)");
    free(aside);
}

/* The whole file at path: a new buffer. */
static int slurp(const char *path, uint8_t **buf, size_t *len, int *err)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return errno == ENOENT ? IMGQ_ENOTFOUND : IMGQ_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *err = S_ISREG(st.st_mode) ? errno : EISDIR;
        close(fd);
        return IMGQ_EIO;
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *b = imgq_xmalloc(n ? n : 1);
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* shrank meanwhile: the parser says it is truncated */
        got += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = got;
    return 0;
}

/* Read and check the file at path, expected to hold 'key' (NULL: whatever its name says). */
static int load(struct spool *sp, const char *path, const char *key, uint8_t **buf,
                struct spool_entry *e, char *why, size_t whylen)
{
    size_t len;
    int err = 0;
    int rc = slurp(path, buf, &len, &err);
    if (rc == IMGQ_ENOTFOUND)
        return imgq_fail(rc, why, whylen, "no spool file %s", path);
    if (rc)
        return imgq_fail(rc, why, whylen, "spool file %s: cannot read it: %s", path, strerror(err));
    char reason[256];
    rc = spool_parse(*buf, len, e, reason, sizeof reason);
    if (rc == 0) {
        char *expect = file_of(sp, e->key);
        bool named = strcmp(expect, path) == 0;
        free(expect);
        if (key && strcmp(key, e->key) != 0) {
            snprintf(reason, sizeof reason, "it holds %s, not %s", e->key, key);
            rc = IMGQ_EPARSE;
        } else if (!named) {
            snprintf(reason, sizeof reason, "its name is not the hash of its key %s", e->key);
            rc = IMGQ_EPARSE;
        }
        if (rc)
            spool_entry_clear(e);
    }
    if (rc) {
        free(*buf);
        *buf = NULL;
        refuse(sp, path, reason);
        return imgq_fail(IMGQ_EPARSE, why, whylen, "spool file %s is damaged: %s", path, reason);
    }
    return 0;
}

int spool_read(struct spool *sp, const char *key, uint8_t **data, size_t *len, char **type,
               char *why, size_t whylen)
{
    *data = NULL;
    *len = 0;
    if (type)
        *type = NULL;
    if (!sp->dir)
        return imgq_fail(IMGQ_ECONFIG, why, whylen, "no spool directory is configured");
    char *path = file_of(sp, key);
    uint8_t *buf;
    struct spool_entry e;
    int rc = load(sp, path, key, &buf, &e, why, whylen);
    free(path);
    if (rc)
        return rc;
    /* The payload moves to the front of the buffer: one allocation, handed over. */
    memmove(buf, e.payload, e.payload_len);
    *data = buf;
    *len = e.payload_len;
    if (type) {
        *type = e.type;
        e.type = NULL;
    }
    spool_entry_clear(&e);
    return 0;
}

bool spool_has(struct spool *sp, const char *key)
{
    if (!sp->dir)
        return false;
    char *path = file_of(sp, key);
    bool has = file_size(path) >= 0;
    free(path);
    return has;
}

int spool_remove(struct spool *sp, const char *key)
{
    if (!sp->dir)
        return IMGQ_ECONFIG;
    char *path = file_of(sp, key);
    int64_t size = file_size(path);
    int rc = 0;
    if (unlink(path) != 0)
        rc = errno == ENOENT ? IMGQ_ENOTFOUND : IMGQ_EIO;
    else if (size > 0)
        disk_adjust(sp, -size);
    free(path);
    return rc;
}

int spool_list(struct spool *sp, char ***keys, size_t *n)
{
    *keys = NULL;
    *n = 0;
    if (!sp->dir)
        return IMGQ_ECONFIG;
    DIR *d = opendir(sp->dir);
    if (!d)
        return IMGQ_EIO;
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, SUFFIX))
            continue;
        char *path = imgq_xasprintf("%s/%s", sp->dir, de->d_name);
        uint8_t *buf;
        struct spool_entry e;
        if (load(sp, path, NULL, &buf, &e, NULL, 0) == 0) {
            if (*n == cap) {
                cap = cap ? 2 * cap : 16;
                *keys = imgq_xrealloc(*keys, cap * sizeof **keys);
            }
            (*keys)[(*n)++] = e.key;
            e.key = NULL;
            spool_entry_clear(&e);
            free(buf);
        }
        free(path);
    }
    closedir(d);
    return 0;
}

void spool_list_free(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}
