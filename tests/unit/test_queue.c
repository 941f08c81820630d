/*
 * test_queue.c - the pure parts of the queue module (Redis URLs, key layout and hash tags,
 * priorities, the script table), the dedup key and object keys, and base64.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "imgq/base64.h"
#include "imgq/dedup.h"
#include "imgq/queue.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static void source_path(const char *rel, char *buf, size_t len)
{
    const char *root = getenv("IMGQ_SOURCE_DIR");
    if (root && *root) {
        snprintf(buf, len, "%s/%s", root, rel);
        return;
    }
    const char *self = __FILE__;
    const char *cut = strstr(self, "tests/unit/");
    snprintf(buf, len, "%.*s%s", cut ? (int)(cut - self) : 0, self, rel);
}

static char *read_source(const char *rel)
{
    char path[4096];
    source_path(rel, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static void assert_hex(const char *s, size_t len)
{
    assert_int_equal(strlen(s), len);
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            fail_msg("'%s' is not lowercase hex", s);
}

/* Redis Cluster's key slot (CRC16/XMODEM of the hash tag, or of the key), as CLUSTER KEYSLOT
 * computes it: the slot is what all keys of one script must share. */
static unsigned crc16(const char *p, size_t n)
{
    unsigned crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (unsigned)(unsigned char)p[i] << 8;
        for (int k = 0; k < 8; k++)
            crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}

static unsigned keyslot(const char *key)
{
    size_t n = strlen(key);
    const char *open = strchr(key, '{');
    if (open) {
        const char *close = strchr(open + 1, '}');
        if (close && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) & 16383;
    }
    return crc16(key, n) & 16383;
}

/* ---- Redis URLs --------------------------------------------------------------------------- */

static void url_ok(const char *url, const char *host, int port, int db, const char *user,
                   const char *password)
{
    struct imgq_redis_url u;
    char err[256] = "";
    int rc = imgq_redis_url_parse(url, &u, err, sizeof err);
    if (rc != 0)
        fail_msg("'%s' refused: %s", url, err);
    assert_string_equal(u.host, host);
    assert_int_equal(u.port, port);
    assert_int_equal(u.db, db);
    if (user)
        assert_string_equal(u.user, user);
    else
        assert_null(u.user);
    if (password)
        assert_string_equal(u.password, password);
    else
        assert_null(u.password);
    imgq_redis_url_clear(&u);
    assert_null(u.host);
}

static void url_bad(const char *url, const char *needle)
{
    struct imgq_redis_url u;
    char err[256] = "";
    int rc = imgq_redis_url_parse(url, &u, err, sizeof err);
    if (rc != IMGQ_EINVAL)
        fail_msg("'%s' accepted (host '%s' port %d db %d)", url, rc == 0 ? u.host : "",
                 rc == 0 ? u.port : 0, rc == 0 ? u.db : 0);
    assert_contains(err, needle);
    assert_null(u.host);
    assert_null(u.user);
    assert_null(u.password);
}

