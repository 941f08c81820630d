/*
 * fuzz_events.c - imgq_event_to_json (imgq events --json): one events stream entry whose fields
 * and values are the input split at NUL bytes (field, value, field, value, ...).  Values hold
 * outside text (a provider's error message, a customer's metadata), typed by
 * src/lua/event_fields.def: the result is an object whose int fields are integers or null,
 * never strings.
 */
#include "fuzz.h"
#include "imgq/events.h"

#define MAX_FIELDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    const char *kv[MAX_FIELDS];
    size_t n = 0;
    for (size_t at = 0; at <= size && n < MAX_FIELDS; n++) {
        kv[n] = s + at;
        at += strlen(s + at) + 1;
    }
    json_t *o = imgq_event_to_json("1700000000000-0", kv, n);
    FUZZ_CHECK(json_is_object(o));
    const char *type = json_string_value(json_object_get(o, "type"));
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        enum imgq_event_field_type t = imgq_event_field_type(type, key);
        if (t == IMGQ_EVENT_INT)
            FUZZ_CHECK(json_is_integer(v) || json_is_null(v));
        else if (t == IMGQ_EVENT_STRING)
            FUZZ_CHECK(json_is_string(v));
    }
    char *text = json_dumps(o, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    free(text);
    json_decref(o);
    free(s);
    return 0;
}
