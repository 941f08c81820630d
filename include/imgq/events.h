/*
 * events.h - the queue's events (P:{Q}:events, `imgq events`) with typed fields.
 *
 * The events stream stores every field as text.  Each field of each event has one type,
 * defined once in src/lua/event_fields.def, which types both the webhook payloads (lib.lua)
 * and the JSON built here: counts, micro-dollars and times are integers, documents (an error,
 * a result, drafts) are JSON, the rest strings.
 */
#ifndef IMGQ_EVENTS_H
#define IMGQ_EVENTS_H

#include <stddef.h>

#include <jansson.h>

/* The type of field 'field' of event 'type' ("batch.completed", ...). */
enum imgq_event_field_type {
    IMGQ_EVENT_STRING, /* a JSON string (the default of a field not defined) */
    IMGQ_EVENT_INT,    /* a JSON integer; null when the stored text is not one */
    IMGQ_EVENT_JSON,   /* the stored JSON value; a string when the text does not parse */
};
enum imgq_event_field_type imgq_event_field_type(const char *type, const char *field);

/*
 * One stream entry as a new JSON object: "id" (the stream id), "time_ms" (from it), then the
 * entry's fields (nkv strings: field, value, field, value, ...; NULL ones are skipped), each of
 * its type.  The event type is the entry's "type" field.
 */
json_t *imgq_event_to_json(const char *id, const char *const *kv, size_t nkv);

#endif