static void test_redis_url_valid(void **state)
{
    url_ok("redis://127.0.0.1", "127.0.0.1", 6379, 0, NULL, NULL);
    url_ok("redis://localhost:6380", "localhost", 6380, 0, NULL, NULL);
    url_ok("redis://cache.internal:7000/3", "cache.internal", 7000, 3, NULL, NULL);
    url_ok("redis://cache.internal/15", "cache.internal", 6379, 15, NULL, NULL);
    url_ok("redis://h/", "h", 6379, 0, NULL, NULL);
    url_ok("redis://h:1/2?timeout=5", "h", 1, 2, NULL, NULL);
    url_ok("redis://h:65535", "h", 65535, 0, NULL, NULL);
    /* Defaults for an empty authority. */
    url_ok("redis://", "127.0.0.1", 6379, 0, NULL, NULL);
    url_ok("redis://:6390", "127.0.0.1", 6390, 0, NULL, NULL);
    /* Credentials: user:password, :password, password alone; percent-encoded. */
    url_ok("redis://alice:s3cret@h:6379/1", "h", 6379, 1, "alice", "s3cret");
    url_ok("redis://:s3cret@h", "h", 6379, 0, NULL, "s3cret");
    url_ok("redis://s3cret@h", "h", 6379, 0, NULL, "s3cret");
    url_ok("redis://al%69ce:p%40ss%3Aw%2Fd%25@h", "h", 6379, 0, "alice", "p@ss:w/d%");
    url_ok("redis://u:%41%42@h", "h", 6379, 0, "u", "AB");
    url_ok("redis://u:100%zz@h", "h", 6379, 0, "u", "100%zz"); /* not an escape: kept */
    url_ok("redis://u:@h", "h", 6379, 0, "u", "");
    /* IPv6 literals. */
    url_ok("redis://[::1]:6380", "::1", 6380, 0, NULL, NULL);
    url_ok("redis://[::1]", "::1", 6379, 0, NULL, NULL);
    url_ok("redis://[fe80::1]/4", "fe80::1", 6379, 4, NULL, NULL);
    url_ok("redis://u:p@[::1]:7001/9", "::1", 7001, 9, "u", "p");
}

static void test_redis_url_invalid(void **state)
{
    url_bad("rediss://cache.example.com:6380", "TLS");
    url_bad("rediss://cache.example.com:6380", "rediss://");
    url_bad("rediss://cache.example.com:6380", "proxy");
    static const char *const bad[] = {
        "",
        "localhost:6379",
        "http://h:6379",
        "REDIS://h",
        "unix:///tmp/redis.sock",
        "redis:/h",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:-1",
        "redis://h:",
        "redis://h:abc",
        "redis://h:6379x",
        "redis://h:99999999999999999999",
        "redis://h/abc",
        "redis://h/-1",
        "redis://h/1x",
        "redis://h/100001",
        "redis://[::1",
        "redis://[::1]:0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char needle[300];
        snprintf(needle, sizeof needle, "'%s'", bad[i]); /* the message quotes the URL */
        url_bad(bad[i], needle);
    }
    url_bad("localhost:6379", "must start with redis://");
    url_bad("redis://h:0", "expected redis://[user:pass@]host[:port][/db]");

    struct imgq_redis_url u;
    char err[64] = "";
    assert_int_equal(imgq_redis_url_parse(NULL, &u, err, sizeof err), IMGQ_EINVAL);
    assert_contains(err, "(null)");
    /* No error buffer: just the code. */
    assert_int_equal(imgq_redis_url_parse("redis://h:0", &u, NULL, 0), IMGQ_EINVAL);
    assert_null(u.host);
}

/* Regression (was a bug): src/queue.c imgq_redis_url_parse: text after an IPv6 literal's ']' that
 * is not ":port" is ignored, so "redis://[::1]junk" and "redis://[::1]6380" are accepted as
 * [::1]:6379 instead of being refused. */
static void test_redis_url_ipv6_trailing_garbage(void **state)
{
    url_bad("redis://[::1]junk", "expected redis://");
    url_bad("redis://[::1]6380", "expected redis://");
}

/* Regression (was a bug): src/queue.c imgq_redis_url_parse: the error message quotes the whole URL,
 * password included, e.g. "redis URL 'redis://alice:hunter2@h:0': ..."; the CLI prints it and logs
 * keep it.  The password should be masked in messages. */
static void test_redis_url_error_hides_password(void **state)
{
    struct imgq_redis_url u;
    char err[256] = "";
    assert_int_equal(imgq_redis_url_parse("redis://alice:hunter2@h:0", &u, err, sizeof err),
                     IMGQ_EINVAL);
    assert_null(strstr(err, "hunter2"));
    assert_int_equal(imgq_redis_url_parse("rediss://alice:hunter2@h", &u, err, sizeof err),
                     IMGQ_EINVAL);
    assert_null(strstr(err, "hunter2"));
}

