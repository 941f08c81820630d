/*
 * webpbench.c - imgq's WebP encode path (imgq_webp_encode: lossy, quality 85, libwebp's default
 * method 4, as the worker calls it) timed on T threads; built and run by tests/bench/webp.sh.
 *
 *   webpbench genpng OUT.png            a 1024x1024 RGB PNG with photo-like texture (gradients,
 *                                       value noise, soft shapes), written with imgq_png_encode
 *   webpbench run IN.png COUNT THREADS  COUNT images over THREADS threads, each one the worker's
 *                                       path: PNG decode (imgq_png_decode) + imgq_webp_encode;
 *                                       prints "decode+encode images/s", then the same with the
 *                                       encode alone (pixels decoded once), and the output size
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/image.h"

static uint8_t *png_buf;
static size_t png_len;
static struct imgq_image pixels;
static int count, nthreads, with_decode;
static size_t out_bytes;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int next_job;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&mu);
        int k = next_job++;
        pthread_mutex_unlock(&mu);
        if (k >= count)
            return NULL;
        struct imgq_image img = {0}, *src = &pixels;
        if (with_decode) {
            if (imgq_png_decode(png_buf, png_len, NULL, IMGQ_PIXELS_AUTO, &img)) {
                fprintf(stderr, "decode failed\n");
                exit(1);
            }
            src = &img;
        }
        uint8_t *out = NULL;
        size_t len = 0;
        if (imgq_webp_encode(src, 85, false, &out, &len)) {
            fprintf(stderr, "encode failed\n");
            exit(1);
        }
        pthread_mutex_lock(&mu);
        out_bytes = len;
        pthread_mutex_unlock(&mu);
        free(out);
        if (with_decode)
            imgq_image_release(&img);
    }
}

static double run(int decode)
{
    with_decode = decode;
    next_job = 0;
    pthread_t th[64];
    double t0 = now();
    for (int i = 0; i < nthreads; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    return count / (now() - t0);
}

static uint32_t hash(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352d;
    x ^= x >> 15;
    x *= 0x846ca68b;
    x ^= x >> 16;
    return x;
}

/* value noise at a cell size, 0..255 */
static double vnoise(int x, int y, int cell, uint32_t seed)
{
    int cx = x / cell, cy = y / cell;
    double fx = (double)(x % cell) / cell, fy = (double)(y % cell) / cell;
#define V(a, b) (hash((uint32_t)((a)*73856093u ^ (b)*19349663u ^ seed)) & 255)
    double v00 = V(cx, cy), v10 = V(cx + 1, cy), v01 = V(cx, cy + 1), v11 = V(cx + 1, cy + 1);
#undef V
    fx = fx * fx * (3 - 2 * fx);
    fy = fy * fy * (3 - 2 * fy);
    return (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy;
}

static int genpng(const char *path)
{
    struct imgq_image img;
    if (imgq_image_init(&img, 1024, 1024, 3))
        return 1;
    for (int y = 0; y < 1024; y++)
        for (int x = 0; x < 1024; x++) {
            for (int c = 0; c < 3; c++) {
                double v = 0.45 * vnoise(x, y, 128, 11 + c) + 0.25 * vnoise(x, y, 32, 23 + c) +
                           0.15 * vnoise(x, y, 8, 37 + c) + 0.10 * vnoise(x, y, 2, 51 + c) +
                           0.05 * (x + y) / 8.0;
                int dx = x - 512, dy = y - 560;
                if (dx * dx + dy * dy < 200 * 200) /* a "product" in the middle */
                    v = v * 0.4 + (c == 0 ? 150 : c == 1 ? 90 : 60) + 0.2 * vnoise(x, y, 4, 77);
                img.pixels[(size_t)y * img.stride + (size_t)x * 3 + c] = (uint8_t)(v < 0     ? 0
                                                                                   : v > 255 ? 255
                                                                                             : v);
            }
        }
    uint8_t *out;
    size_t len;
    if (imgq_png_encode(&img, 6, &out, &len))
        return 1;
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(out, 1, len, f) != len || fclose(f))
        return 1;
    free(out);
    imgq_image_release(&img);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "genpng") == 0)
        return genpng(argv[2]);
    if (argc != 5 || strcmp(argv[1], "run") != 0) {
        fprintf(stderr, "usage: webpbench genpng OUT.png | run IN.png COUNT THREADS\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f)
        return 1;
    fseek(f, 0, SEEK_END);
    png_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    png_buf = malloc(png_len);
    if (fread(png_buf, 1, png_len, f) != png_len)
        return 1;
    fclose(f);
    count = atoi(argv[3]);
    nthreads = atoi(argv[4]);
    if (nthreads < 1 || nthreads > 64 || count < 1)
        return 2;
    if (imgq_png_decode(png_buf, png_len, NULL, IMGQ_PIXELS_AUTO, &pixels))
        return 1;
    double a = run(1);
    double b = run(0);
    printf("decode+encode_ips %.2f\nencode_ips %.2f\nwebp_bytes %zu\n", a, b, out_bytes);
    return 0;
}
