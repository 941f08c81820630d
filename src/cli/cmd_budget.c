/*
 * cmd_budget.c - imgq budget set|show|list|delete: spend caps per scope and window.
 *
 * The caps themselves are enforced by src/lua/budget.lua (a reservation before every provider
 * call); this command defines them and shows, per budget, what the current window has spent,
 * what calls in flight have reserved, and what remains.  For calendar windows it computes the
 * zone's UTC-offset transitions (budget.h), which the script needs: re-run `budget set` within
 * two years (`budget list` warns when they are about to run out).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imgq/alloc.h"
#include "imgq/budget.h"
#include "imgq/schedule.h"

#define DAY_MS 86400000LL

#define USAGE                                                                                      \
    "usage: imgq budget set NAME --limit USD [--soft USD] [--window hour|day|month|total]"         \
    " [--tz ZONE]\n"                                                                               \
    "                       [--webhook URL]\n"                                                     \
    "       imgq budget show NAME [--json]\n"                                                      \
    "       imgq budget list [--json]\n"                                                           \
    "       imgq budget delete NAME\n"                                                             \
    "NAME: global, team:T, batch:B, model:M or route:R; the window defaults to month,\n"           \
    "the zone to UTC; --webhook gets budget.threshold when the soft threshold is reached\n"        \
    "(a batch budget without one notifies its batch's webhook)\n"

static long long jint(json_t *a, size_t i)
{
    json_t *v = json_array_get(a, i);
    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    if (json_is_string(v))
        return atoll(json_string_value(v));
    return 0;
}

static const char *jstr(json_t *a, size_t i)
{
    const char *s = json_string_value(json_array_get(a, i));
    return s ? s : "";
}

/* One row of the script ({name, window, tz, limit, soft, window id, start, end, spent,
 * reserved, transitions end}) as the JSON the command prints. */
static json_t *row_json(json_t *r, long long now)
{
    const char *window = jstr(r, 1), *tz = jstr(r, 2);
    long long limit = jint(r, 3), soft = jint(r, 4), start = jint(r, 6), end = jint(r, 7);
    long long spent = jint(r, 8), reserved = jint(r, 9), horizon = jint(r, 10);
    long long remaining = limit - spent - reserved;
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:s}", "name", jstr(r, 0),
                          "window", window, "tz", tz, "limit_micros", (json_int_t)limit,
                          "soft_micros", (json_int_t)soft, "spent_micros", (json_int_t)spent,
                          "reserved_micros", (json_int_t)reserved, "remaining_micros",
                          (json_int_t)(remaining > 0 ? remaining : 0), "window_id", jstr(r, 5));
    if (strcmp(window, "total") != 0) {
        char b[64];
        imgq_budget_local_time(start, tz, b, sizeof b);
        json_object_set_new(o, "window_start", json_string(b));
        imgq_budget_local_time(end, tz, b, sizeof b);
        json_object_set_new(o, "window_end", json_string(b));
        json_object_set_new(o, "window_start_ms", json_integer(start));
        json_object_set_new(o, "window_end_ms", json_integer(end));
        json_object_set_new(o, "tz_rules_until_ms", json_integer(horizon));
        json_object_set_new(o, "tz_rules_stale", json_boolean(horizon < now + 30 * DAY_MS));
    }
    return o;
}

static void warn_stale(json_t *o)
{
    if (!json_is_true(json_object_get(o, "tz_rules_stale")))
        return;
    char b[64];
    imgq_budget_local_time(json_integer_value(json_object_get(o, "tz_rules_until_ms")), "UTC", b,
                           sizeof b);
    fprintf(stderr,
            "imgq budget: warning: %s: the time zone rules stored with it end %s; run "
            "`imgq budget set %s ...` again\n",
            json_string_value(json_object_get(o, "name")), b,
            json_string_value(json_object_get(o, "name")));
}

/* Dollars with cents, or with micro-dollars when there are fractions of a cent. */
static void money(long long v, char *buf, size_t len)
{
    imgq_money_format(v, v % 10000 ? 6 : 2, buf, len);
}