/* ---- keys --------------------------------------------------------------------------------- */

static void test_keys_layout(void **state)
{
    struct imgq_keys k;
    assert_int_equal(imgq_keys_init(&k, "imgq", "default"), 0);
    assert_string_equal(k.base, "imgq:{default}:");
    assert_string_equal(k.stats, "imgq:{default}:stats");
    assert_string_equal(k.delayed, "imgq:{default}:delayed");
    assert_string_equal(k.leases, "imgq:{default}:leases");
    assert_string_equal(k.dead, "imgq:{default}:dead");
    assert_string_equal(k.events, "imgq:{default}:events");
    assert_string_equal(k.wake, "imgq:{default}:wake");
    assert_string_equal(k.ring[0], "imgq:{default}:rr:0");
    assert_string_equal(k.ring[2], "imgq:{default}:rr:2");
    char buf[256];
    assert_string_equal(imgq_keys_job(&k, "j-42", buf, sizeof buf), "imgq:{default}:j:j-42");
    assert_ptr_equal(imgq_keys_job(&k, "x", buf, sizeof buf), buf);
    assert_string_equal(imgq_keys_batch(&k, "b-7", buf, sizeof buf), "imgq:{default}:b:b-7");
    assert_string_equal(imgq_keys_batch_jobs(&k, "b-7", buf, sizeof buf),
                        "imgq:{default}:b:b-7:jobs");
    /* A short buffer is truncated, not overrun. */
    char small[10];
    assert_string_equal(imgq_keys_job(&k, "j-42", small, sizeof small), "imgq:{def");

    /* Every key of the queue is in the slot of its hash tag (Redis Cluster). */
    assert_int_equal(crc16("123456789", 9), 0x31c3); /* the CRC's check value */
    unsigned slot = keyslot("{default}");
    assert_int_equal(slot, crc16("default", 7) & 16383);
    const char *keys[] = {k.base,   k.stats, k.delayed, k.leases,  k.dead,
                          k.events, k.wake,  k.ring[0], k.ring[1], k.ring[2]};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_int_equal(keyslot(keys[i]), slot);
    assert_int_equal(keyslot(imgq_keys_job(&k, "{other}", buf, sizeof buf)), slot);
    assert_int_equal(keyslot(imgq_keys_batch_jobs(&k, "b", buf, sizeof buf)), slot);

    /* An empty prefix has no leading colon; another queue is another tag. */
    assert_int_equal(imgq_keys_init(&k, "", "q2"), 0);
    assert_string_equal(k.base, "{q2}:");
    assert_string_equal(k.stats, "{q2}:stats");
    assert_int_equal(imgq_keys_init(&k, "acme:imgq", "hi-pri"), 0);
    assert_string_equal(k.base, "acme:imgq:{hi-pri}:");
}

static void test_keys_refused(void **state)
{
    struct imgq_keys k;
    memset(&k, 0, sizeof k);
    char q64[65], q65[66];
    memset(q64, 'q', 64);
    q64[64] = '\0';
    memset(q65, 'q', 65);
    q65[65] = '\0';
    assert_int_equal(imgq_keys_init(&k, "imgq", ""), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, "imgq", NULL), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, NULL, "q"), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, "imgq", "a{b"), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, "imgq", "a}b"), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, "imgq", "{q}"), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, "pre{", "q"), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, "}pre", "q"), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, "imgq", q65), IMGQ_EINVAL);
    assert_int_equal(imgq_keys_init(&k, q65, "q"), IMGQ_EINVAL);
    assert_string_equal(k.base, ""); /* untouched */
    assert_int_equal(imgq_keys_init(&k, q64, q64), 0);
    assert_int_equal(strlen(k.base), 64 + 1 + 1 + 64 + 2);
    assert_int_equal(strlen(k.events), strlen(k.base) + 6);
}

