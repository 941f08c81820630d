/* dedup.c - canonical request hashing for dedup and content-addressed storage keys. */
#include "imgq/dedup.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"

char *imgq_prompt_normalize(const char *prompt)
{
    size_t n = strlen(prompt);
    char *out = imgq_xmalloc(n + 1), *o = out;
    int pending_space = 0;
    for (const char *p = prompt; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v') {
            pending_space = o != out;
            continue;
        }
        if (pending_space)
            *o++ = ' ';
        pending_space = 0;
        *o++ = *p;
    }
    *o = '\0';
    return out;
}

static json_t *str_or_empty(const char *s)
{
    return json_string(s ? s : "");
}

void imgq_dedup_key(const struct imgq_job_spec *s, int index, char out[65])
{
    char *prompt = imgq_prompt_normalize(s->prompt);
    /* A JSON array in a fixed order: unambiguous field boundaries, no floats.  The reference
     * slot holds the job's image references as given (strings), then, with a mask, the pair
     * ["mask", MASK]: a job without references keeps the key it always had. */
    json_t *a = json_array();
    json_array_append_new(a, json_string("imgq-dedup-v1"));
    json_array_append_new(a, json_string(s->model));
    json_array_append_new(a, json_string(prompt));
    json_array_append_new(a, json_string(s->size));
    json_array_append_new(a, str_or_empty(s->quality));
    json_array_append_new(a, s->has_seed ? json_integer(s->seed) : json_string(""));
    json_array_append_new(a, str_or_empty(s->negative_prompt));
    json_t *refs = json_array();
    for (int i = 0; i < s->nrefs; i++)
        json_array_append_new(refs, json_string(s->refs[i]));
    if (s->mask)
        json_array_append_new(refs, json_pack("[ss]", "mask", s->mask));
    json_array_append_new(a, refs);
    json_array_append_new(a, json_string(s->output_format));
    json_array_append_new(a, json_integer(s->output_compression));
    json_array_append_new(a, str_or_empty(s->background));
    json_array_append_new(a, json_integer(index));
    /* guidance_scale changes the image; a number in a string keeps floats out of the key. */
    if (s->has_guidance) {
        char g[40];
        snprintf(g, sizeof g, "guidance=%.17g", s->guidance_scale);
        json_array_append_new(a, json_string(g));
    }
    char *text = json_dumps(a, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(a);
    free(prompt);
    if (!text)
        abort(); /* allocation failure: alloc.h policy */
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL);
    free(text);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

char *imgq_object_key(const char *key_prefix, const char *dedup_key, const char *ext)
{
    return imgq_xasprintf("%simages/%.2s/%s.%s", key_prefix ? key_prefix : "", dedup_key, dedup_key,
                          ext);
}
