/* bench_image.c: single-core images/s of lib/image's decode + augment +
 * normalize, for a 28x28 grayscale PNG (MNIST-like) and a 224x224 RGB JPEG
 * (quality 90, photo-like texture), with the time of each step.
 * Augmentation: crop (pad 4) + hflip + rotate (15 deg) + jitter + noise, i.e.
 * everything on, a fresh seed per image.
 * Usage: bench_image [seconds-per-measure (default 2)] */
#include "image/image.h"
#include "core/kn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef KILN_HAVE_SPNG
#include <spng.h>
#endif
#ifdef KILN_HAVE_TURBOJPEG
#include <turbojpeg.h>
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* This thread's CPU seconds (on a loaded machine wall time includes the
 * time other processes ran). */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Smooth shapes plus pseudo-random texture, so codecs work as on real data. */
static uint8_t *synth(int w, int h, int c)
{
    uint8_t *p = malloc((size_t)w * h * c);
    if (!p) exit(1);
    uint64_t x = 88172645463325252ull;
    for (int y = 0; y < h; y++)
        for (int i = 0; i < w; i++)
            for (int k = 0; k < c; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                int dx = i - w / 2, dy = y - h / 3;
                int v = (dx * dx + dy * dy < w * h / 8 ? 180 : 40) + (i * 50) / w + k * 15 +
                        (int)(x % 24);
                p[((size_t)y * w + i) * c + k] = (uint8_t)(v > 255 ? 255 : v);
            }
    return p;
}

typedef struct {
    const char *name;
    const void *bytes;
    size_t len;
    int w, h, c; /* the size the model wants */
} workload;

static void run(const workload *wl, double secs)
{
    kn_image_augment_options o = {0};
    o.crop = 1;
    o.crop_pad = 4;
    o.hflip = 1;
    o.rotate = 1;
    o.max_degrees = 15;
    o.jitter = 1;
    o.brightness = 25;
    o.contrast = 0.2f;
    o.noise = 1;
    o.noise_std = 4;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    char err[256];
    double t_dec = 0, t_aug = 0, t_norm = 0, t0 = now(), c0 = cpu_now();
    long n = 0;
    while (now() - t0 < secs) {
        kn_image img = {0};
        double a = now();
        if (kn_image_decode(wl->bytes, wl->len, 0, &img, err, sizeof(err)) != KN_OK) {
            fprintf(stderr, "%s: %s\n", wl->name, err);
            exit(1);
        }
        if (img.w != wl->w || img.h != wl->h || img.c != wl->c)
            kn_image_convert(&img, wl->w, wl->h, wl->c, &img);
        double b = now();
        if (kn_image_augment(&img, &o, (uint64_t)n, &img) != KN_OK) exit(1);
        double c = now();
        kn_image_normalize(&img, mean, std);
        double d = now();
        t_dec += b - a;
        t_aug += c - b;
        t_norm += d - c;
        kn_image_free(&img);
        n++;
    }
    double total = t_dec + t_aug + t_norm;
    /* CPU share of the wall time, applied to each step alike (per-step CPU
     * clocks would cost more than a 28x28 decode) */
    double share = (cpu_now() - c0) / (now() - t0);
    printf("%-26s %9.0f images/s  (decode %7.1f us, augment %7.1f us, normalize %6.1f us per "
           "image; %ld images)\n",
           wl->name, n / total, 1e6 * t_dec / n, 1e6 * t_aug / n, 1e6 * t_norm / n, n);
    printf("%-26s per CPU-second (CPU %.0f%% of the wall time): %.0f images, decode alone %.0f\n",
           "", 100 * share, n / (total * share), n / (t_dec * share));
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    if (secs <= 0) secs = 2.0;
    printf("bench_image: single core, decode + augment (all on) + normalize\n");
#ifdef KILN_HAVE_SPNG
    {
        uint8_t *px = synth(28, 28, 1);
        spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
        spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
        struct spng_ihdr ih = {28, 28, 8, SPNG_COLOR_TYPE_GRAYSCALE, 0, 0, 0};
        spng_set_ihdr(ctx, &ih);
        if (spng_encode_image(ctx, px, 28 * 28, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE) != 0) return 1;
        size_t len;
        int e;
        void *png = spng_get_png_buffer(ctx, &len, &e);
        spng_ctx_free(ctx);
        workload wl = {"28x28 gray PNG", png, len, 28, 28, 1};
        run(&wl, secs);
        free(png);
        free(px);
    }
#else
    printf("28x28 gray PNG: SKIPPED (built without libspng)\n");
#endif
#ifdef KILN_HAVE_TURBOJPEG
    {
        uint8_t *px = synth(224, 224, 3);
        tjhandle tj = tjInitCompress();
        unsigned char *jpg = NULL;
        unsigned long len = 0;
        if (tjCompress2(tj, px, 224, 0, 224, TJPF_RGB, &jpg, &len, TJSAMP_420, 90, 0) != 0)
            return 1;
        tjDestroy(tj);
        workload wl = {"224x224 RGB JPEG", jpg, len, 224, 224, 3};
        run(&wl, secs);
        tjFree(jpg);
        free(px);
    }
#else
    printf("224x224 RGB JPEG: SKIPPED (built without TurboJPEG)\n");
#endif
    return 0;
}