/* ---- priorities --------------------------------------------------------------------------- */

static void test_priorities(void **state)
{
    enum imgq_priority p = IMGQ_PRIO_LOW;
    assert_int_equal(imgq_priority_parse("high", &p), 0);
    assert_int_equal(p, IMGQ_PRIO_HIGH);
    assert_int_equal(imgq_priority_parse("normal", &p), 0);
    assert_int_equal(p, IMGQ_PRIO_NORMAL);
    assert_int_equal(imgq_priority_parse("low", &p), 0);
    assert_int_equal(p, IMGQ_PRIO_LOW);
    static const char *const bad[] = {"", "HIGH", "urgent", "high ", "0", "lo"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = IMGQ_PRIO_LOW;
        assert_int_equal(imgq_priority_parse(bad[i], &p), IMGQ_EINVAL);
        assert_int_equal(p, IMGQ_PRIO_LOW);
    }
    assert_int_equal(imgq_priority_parse(NULL, &p), IMGQ_EINVAL);

    assert_string_equal(imgq_priority_name(IMGQ_PRIO_HIGH), "high");
    assert_string_equal(imgq_priority_name(IMGQ_PRIO_NORMAL), "normal");
    assert_string_equal(imgq_priority_name(IMGQ_PRIO_LOW), "low");
    assert_string_equal(imgq_priority_name((enum imgq_priority)7), "normal");
    /* Lower is served first. */
    assert_true(IMGQ_PRIO_HIGH < IMGQ_PRIO_NORMAL && IMGQ_PRIO_NORMAL < IMGQ_PRIO_LOW);
}

/* ---- scripts ------------------------------------------------------------------------------ */

static void test_scripts(void **state)
{
    static const char *const names[] = {"submit",   "claim",    "complete", "fail",    "extend",
                                        "reap",     "release",  "dlq",      "cancel",  "pause",
                                        "stats",    "rate",     "poll",     "breaker", "budget",
                                        "pipeline", "coalesce", "webhook"};
    assert_int_equal(IMGQ_SCRIPT_COUNT, sizeof names / sizeof names[0]);
    char *lib = read_source("src/lua/lib.lua");
    for (int i = 0; i < IMGQ_SCRIPT_COUNT; i++) {
        const struct imgq_script *s = imgq_script_get((enum imgq_script_id)i);
        assert_non_null(s);
        assert_string_equal(s->name, names[i]);
        assert_hex(s->sha, 40);

        /* The body is the events' field types (one line, generated from event_fields.def),
         * then lib.lua, then the script's own file, byte for byte... */
        char rel[64];
        snprintf(rel, sizeof rel, "src/lua/%s.lua", names[i]);
        char *own = read_source(rel);
        size_t nlib = strlen(lib);
        const char *types_end = strchr(s->body, '\n');
        assert_non_null(types_end);
        assert_memory_equal(s->body, "local EVENT_FIELDS = {", 22);
        size_t ntypes = (size_t)(types_end + 1 - s->body);
        assert_int_equal(strlen(s->body), ntypes + nlib + strlen(own));
        assert_memory_equal(s->body + ntypes, lib, nlib);
        assert_string_equal(s->body + ntypes + nlib, own);
        free(own);

        /* ...and the SHA-1 is the one Redis computes for SCRIPT LOAD / EVALSHA. */
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        assert_int_equal(EVP_Digest(s->body, strlen(s->body), md, &mdlen, EVP_sha1(), NULL), 1);
        assert_int_equal(mdlen, 20);
        char hex[41];
        for (unsigned j = 0; j < mdlen; j++)
            snprintf(hex + 2 * j, 3, "%02x", md[j]);
        assert_string_equal(s->sha, hex);

        for (int j = 0; j < i; j++)
            assert_string_not_equal(imgq_script_get((enum imgq_script_id)j)->sha, s->sha);
        /* The table is computed once: the same entry every time. */
        assert_ptr_equal(imgq_script_get((enum imgq_script_id)i), s);
    }
    free(lib);
}