static void print_row(json_t *o)
{
    char lim[48], sp[48], rs[48], rem[48], soft[48];
    money(json_integer_value(json_object_get(o, "limit_micros")), lim, sizeof lim);
    money(json_integer_value(json_object_get(o, "spent_micros")), sp, sizeof sp);
    money(json_integer_value(json_object_get(o, "reserved_micros")), rs, sizeof rs);
    money(json_integer_value(json_object_get(o, "remaining_micros")), rem, sizeof rem);
    long long s = json_integer_value(json_object_get(o, "soft_micros"));
    if (s > 0)
        money(s, soft, sizeof soft);
    else
        snprintf(soft, sizeof soft, "-");
    const char *window = json_string_value(json_object_get(o, "window"));
    printf("%-24s %-6s %-14s limit %-12s soft %-10s spent %-14s reserved %-14s remaining %s\n",
           json_string_value(json_object_get(o, "name")), window,
           json_string_value(json_object_get(o, "window_id")), lim, soft, sp, rs, rem);
    if (strcmp(window, "total") != 0)
        printf("%-24s window %s .. %s (%s)\n", "",
               json_string_value(json_object_get(o, "window_start")),
               json_string_value(json_object_get(o, "window_end")),
               json_string_value(json_object_get(o, "tz")));
}

static int run(imgq_queue *q, int n, const char **args, json_t **reply)
{
    char err[512];
    if (imgq_queue_script(q, IMGQ_SCRIPT_BUDGET, n, args, reply, err, sizeof err) != 0) {
        fprintf(stderr, "imgq budget: %s\n", err);
        return IMGQ_EXIT_FAIL;
    }
    return 0;
}

