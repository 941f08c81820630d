/* events.c - typed events: the field types of src/lua/event_fields.def applied to stream entries.
 */
#include "imgq/events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lua_scripts.h"

enum imgq_event_field_type imgq_event_field_type(const char *type, const char *field)
{
    const char *found = NULL;
    for (const char *const *d = imgq__event_fields; d[0] && !found; d += 3)
        if (strcmp(d[1], field) == 0 && type && strcmp(d[0], type) == 0)
            found = d[2];
    for (const char *const *d = imgq__event_fields; d[0] && !found; d += 3)
        if (strcmp(d[1], field) == 0 && strcmp(d[0], "*") == 0)
            found = d[2];
    if (found && strcmp(found, "int") == 0)
        return IMGQ_EVENT_INT;
    if (found && strcmp(found, "json") == 0)
        return IMGQ_EVENT_JSON;
    return IMGQ_EVENT_STRING;
}

/* The value text v as a field of type t (a new reference, or NULL if v is not UTF-8). */
static json_t *typed(enum imgq_event_field_type t, const char *v)
{
    if (t == IMGQ_EVENT_INT) {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        /* Digits only: no spaces, no sign but '-', nothing after. */
        if (*v && (*v == '-' || (*v >= '0' && *v <= '9')) && !*end && errno == 0)
            return json_integer(x);
        return json_null();
    }
    if (t == IMGQ_EVENT_JSON) {
        json_t *j = json_loads(v, JSON_DECODE_ANY, NULL);
        if (j)
            return j;
    }
    return json_string(v);
}

json_t *imgq_event_to_json(const char *id, const char *const *kv, size_t nkv)
{
    const char *type = NULL;
    for (size_t i = 0; i + 1 < nkv; i += 2)
        if (kv[i] && kv[i + 1] && strcmp(kv[i], "type") == 0)
            type = kv[i + 1];
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id ? id : ""));
    json_object_set_new(o, "time_ms", json_integer(id ? strtoll(id, NULL, 10) : 0));
    for (size_t i = 0; i + 1 < nkv; i += 2) {
        if (!kv[i] || !kv[i + 1] || strcmp(kv[i], "id") == 0 || strcmp(kv[i], "time_ms") == 0)
            continue;
        json_t *v = typed(imgq_event_field_type(type, kv[i]), kv[i + 1]);
        if (v)
            json_object_set_new(o, kv[i], v);
    }
    return o;
}