/* ---- dedup -------------------------------------------------------------------------------- */

static void test_prompt_normalize(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"a cat on a mat", "a cat on a mat"},
        {"  a  cat\t\ton\r\na   mat  ", "a cat on a mat"},
        {"\n\n\tx\v\f", "x"},
        {"", ""},
        {" \t\r\n\v\f ", ""},
        {"caf\xc3\xa9  \xe2\x98\x95", "caf\xc3\xa9 \xe2\x98\x95"}, /* UTF-8 kept intact */
        {"a\xc2\xa0"
         "b",
         "a\xc2\xa0"
         "b"}, /* U+00A0 is not ASCII whitespace */
        {"Case Matters", "Case Matters"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *n = imgq_prompt_normalize(cases[i].in);
        assert_string_equal(n, cases[i].out);
        free(n);
    }
}

static struct imgq_job_spec base_spec(void)
{
    return (struct imgq_job_spec){.id = "job-1",
                                  .model = "gpt-image-1.5",
                                  .prompt = "a cat on a mat",
                                  .n = 2,
                                  .size = "1024x1024",
                                  .width = 1024,
                                  .height = 1024,
                                  .quality = "high",
                                  .output_format = "webp",
                                  .output_compression = 85,
                                  .route = "list",
                                  .team = "acme",
                                  .priority = IMGQ_PRIO_NORMAL,
                                  .max_attempts = 5};
}

static void test_dedup_key_pinned(void **state)
{
    /* SHA-256 of ["imgq-dedup-v1","gpt-image-1.5","a cat on a mat","1024x1024","high","","",
     * [],"webp",85,"",0]: stored objects are named by it, so it must never drift. */
    struct imgq_job_spec s = base_spec();
    char key[65];
    imgq_dedup_key(&s, 0, key);
    assert_string_equal(key, "372ed0255a6e550a75d9c00e765ce2d33eaddbe52b00d41e0fa5fcbee5a224b1");
    imgq_dedup_key(&s, 1, key);
    assert_string_equal(key, "88aae4ebd79efe8f84da9fd1de3c881672394072186aef728847569e4ba7f98c");
    assert_hex(key, 64);
}

static void test_dedup_key_sensitivity(void **state)
{
    struct imgq_job_spec s = base_spec();
    char ref[65], k[65];
    imgq_dedup_key(&s, 0, ref);
    imgq_dedup_key(&s, 0, k);
    assert_string_equal(ref, k); /* deterministic */

    /* Whitespace-only differences in the prompt: the same image. */
    static const char *const same_prompts[] = {"  a cat on a mat", "a cat on a mat \n",
                                               "a\tcat  on\r\na mat", " a  cat on a   mat "};
    for (size_t i = 0; i < sizeof same_prompts / sizeof same_prompts[0]; i++) {
        struct imgq_job_spec t = base_spec();
        t.prompt = (char *)same_prompts[i];
        imgq_dedup_key(&t, 0, k);
        assert_string_equal(k, ref);
    }

    /* Fields that do not change the image do not change the key. */
    struct imgq_job_spec t = base_spec();
    t.id = "job-2";
    t.n = 4;
    t.route = "treerouter-standard";
    t.team = "other";
    t.webhook = "https://example.com/h";
    t.priority = IMGQ_PRIO_HIGH;
    t.max_attempts = 9;
    t.alias = "catalog-default";
    json_t *md = json_pack("{s:s}", "sku", "1");
    t.metadata = md;
    imgq_dedup_key(&t, 0, k);
    assert_string_equal(k, ref);
    json_decref(md);

    /* Every field that does change it, one at a time. */
    char seen[16][65];
    int nseen = 0;
    memcpy(seen[nseen++], ref, 65);
    for (int f = 0; f < 10; f++) {
        t = base_spec();
        int index = 0;
        switch (f) {
        case 0:
            t.model = "gpt-image-1";
            break;
        case 1:
            t.prompt = "a cat on a hat";
            break;
        case 2:
            t.prompt = "A cat on a mat";
            break;
        case 3:
            t.size = "1536x1024";
            break;
        case 4:
            t.quality = "medium";
            break;
        case 5:
            t.output_format = "png";
            break;
        case 6:
            t.output_compression = 84;
            break;
        case 7:
            t.background = "transparent";
            break;
        case 8:
            index = 1;
            break;
        case 9:
            t.quality = NULL;
            break;
        }
        imgq_dedup_key(&t, index, k);
        for (int j = 0; j < nseen; j++)
            if (strcmp(k, seen[j]) == 0)
                fail_msg("change %d gives the same key as variant %d", f, j);
        memcpy(seen[nseen++], k, 65);
    }

    /* Field boundaries are unambiguous: moving text between fields changes the key. */
    struct imgq_job_spec a = base_spec(), b = base_spec();
    a.model = "m";
    a.prompt = "ab";
    b.model = "ma";
    b.prompt = "b";
    char ka[65], kb[65];
    imgq_dedup_key(&a, 0, ka);
    imgq_dedup_key(&b, 0, kb);
    assert_string_not_equal(ka, kb);
}

