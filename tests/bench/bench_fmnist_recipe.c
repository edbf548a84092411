/* bench_fmnist_recipe.c: trains a model spec on Fashion-MNIST from the IDX
 * files for some epochs on one CPU thread, the way the pipeline's preprocess
 * prepares the images (the [dataset.fashion-mnist] recipe: optional random
 * crop after zero padding and horizontal flip, re-drawn every epoch, then
 * (x / 255 - mean) / std), and scores the 10,000 t10k images after every
 * epoch in inference mode. Prints one line per epoch: mean training loss,
 * test accuracy, CPU seconds of the epoch and in all. Used to choose the
 * cnn-fmnist recipe of deploy/kiln.ini (docs/performance.md has the curve).
 * The pipeline trains on 90 % of the train file (eval_fraction = 0.1):
 * --train-n 54000 takes that many (a fixed seeded sample).
 *
 * Usage: bench_fmnist_recipe [--dir D] --spec JSON --optim JSON [--batch B]
 *        [--epochs E] [--crop-pad P] [--hflip] [--train-n N] [--seed S]
 *        [--eval-every-steps K] [--save CHECKPOINT]
 * An optim schedule "total" of 0 is replaced by the run's step count. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "image/idx.h"
#include "image/image.h"
#include "nn/model.h"
#include "nn/rng.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static unsigned char *read_idx(const char *path, int *n, int *item)
{
    char err[256];
    kn_idx *f = kn_idx_open(path, err, sizeof(err));
    if (!f) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
    }
    const kn_idx_header *h = kn_idx_hdr(f);
    *n = (int)h->dims[0];
    *item = (int)h->item_size;
    unsigned char *buf = malloc((size_t)*n * *item + 1);
    for (int i = 0; i < *n; i++)
        if (kn_idx_next(f, buf + (size_t)i * *item, err, sizeof(err))) {
            fprintf(stderr, "bench: %s: %s\n", path, err);
            exit(1);
        }
    kn_idx_close(f);
    return buf;
}

static const float MEAN = 0.2860f, STD = 0.3530f;

static double evaluate(kn_model *m, const unsigned char *img, const unsigned char *lab, int n,
                       int eb)
{
    float *x = malloc((size_t)eb * 784 * sizeof(float));
    int *pred = malloc((size_t)eb * sizeof(int)), correct = 0;
    kn_model_set_training(m, 0);
    for (int i0 = 0; i0 < n; i0 += eb) {
        int B = n - i0 < eb ? n - i0 : eb;
        for (int r = 0; r < B; r++)
            for (int p = 0; p < 784; p++)
                x[r * 784 + p] = ((float)img[(size_t)(i0 + r) * 784 + p] / 255.0f - MEAN) / STD;
        kn_batch b = {.B = B, .x = x};
        char err[256];
        if (kn_model_forward(m, &b, NULL, err, sizeof(err))) {
            fprintf(stderr, "bench: %s\n", err);
            exit(1);
        }
        kn_model_predict(m, pred, (size_t)B);
        for (int r = 0; r < B; r++)
            correct += pred[r] == lab[i0 + r];
    }
    kn_model_set_training(m, 1);
    free(x);
    free(pred);
    return (double)correct / n;
}

int main(int argc, char **argv)
{
    const char *dir = "/usr/share/datasets/fashion-mnist", *spec_s = NULL, *optim_s = NULL,
               *save = NULL;
    int batch = 64, epochs = 5, crop_pad = 0, hflip = 0, train_n = 0, eval_every = 0;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--hflip") == 0) {
            hflip = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bench: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--dir") == 0)
            dir = v;
        else if (strcmp(a, "--spec") == 0)
            spec_s = v;
        else if (strcmp(a, "--optim") == 0)
            optim_s = v;
        else if (strcmp(a, "--batch") == 0)
            batch = atoi(v);
        else if (strcmp(a, "--epochs") == 0)
            epochs = atoi(v);
        else if (strcmp(a, "--crop-pad") == 0)
            crop_pad = atoi(v);
        else if (strcmp(a, "--train-n") == 0)
            train_n = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--eval-every-steps") == 0)
            eval_every = atoi(v);
        else if (strcmp(a, "--save") == 0)
            save = v;
        else {
            fprintf(stderr, "bench: unknown option %s\n", a);
            return 2;
        }
    }
    if (!spec_s || !optim_s || batch < 1 || epochs < 1) {
        fprintf(stderr, "usage: bench_fmnist_recipe --spec JSON --optim JSON [--batch B] "
                        "[--epochs E] [--crop-pad P] [--hflip] [--train-n N] [--seed S]\n");
        return 2;
    }
    openblas_set_num_threads(1);
    char path[1024];
    int ntr, nte, item, litem;
    snprintf(path, sizeof(path), "%s/train-images-idx3-ubyte.gz", dir);
    unsigned char *trx = read_idx(path, &ntr, &item);
    snprintf(path, sizeof(path), "%s/train-labels-idx1-ubyte.gz", dir);
    unsigned char *try_ = read_idx(path, &ntr, &litem);
    snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte.gz", dir);
    unsigned char *tex = read_idx(path, &nte, &item);
    snprintf(path, sizeof(path), "%s/t10k-labels-idx1-ubyte.gz", dir);
    unsigned char *tey = read_idx(path, &nte, &litem);
    if (item != 784) {
        fprintf(stderr, "bench: images are not 28x28\n");
        return 1;
    }
    /* the training sample: a seeded permutation's first train_n */
    int *order = malloc((size_t)ntr * sizeof(int));
    for (int i = 0; i < ntr; i++)
        order[i] = i;
    kn_rng rng;
    kn_rng_init(&rng, 12345);
    for (int i = ntr - 1; i > 0; i--) {
        int j = (int)(kn_rng_uniform(&rng) * (float)(i + 1)) % (i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    int n = train_n > 0 && train_n < ntr ? train_n : ntr;
    int steps_per_epoch = (n + batch - 1) / batch;

    json_error_t je;
    json_t *spec = json_loads(spec_s, 0, &je), *oj = json_loads(optim_s, 0, &je);
    if (!spec || !oj) {
        fprintf(stderr, "bench: bad JSON: %s\n", je.text);
        return 2;
    }
    json_t *sched = json_object_get(oj, "schedule");
    if (sched && json_integer_value(json_object_get(sched, "total")) == 0 &&
        json_object_get(sched, "total"))
        json_object_set_new(sched, "total", json_integer((json_int_t)steps_per_epoch * epochs));
    char err[256];
    kn_optim_config oc;
    kn_model *m;
    if (kn_optim_config_from_json(&oc, oj, err, sizeof(err)) ||
        kn_model_new(spec, seed, batch > 500 ? batch : 500, NULL, &m, err, sizeof(err)) ||
        kn_model_set_optim(m, &oc)) {
        fprintf(stderr, "bench: %s\n", err);
        return 2;
    }
    char *os = json_dumps(oj, JSON_COMPACT);
    printf("# spec %s\n# optim %s\n# batch %d epochs %d crop_pad %d hflip %d train %d params %zu\n",
           spec_s, os, batch, epochs, crop_pad, hflip, n, kn_model_num_params(m));
    free(os);
    fflush(stdout);
    kn_model_set_training(m, 1);
    float *x = malloc((size_t)batch * 784 * sizeof(float));
    int *lab = malloc((size_t)batch * sizeof(int));
    int *perm = malloc((size_t)n * sizeof(int));
    kn_image_augment_options ao = {.crop = crop_pad > 0, .crop_pad = crop_pad, .hflip = hflip};
    kn_image img = {0};
    double cpu0 = cpu_now(), wall0 = wall_now();
    long step = 0;
    for (int ep = 1; ep <= epochs; ep++) {
        double ce = cpu_now();
        /* a fresh seeded shuffle per epoch */
        for (int i = 0; i < n; i++)
            perm[i] = order[i];
        kn_rng_init(&rng, seed * 1000003u + (uint64_t)ep);
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(kn_rng_uniform(&rng) * (float)(i + 1)) % (i + 1);
            int t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        double loss_sum = 0.0;
        int nb = 0;
        for (int i0 = 0; i0 < n; i0 += batch) {
            int B = n - i0 < batch ? n - i0 : batch;
            for (int r = 0; r < B; r++) {
                int id = perm[i0 + r];
                const unsigned char *px = trx + (size_t)id * 784;
                float *xr = x + (size_t)r * 784;
                if (crop_pad > 0 || hflip) {
                    kn_image_from_u8(px, 28, 28, 1, &img);
                    uint64_t s =
                        ((uint64_t)ep << 32) ^ ((uint64_t)id * 0x9E3779B97F4A7C15ull) ^ seed;
                    if (!s) s = 1;
                    kn_image_augment(&img, &ao, s, &img);
                    for (int p = 0; p < 784; p++)
                        xr[p] = (img.data[p] / 255.0f - MEAN) / STD;
                    kn_image_free(&img);
                } else {
                    for (int p = 0; p < 784; p++)
                        xr[p] = ((float)px[p] / 255.0f - MEAN) / STD;
                }
                lab[r] = try_[id];
            }
            kn_batch b = {.B = B, .x = x, .labels = lab};
            float loss;
            kn_model_zero_grad(m);
            if (kn_model_forward(m, &b, &loss, err, sizeof(err))) {
                fprintf(stderr, "bench: %s\n", err);
                return 1;
            }
            kn_model_backward(m);
            kn_model_step(m, NULL, NULL);
            loss_sum += loss;
            nb++;
            step++;
            if (eval_every > 0 && step % eval_every == 0) {
                double t = cpu_now();
                double acc = evaluate(m, tex, tey, nte, 500);
                printf("  step %ld acc %.4f (eval %.1f cpu-s)\n", step, acc, cpu_now() - t);
                fflush(stdout);
            }
        }
        double train_cpu = cpu_now() - ce;
        double te = cpu_now();
        double acc = evaluate(m, tex, tey, nte, 500);
        printf(
            "epoch %2d loss %.4f test_acc %.4f train_cpu_s %.1f eval_cpu_s %.1f total_cpu_s %.1f "
            "wall_s %.1f\n",
            ep, loss_sum / nb, acc, train_cpu, cpu_now() - te, cpu_now() - cpu0,
            wall_now() - wall0);
        fflush(stdout);
    }
    if (save && kn_model_save_file(m, NULL, save, err, sizeof(err))) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    free(x);
    free(lab);
    free(perm);
    free(order);
    kn_model_destroy(m);
    json_decref(spec);
    json_decref(oj);
    free(trx);
    free(try_);
    free(tex);
    free(tey);
    return 0;
}
