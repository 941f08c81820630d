/* sidecar.c - the JSON stored next to each image object (see sidecar.h for the layout). */
#include "imgq/sidecar.h"

#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"

#define S3_KEY_MAX 1024

static void set_str(json_t *o, const char *name, const char *value)
{
    json_object_set_new(o, name, json_string(value));
}

char *imgq_sidecar_json(const struct imgq_job_spec *spec, int index, const char *key, int width,
                        int height, size_t bytes, const char *format, const json_t *usage,
                        int64_t cost_micros, const char *created_iso)
{
    if (!spec || !key || !*key || !format || !*format || !spec->prompt || !spec->model ||
        index < 0 || width < 0 || height < 0)
        return NULL;
    /* jansson keeps insertion order (>= 2.8): the order of the calls below is the document's. */
    json_t *o = json_object();
    set_str(o, "key", key);
    set_str(o, "prompt", spec->prompt);
    set_str(o, "model", spec->model);
    if (spec->alias)
        set_str(o, "requested_model", spec->alias);
    if (spec->size)
        set_str(o, "size", spec->size);
    if (spec->quality)
        set_str(o, "quality", spec->quality);
    json_object_set_new(o, "n", json_integer(spec->n));
    json_object_set_new(o, "index", json_integer(index));
    if (spec->has_seed)
        json_object_set_new(o, "seed", json_integer((json_int_t)spec->seed));
    if (spec->negative_prompt)
        set_str(o, "negative_prompt", spec->negative_prompt);
    if (spec->has_guidance)
        json_object_set_new(o, "guidance_scale", json_real(spec->guidance_scale));
    if (spec->background)
        set_str(o, "background", spec->background);
    if (spec->nrefs > 0 && spec->refs) {
        json_t *refs = json_array();
        for (int i = 0; i < spec->nrefs; i++)
            json_array_append_new(refs, json_string(spec->refs[i] ? spec->refs[i] : ""));
        json_object_set_new(o, "references", refs);
    }
    if (spec->mask)
        set_str(o, "mask", spec->mask);
    set_str(o, "format", format);
    if (strcmp(format, "png") != 0)
        json_object_set_new(o, "compression", json_integer(spec->output_compression));
    json_object_set_new(o, "width", json_integer(width));
    json_object_set_new(o, "height", json_integer(height));
    json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
    /* A deep copy: the caller's object is borrowed and may be shared between threads. */
    json_object_set_new(o, "usage", usage ? json_deep_copy(usage) : json_null());
    json_object_set_new(o, "cost_micros", json_integer((json_int_t)cost_micros));
    if (created_iso)
        set_str(o, "created", created_iso);
    if (spec->id)
        set_str(o, "client_id", spec->id);
    if (spec->metadata)
        json_object_set_new(o, "metadata", json_deep_copy(spec->metadata));
    json_object_set_new(
        o, "imgq",
        json_pack("{s:s, s:i}", "version", IMGQ_VERSION, "sidecar", IMGQ_SIDECAR_SCHEMA));
    /* Strings that are not valid UTF-8 make json_string return NULL, and setting NULL fails
     * silently: check the fields that come from outside (json_dumps would drop nothing). */
    char *text = NULL;
    if (json_object_get(o, "key") && json_object_get(o, "prompt") && json_object_get(o, "model") &&
        json_object_get(o, "format"))
        text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    if (!text)
        return NULL;
    size_t len = strlen(text);
    char *doc = imgq_xmalloc(len + 2);
    memcpy(doc, text, len);
    doc[len] = '\n';
    doc[len + 1] = '\0';
    free(text);
    return doc;
}

char *imgq_sidecar_key(const char *object_key)
{
    if (!object_key || !*object_key)
        return NULL;
    size_t len = strlen(object_key);
    if (len + 5 > S3_KEY_MAX)
        return NULL;
    return imgq_xasprintf("%s.json", object_key);
}