static void test_object_key(void **state)
{
    const char *dk = "372ed0255a6e550a75d9c00e765ce2d33eaddbe52b00d41e0fa5fcbee5a224b1";
    char *k = imgq_object_key("tenant-a/", dk, "webp");
    assert_string_equal(
        k,
        "tenant-a/images/37/372ed0255a6e550a75d9c00e765ce2d33eaddbe52b00d41e0fa5fcbee5a224b1.webp");
    free(k);
    k = imgq_object_key(NULL, dk, "png");
    assert_string_equal(
        k, "images/37/372ed0255a6e550a75d9c00e765ce2d33eaddbe52b00d41e0fa5fcbee5a224b1.png");
    free(k);
    k = imgq_object_key("", dk, "png");
    assert_int_equal(strncmp(k, "images/37/", 10), 0);
    free(k);
}

/* ---- base64 ------------------------------------------------------------------------------- */

static void test_base64_vectors(void **state)
{
    /* RFC 4648 section 10. */
    static const struct {
        const char *raw, *b64;
    } v[] = {{"", ""},
             {"f", "Zg=="},
             {"fo", "Zm8="},
             {"foo", "Zm9v"},
             {"foob", "Zm9vYg=="},
             {"fooba", "Zm9vYmE="},
             {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n = 99;
        char *enc = imgq_base64_encode(v[i].raw, strlen(v[i].raw), &n);
        assert_string_equal(enc, v[i].b64);
        assert_int_equal(n, strlen(v[i].b64));
        free(enc);
        uint8_t *dec = NULL;
        n = 99;
        assert_int_equal(imgq_base64_decode(v[i].b64, strlen(v[i].b64), &dec, &n), 0);
        assert_int_equal(n, strlen(v[i].raw));
        assert_memory_equal(dec, v[i].raw, n);
        assert_int_equal(dec[n], 0); /* NUL-terminated */
        free(dec);
    }
    char *enc = imgq_base64_encode("\xff\xfe\xfd", 3, NULL);
    assert_string_equal(enc, "//79");
    free(enc);
}

static void test_base64_round_trip(void **state)
{
    uint8_t data[1027];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 131 + 7);
    for (size_t len = 0; len <= sizeof data; len += (len < 16 ? 1 : 97)) {
        size_t elen = 0;
        char *enc = imgq_base64_encode(data, len, &elen);
        assert_int_equal(elen, (len + 2) / 3 * 4);
        assert_int_equal(strlen(enc), elen);
        uint8_t *dec = NULL;
        size_t dlen = 0;
        assert_int_equal(imgq_base64_decode(enc, elen, &dec, &dlen), 0);
        assert_int_equal(dlen, len);
        if (len)
            assert_memory_equal(dec, data, len);
        free(dec);
        free(enc);
    }
}

