/* cublas.c: finds and opens libcublas (and libcublasLt), resolves the
 * functions of kn_cublas_api (kn_cublaslt_api). Plain C: needs only the
 * CUDA runtime headers for types. */
#include "nn/cuda/cublas.h"

#include <dlfcn.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_cublas_api api;
static int loaded; /* 1 ok, -1 failed */
static char load_error[2048];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void *try_open(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h) snprintf(api.path, sizeof(api.path), "%s", path);
    return h;
}

static void *open_cublas(void)
{
    const char *env = getenv("KILN_CUBLAS_LIB");
    void *h = NULL;
    if (env && (h = try_open(env))) return h;
    static const char *const names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so.11",
                                        "/usr/local/cuda/lib64/libcublas.so.13",
                                        "/usr/local/cuda/lib64/libcublas.so.12",
                                        "/usr/local/cuda/lib64/libcublas.so"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((h = try_open(names[i]))) return h;
    static const char *const patterns[] = {
        "/opt/*/.venv/lib/python3*/site-packages/nvidia/cublas/lib/libcublas.so.*",
        "/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib/libcublas.so.*",
        "/usr/lib/python3/dist-packages/nvidia/cublas/lib/libcublas.so.*"};
    for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]) && !h; i++) {
        glob_t g;
        if (glob(patterns[i], 0, NULL, &g) == 0) {
            for (size_t k = g.gl_pathc; k-- > 0 && !h;) /* highest version first */
                if (!strstr(g.gl_pathv[k], "Lt")) h = try_open(g.gl_pathv[k]);
        }
        globfree(&g);
    }
    return h;
}

static void load_once(void)
{
    void *h = open_cublas();
    if (!h) {
        snprintf(load_error, sizeof(load_error),
                 "libcublas not found (set KILN_CUBLAS_LIB; looked for libcublas.so.13/12/11 on "
                 "the loader path, in /usr/local/cuda/lib64 and in the nvidia-cublas Python wheel)");
        loaded = -1;
        return;
    }
    struct {
        void **slot;
        const char *sym;
    } syms[] = {
        {(void **)&api.create, "cublasCreate_v2"},
        {(void **)&api.destroy, "cublasDestroy_v2"},
        {(void **)&api.set_stream, "cublasSetStream_v2"},
        {(void **)&api.set_math_mode, "cublasSetMathMode"},
        {(void **)&api.set_workspace, "cublasSetWorkspace_v2"},
        {(void **)&api.sgemm, "cublasSgemm_v2"},
        {(void **)&api.sgemm_strided_batched, "cublasSgemmStridedBatched"},
        {(void **)&api.gemm_ex, "cublasGemmEx"},
        {(void **)&api.gemm_strided_batched_ex, "cublasGemmStridedBatchedEx"},
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        *syms[i].slot = dlsym(h, syms[i].sym);
        if (!*syms[i].slot) {
            snprintf(load_error, sizeof(load_error), "%s: symbol %s missing", api.path,
                     syms[i].sym);
            loaded = -1;
            return;
        }
    }
    loaded = 1;
}

const kn_cublas_api *kn_cublas_load(char *errbuf, size_t errsz)
{
    pthread_once(&once, load_once);
    if (loaded == 1) return &api;
    if (errbuf && errsz) snprintf(errbuf, errsz, "%s", load_error);
    return NULL;
}

/* ------------------------------------------------------------ cuBLASLt */

static kn_cublaslt_api lt;
static int lt_loaded;
static char lt_error[1024];
static pthread_once_t lt_once = PTHREAD_ONCE_INIT;

static void *lt_try(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h) snprintf(lt.path, sizeof(lt.path), "%s", path);
    return h;
}

static void lt_load_once(void)
{
    const char *env = getenv("KILN_CUBLASLT_LIB");
    void *h = env ? lt_try(env) : NULL;
    static const char *const names[] = {"libcublasLt.so.13", "libcublasLt.so.12",
                                        "libcublasLt.so.11"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !h; i++)
        h = lt_try(names[i]);
    /* beside libcublas: .../libcublas.so.N -> .../libcublasLt.so.N */
    if (!h && kn_cublas_load(NULL, 0)) {
        char p[600];
        const char *slash = strrchr(api.path, '/'), *ver = slash ? strstr(slash, ".so") : NULL;
        if (slash && ver) {
            snprintf(p, sizeof(p), "%.*s/libcublasLt%.32s", (int)(slash - api.path), api.path, ver);
            h = lt_try(p);
        }
    }
    if (!h) {
        snprintf(lt_error, sizeof(lt_error),
                 "libcublasLt not found (set KILN_CUBLASLT_LIB; looked for libcublasLt.so.13/12/11 "
                 "and beside libcublas)");
        lt_loaded = -1;
        return;
    }
    struct {
        void **slot;
        const char *sym;
    } syms[] = {
        {(void **)&lt.create, "cublasLtCreate"},
        {(void **)&lt.desc_create, "cublasLtMatmulDescCreate"},
        {(void **)&lt.desc_destroy, "cublasLtMatmulDescDestroy"},
        {(void **)&lt.desc_set, "cublasLtMatmulDescSetAttribute"},
        {(void **)&lt.layout_create, "cublasLtMatrixLayoutCreate"},
        {(void **)&lt.layout_destroy, "cublasLtMatrixLayoutDestroy"},
        {(void **)&lt.pref_create, "cublasLtMatmulPreferenceCreate"},
        {(void **)&lt.pref_destroy, "cublasLtMatmulPreferenceDestroy"},
        {(void **)&lt.pref_set, "cublasLtMatmulPreferenceSetAttribute"},
        {(void **)&lt.heuristic, "cublasLtMatmulAlgoGetHeuristic"},
        {(void **)&lt.matmul, "cublasLtMatmul"},
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        *syms[i].slot = dlsym(h, syms[i].sym);
        if (!*syms[i].slot) {
            snprintf(lt_error, sizeof(lt_error), "%s: symbol %s missing", lt.path, syms[i].sym);
            lt_loaded = -1;
            return;
        }
    }
    lt_loaded = 1;
}

const kn_cublaslt_api *kn_cublaslt_load(char *errbuf, size_t errsz)
{
    pthread_once(&lt_once, lt_load_once);
    if (lt_loaded == 1) return &lt;
    if (errbuf && errsz) snprintf(errbuf, errsz, "%s", lt_error);
    return NULL;
}