static int cmd_set(int argc, char **argv)
{
    static const char *const flags[] = {"limit=", "soft=", "window=", "tz=", "webhook=", NULL};
    static const struct imgq_cli_cmd cmd = {"imgq budget set", USAGE, flags, 1, 1, "NAME"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *name = a.args[0], *limit_s = imgq__cli_opt(&a, "limit"),
               *soft_s = imgq__cli_opt(&a, "soft"), *window = imgq__cli_opt(&a, "window"),
               *tz = imgq__cli_opt(&a, "tz"), *webhook = imgq__cli_opt(&a, "webhook");
    if (!window)
        window = "month";
    if (imgq_budget_name_check(name) != 0) {
        fprintf(stderr,
                "imgq budget set: '%s': a budget is global, team:T, batch:B, model:M or route:R "
                "(no spaces, ',' or '|')\n",
                name);
        return IMGQ_EXIT_USAGE;
    }
    if (!limit_s) {
        fprintf(stderr, "imgq budget set: --limit USD is required\n");
        return IMGQ_EXIT_USAGE;
    }
    imgq_micros limit = 0, soft = 0;
    if (imgq_money_parse(limit_s, &limit) != 0 || limit < 0) {
        fprintf(stderr, "imgq budget set: --limit '%s': not an amount of dollars\n", limit_s);
        return IMGQ_EXIT_USAGE;
    }
    if (soft_s && (imgq_money_parse(soft_s, &soft) != 0 || soft < 0)) {
        fprintf(stderr, "imgq budget set: --soft '%s': not an amount of dollars\n", soft_s);
        return IMGQ_EXIT_USAGE;
    }
    if (soft > limit) {
        fprintf(stderr, "imgq budget set: --soft %s is above --limit %s\n", soft_s, limit_s);
        return IMGQ_EXIT_USAGE;
    }
    if (imgq_budget_window_check(window) != 0) {
        fprintf(stderr, "imgq budget set: --window '%s': use hour, day, month or total\n", window);
        return IMGQ_EXIT_USAGE;
    }
    int total = strcmp(window, "total") == 0;
    if (total && tz) {
        fprintf(stderr, "imgq budget set: --tz: a total (lifetime) budget has no time zone\n");
        return IMGQ_EXIT_USAGE;
    }
    if (!tz)
        tz = "UTC";
    if (!total && imgq_tz_check(tz) != 0) {
        fprintf(stderr, "imgq budget set: --tz '%s': unknown time zone\n", tz);
        return IMGQ_EXIT_USAGE;
    }
    if (webhook && imgq__cli_check_url("imgq budget set: --webhook", webhook) != 0)
        return IMGQ_EXIT_USAGE;
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    int64_t now;
    if (imgq_queue_now_ms(q, &now) != 0) {
        fprintf(stderr, "imgq budget set: cannot read the queue's clock\n");
        return IMGQ_EXIT_FAIL;
    }
    char *tr = NULL;
    if (!total && imgq_budget_transitions(tz, now - IMGQ_BUDGET_TRANSITION_BACK_DAYS * DAY_MS,
                                          now + IMGQ_BUDGET_TRANSITION_DAYS * DAY_MS, &tr) != 0) {
        fprintf(stderr, "imgq budget set: --tz '%s': unknown time zone\n", tz);
        return IMGQ_EXIT_USAGE;
    }
    char lim[32], sft[32];
    snprintf(lim, sizeof lim, "%lld", (long long)limit);
    snprintf(sft, sizeof sft, "%lld", (long long)soft);
    const char *args[] = {"set", name, window,       total ? "" : tz,
                          lim,   sft,  tr ? tr : "", webhook ? webhook : ""};
    json_t *reply = NULL;
    int rc = run(q, 8, args, &reply);
    free(tr);
    if (rc)
        return rc;
    long long woken = jint(reply, 1);
    json_decref(reply);
    char lm[48], sm[48];
    money(limit, lm, sizeof lm);
    printf("budget %s: %s per %s%s%s", name, lm, total ? "lifetime" : window, total ? "" : " in ",
           total ? "" : tz);
    if (soft) {
        money(soft, sm, sizeof sm);
        printf(", soft threshold %s", sm);
    }
    printf("\n");
    if (woken)
        printf("%lld blocked job(s) look again now\n", woken);
    return IMGQ_EXIT_OK;
}

static int cmd_delete(int argc, char **argv)
{
    static const struct imgq_cli_cmd cmd = {"imgq budget delete", USAGE, NULL, 1, 1, "NAME"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *name = a.args[0];
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    const char *args[] = {"del", name};
    json_t *reply = NULL;
    int rc = run(q, 2, args, &reply);
    if (rc)
        return rc;
    long long n = jint(reply, 0);
    json_decref(reply);
    if (!n) {
        fprintf(stderr, "imgq budget delete: no budget '%s'\n", name);
        return IMGQ_EXIT_NOTFOUND;
    }
    printf("budget %s deleted\n", name);
    return IMGQ_EXIT_OK;
}

static int cmd_show_list(int argc, char **argv)
{
    static const char *const flags[] = {"json", NULL};
    static const struct imgq_cli_cmd show_cmd = {"imgq budget show", USAGE, flags, 1, 1, "NAME"};
    static const struct imgq_cli_cmd list_cmd = {"imgq budget list", USAGE, flags, 0, 0, NULL};
    int show = strcmp(argv[0], "show") == 0;
    struct imgq_cli_args a;
    int st = imgq__cli_parse(show ? &show_cmd : &list_cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    int json = imgq__cli_set(&a, "json");
    const char *name = show ? a.args[0] : "";
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    int64_t now = 0;
    if (imgq_queue_now_ms(q, &now) != 0) {
        fprintf(stderr, "imgq budget: cannot read the queue's clock\n");
        return IMGQ_EXIT_FAIL;
    }
    const char *args[] = {show ? "get" : "list", name};
    json_t *reply = NULL;
    int rc = run(q, show ? 2 : 1, args, &reply);
    if (rc)
        return rc;
    if (show && !json_is_array(reply)) {
        json_decref(reply);
        fprintf(stderr, "imgq budget show: no budget '%s'\n", name);
        return IMGQ_EXIT_NOTFOUND;
    }
    json_t *rows = json_array();
    if (show) {
        json_array_append_new(rows, row_json(reply, now));
    } else {
        size_t i;
        json_t *r;
        json_array_foreach(reply, i, r) json_array_append_new(rows, row_json(r, now));
    }
    json_decref(reply);
    size_t i;
    json_t *o;
    json_array_foreach(rows, i, o)
    {
        warn_stale(o);
        if (!json)
            print_row(o);
    }
    if (json) {
        char *s = json_dumps(show ? json_array_get(rows, 0) : rows, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
    } else if (!show && json_array_size(rows) == 0) {
        printf("no budgets\n");
    }
    json_decref(rows);
    return IMGQ_EXIT_OK;
}

int imgq_cmd_budget(int argc, char **argv)
{
    static const struct imgq_cli_sub subs[] = {{"set", cmd_set},
                                               {"delete", cmd_delete},
                                               {"show", cmd_show_list},
                                               {"list", cmd_show_list},
                                               {NULL, NULL}};
    return imgq__cli_dispatch("imgq budget", USAGE, subs, argc, argv);
}