static void test_base64_invalid(void **state)
{
    static const char *const bad[] = {
        "Zg=",        /* length not a multiple of 4 */
        "Zm9vY",      /* idem */
        "Z",          /* idem */
        "Zm9$",       /* not in the alphabet */
        "Zm9v!!!!",   /* idem */
        "Zm-v",       /* base64url is another alphabet */
        "Zm_v",       /* idem */
        "Zm 9",       /* inner whitespace */
        "Zm9v\nZm9v", /* a line break (and length 9) */
        "Zm\n9v",     /* inner line break, length 6 */
        "Zm9\0",      /* NUL inside the length */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *out = (uint8_t *)"untouched";
        size_t n = 77;
        size_t len = i == sizeof bad / sizeof bad[0] - 1 ? 4 : strlen(bad[i]);
        if (imgq_base64_decode(bad[i], len, &out, &n) != IMGQ_EPARSE)
            fail_msg("'%s' was decoded (%zu bytes)", bad[i], n);
        assert_string_equal((const char *)out, "untouched");
        assert_int_equal(n, 77);
    }
}

/* Regression (was a bug): src/base64.c imgq_base64_decode: EVP_DecodeBlock treats '=' as a zero
 * digit anywhere, and the code only subtracts trailing padding, so malformed padding decodes to
 * wrong bytes:
 * "====" -> 1 byte 0x00, "Z===" -> 1 byte, "Zg=a" -> 2 bytes "f\0", "Zg==Zm9v" (padding in the
 * middle) -> 6 bytes "f\0\0foo".  All should be IMGQ_EPARSE. */
static void test_base64_bad_padding(void **state)
{
    static const char *const bad[] = {"====", "Z===", "Zg=a", "Zg==Zm9v", "=Zm9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *out = NULL;
        size_t n = 0;
        if (imgq_base64_decode(bad[i], strlen(bad[i]), &out, &n) != IMGQ_EPARSE) {
            free(out);
            fail_msg("'%s' was decoded (%zu bytes)", bad[i], n);
        }
    }
}

/* Regression (was a bug): src/base64.c imgq_base64_decode: base64.h says whitespace is not allowed,
 * but EVP_DecodeBlock trims leading and trailing whitespace, so "    Zm9v", "Zm9v    " and
 * "Zm9v\n\n\n\n" decode to "foo" instead of IMGQ_EPARSE. */
static void test_base64_surrounding_whitespace(void **state)
{
    static const char *const bad[] = {"    Zm9v", "Zm9v    ", "Zm9v\n\n\n\n", "\r\nZg=="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *out = NULL;
        size_t n = 0;
        if (imgq_base64_decode(bad[i], strlen(bad[i]), &out, &n) != IMGQ_EPARSE) {
            free(out);
            fail_msg("'%s' was decoded (%zu bytes)", bad[i], n);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_url_valid),
        cmocka_unit_test(test_redis_url_invalid),
        cmocka_unit_test(test_redis_url_ipv6_trailing_garbage),
        cmocka_unit_test(test_redis_url_error_hides_password),
        cmocka_unit_test(test_keys_layout),
        cmocka_unit_test(test_keys_refused),
        cmocka_unit_test(test_priorities),
        cmocka_unit_test(test_scripts),
        cmocka_unit_test(test_prompt_normalize),
        cmocka_unit_test(test_dedup_key_pinned),
        cmocka_unit_test(test_dedup_key_sensitivity),
        cmocka_unit_test(test_object_key),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_round_trip),
        cmocka_unit_test(test_base64_invalid),
        cmocka_unit_test(test_base64_bad_padding),
        cmocka_unit_test(test_base64_surrounding_whitespace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
