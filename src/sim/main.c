/* main.c - imgq-sim: start-up, signals and a clean shutdown (see sim.h for the layout). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imgq/alloc.h"
#include "sim.h"

struct app {
    struct sim sim;
    uv_signal_t sigint, sigterm;
};

static void on_httpd_closed(void *data)
{
    (void)data;
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    struct sim *s = &a->sim;
    if (s->stopping)
        return;
    s->stopping = true;
    if (s->cfg.verbose)
        fprintf(stderr, "imgq-sim: signal %d, stopping\n", signum);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    imgq_httpd_close(s->httpd, on_httpd_closed, s);
    s->httpd = NULL;
    sim_calls_abort_all(s); /* their requests are aborted now: the answers are dropped */
}

int main(int argc, char **argv)
{
    static struct app app;
    struct sim *s = &app.sim;
    char err[512];
    int status = 1;

    sim_config_init(&s->cfg);
    int rc = sim_config_from_args(&s->cfg, argc, argv, err, sizeof(err));
    if (rc == 1) {
        sim_config_release(&s->cfg);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "imgq-sim: %s\n", err);
        sim_config_release(&s->cfg);
        return 2;
    }
    if (imgq_catalog_load(s->cfg.catalog_path, &s->catalog, err, sizeof(err)) != 0) {
        fprintf(stderr, "imgq-sim: cannot load the catalog: %s\n", err);
        sim_config_release(&s->cfg);
        return 2;
    }
    s->rng = s->cfg.seed_set ? s->cfg.seed
                             : (uint64_t)time(NULL) * 6364136223846793005ull ^ (uint64_t)getpid();
    s->pictures = picture_cache_new(64);

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "imgq-sim: cannot create the event loop\n");
        goto out;
    }
    s->loop = &loop;
    for (int e = 0; e < SIM_EP_COUNT; e++)
        s->window[e].start_ms = uv_now(&loop);

    struct imgq_httpd_options o;
    imgq_httpd_options_init(&o);
    o.host = s->cfg.host;
    o.port = s->cfg.port;
    o.limits.max_body_bytes = s->cfg.max_body_bytes;
    o.idle_timeout_ms = 120000; /* generations can be held for a long --latency-ms */
    if (imgq_httpd_start(&loop, &o, sim_handle, s, &s->httpd, err, sizeof(err)) != 0) {
        fprintf(stderr, "imgq-sim: %s\n", err);
        uv_run(&loop, UV_RUN_DEFAULT); /* finish closing the listener */
        uv_loop_close(&loop);
        goto out;
    }

    uv_signal_init(&loop, &app.sigint);
    uv_signal_init(&loop, &app.sigterm);
    app.sigint.data = app.sigterm.data = &app;
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);

    bool v6 = strchr(s->cfg.host, ':') != NULL;
    printf("listening on http://%s%s%s:%d\n", v6 ? "[" : "", s->cfg.host, v6 ? "]" : "",
           imgq_httpd_port(s->httpd));
    fflush(stdout);
    if (s->cfg.verbose)
        fprintf(stderr, "imgq-sim: catalog %s (version %s), seed %llu\n", s->cfg.catalog_path,
                imgq_catalog_version(s->catalog), (unsigned long long)s->rng);

    uv_run(&loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&loop);
    if (rc != 0) {
        fprintf(stderr, "imgq-sim: event loop still busy at exit: %s\n", uv_strerror(rc));
        goto out;
    }
    status = 0;
out:
    picture_cache_free(s->pictures);
    sim_forget_keys(s);
    sim_tasks_clear(s);
    sim_fail_clear(s);
    sim_bill_clear(s);
    imgq_catalog_free(s->catalog);
    sim_config_release(&s->cfg);
    return status;
}
