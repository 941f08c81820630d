/*
 * bill.c - what imgq-sim billed: one entry per generation it performed, as a provider's
 * invoice would list it (GET /sim/bill), so a rehearsal or a test can reconcile imgq's ledger
 * with the provider's side to the micro-dollar.
 *
 * An entry gives the catalog model, the call's shape (quality, size, images asked and
 * returned, prompt bytes, references), the true token counts the simulator worked with, and
 * whether the answer reported them ("reported"), left the usage out ("missing") or spoiled it
 * ("unusable").  The simulator bills a generation from its true counts when it reported them,
 * and at the catalog's ceiling for the request when it did not: a provider that does not say
 * what a call used is assumed to bill the most it could (the figure imgq charges then).  The
 * price itself is left to the reader, with the catalog: the simulator does not share imgq's
 * pricing code with the checks that use it.
 */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define BILL_MAX 200000 /* entries kept; later ones are counted as dropped */

static const char *const usage_names[] = {"reported", "missing", "unusable"};

void sim_bill_record(struct sim *s, const struct sim_bill_entry *e)
{
    if (!s->bill)
        s->bill = json_array();
    if (json_array_size(s->bill) >= BILL_MAX) {
        s->bill_dropped++;
        return;
    }
    char size[32];
    snprintf(size, sizeof size, "%dx%d", e->width, e->height);
    json_t *o = json_pack(
        "{s:s, s:s, s:s?, s:s, s:i, s:i, s:s, s:{s:I, s:I, s:I, s:I}, s:I, s:i, s:b, s:s?, s:I}",
        "endpoint", sim_endpoint_name(e->ep), "model", e->model ? e->model : "", "quality",
        e->quality, "size", size, "n", e->n, "images", e->images, "usage", usage_names[e->usage],
        "tokens", "text_in", (json_int_t)e->text_in, "image_in", (json_int_t)e->image_in,
        "image_out", (json_int_t)e->image_out, "text_out", (json_int_t)e->text_out, "prompt_bytes",
        (json_int_t)e->prompt_bytes, "references", e->references, "answered", e->answered, "prompt",
        e->prompt, "t_ms", (json_int_t)sim_now_ms(s));
    if (o)
        json_array_append_new(s->bill, o);
}

json_t *sim_bill_json(struct sim *s)
{
    return json_pack("{s:O, s:I}", "generations", s->bill ? s->bill : json_array(), "dropped",
                     (json_int_t)s->bill_dropped);
}

/* The catalog model an asynchronous API's request names: by name, provider_model or
 * provider_edit_model. */
static const struct imgq_model *task_model(struct sim *s, const char *name)
{
    const struct imgq_model *m = imgq_catalog_model(s->catalog, name);
    for (size_t i = 0; !m && imgq_catalog_model_at(s->catalog, i); i++) {
        const struct imgq_model *c = imgq_catalog_model_at(s->catalog, i);
        if ((c->provider_model && strcmp(c->provider_model, name) == 0) ||
            (c->provider_edit_model && strcmp(c->provider_edit_model, name) == 0))
            m = c;
    }
    return m;
}

void sim_task_bill(struct sim *s, const struct sim_task *k, int references)
{
    if (k->end != SIM_TASK_OK && k->end != SIM_TASK_NO_USAGE)
        return; /* a failed or moderated task is not billed */
    const struct imgq_model *m = task_model(s, k->model);
    int n = k->n > 0 ? k->n : 1;
    struct sim_bill_entry e = {
        .ep = k->ep,
        .model = m ? m->name : k->model,
        .width = k->w,
        .height = k->h,
        .n = n,
        .images = n,
        .usage = k->end == SIM_TASK_NO_USAGE      ? SIM_BILL_MISSING
                 : k->bad_usage != SIM_USAGE_GOOD ? SIM_BILL_UNUSABLE
                                                  : SIM_BILL_REPORTED,
        .prompt_bytes = k->prompt ? strlen(k->prompt) : 0,
        .references = references,
        .answered = true,
        .prompt = k->prompt,
    };
    sim_bill_record(s, &e);
}

void sim_bill_clear(struct sim *s)
{
    json_decref(s->bill);
    s->bill = NULL;
    s->bill_dropped = 0;
}
