/*
 * test_events.c - typed events (events.h): the field types of src/lua/event_fields.def applied
 * to stream entries as `imgq events --json` prints them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "imgq/events.h"

static void test_field_types(void **state)
{
    (void)state;
    assert_int_equal(imgq_event_field_type("batch.completed", "drafts"), IMGQ_EVENT_INT);
    assert_int_equal(imgq_event_field_type("selection.required", "drafts"), IMGQ_EVENT_JSON);
    assert_int_equal(imgq_event_field_type("batch.completed", "completion"), IMGQ_EVENT_INT);
    assert_int_equal(imgq_event_field_type("batch.submitted", "jobs"), IMGQ_EVENT_INT);
    assert_int_equal(imgq_event_field_type("job.failed", "error"), IMGQ_EVENT_JSON);
    /* "*": every event */
    assert_int_equal(imgq_event_field_type("anything", "time_ms"), IMGQ_EVENT_INT);
    assert_int_equal(imgq_event_field_type("job.completed", "batch"), IMGQ_EVENT_STRING);
    /* not defined: a string */
    assert_int_equal(imgq_event_field_type("job.completed", "nonesuch"), IMGQ_EVENT_STRING);
    assert_int_equal(imgq_event_field_type(NULL, "batch"), IMGQ_EVENT_STRING);
}

static void test_batch_completed(void **state)
{
    (void)state;
    const char *kv[] = {"type",        "batch.completed", "batch", "0042",   "completion",
                        "2",           "total",           "3",     "drafts", "0",
                        "cost_micros", "17500000000000"};
    json_t *o = imgq_event_to_json("1796668250028-1", kv, sizeof kv / sizeof *kv);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "1796668250028-1");
    assert_true(json_integer_value(json_object_get(o, "time_ms")) == 1796668250028LL);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "batch.completed");
    /* a batch named with digits stays a string */
    assert_string_equal(json_string_value(json_object_get(o, "batch")), "0042");
    assert_true(json_is_integer(json_object_get(o, "completion")));
    assert_int_equal(json_integer_value(json_object_get(o, "completion")), 2);
    assert_true(json_is_integer(json_object_get(o, "drafts")));
    assert_true(json_integer_value(json_object_get(o, "cost_micros")) == 17500000000000LL);
    json_decref(o);
}

static void test_values(void **state)
{
    (void)state;
    const char *kv[] = {
        "type",   "job.failed", "error",       "{\"class\":\"server\",\"retry\":false}",
        "job",    "j1",         "cost_micros", "12x",
        "in_ms",  "5",          NULL,          "skipped",
        "review", NULL};
    json_t *o = imgq_event_to_json("5-0", kv, sizeof kv / sizeof *kv);
    json_t *err = json_object_get(o, "error");
    assert_true(json_is_object(err));
    assert_string_equal(json_string_value(json_object_get(err, "class")), "server");
    /* not an integer: null, never a string */
    assert_true(json_is_null(json_object_get(o, "cost_micros")));
    /* in_ms is job.retrying's: here it is a string */
    assert_string_equal(json_string_value(json_object_get(o, "in_ms")), "5");
    assert_null(json_object_get(o, "review"));
    json_decref(o);

    const char *bad[] = {"type",        "job.failed", "error",  "not json {",
                         "cost_micros", " 5",         "job",    "\xff\xfe",
                         "total",       "-",          "images", "99999999999999999999"};
    o = imgq_event_to_json(NULL, bad, sizeof bad / sizeof *bad);
    assert_string_equal(json_string_value(json_object_get(o, "error")), "not json {");
    assert_true(json_is_null(json_object_get(o, "cost_micros")));
    assert_null(json_object_get(o, "job")); /* not UTF-8: left out */
    assert_string_equal(json_string_value(json_object_get(o, "id")), "");
    json_decref(o);

    const char *ints[] = {"type",   "batch.completed",      "total", "-",
                          "images", "99999999999999999999", "done",  "-3"};
    o = imgq_event_to_json("1-0", ints, sizeof ints / sizeof *ints);
    assert_true(json_is_null(json_object_get(o, "total")));
    assert_true(json_is_null(json_object_get(o, "images"))); /* out of range */
    assert_int_equal(json_integer_value(json_object_get(o, "done")), -3);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_types),
        cmocka_unit_test(test_batch_completed),
        cmocka_unit_test(test_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
