/* backend.c: picks a backend by name. The CUDA backend registers here when
 * kiln is built with it (KILN_HAVE_CUDA); otherwise only "cpu" exists. */
#include "nn/backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#ifdef KILN_HAVE_CUDA
const kn_backend *kn_backend_cuda(void);
const char *kn_backend_cuda_why_not(void);
void kn_backend_cuda_profile_range(int on);
#endif

const kn_backend *kn_backend_get(const char *name)
{
    if (!name || strcmp(name, "cpu") == 0) return kn_backend_cpu();
#ifdef KILN_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) return kn_backend_cuda();
#endif
    return NULL;
}

const kn_backend *kn_backend_pick(const char *setting)
{
    if (strcmp(setting, "cuda") == 0) return kn_backend_get("cuda");
    if (strcmp(setting, "cpu") == 0) return kn_backend_cpu();
    if (strcmp(setting, "auto") != 0) return NULL;
    const kn_backend *be = KN_AUTO_PICKS_CUDA ? kn_backend_get("cuda") : NULL;
    if (be) {
        kn_log_info("backend auto: cuda (a GPU answered and libcublas loaded)");
        return be;
    }
    if (KN_AUTO_PICKS_CUDA) {
        const char *why = kn_backend_why_not("cuda");
        kn_log_warn("backend auto: falling back to the CPU backend: CUDA is not usable here (%s)",
                    why ? why : "unknown reason");
    } else {
        kn_log_info("backend auto: cpu (KN_AUTO_PICKS_CUDA is 0 in this build)");
    }
    return kn_backend_cpu();
}

const char *kn_backend_why_not(const char *name)
{
    if (!name || strcmp(name, "cpu") == 0) return NULL;
#ifdef KILN_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) return kn_backend_cuda_why_not();
    return "no such backend (cpu, cuda)";
#else
    return strcmp(name, "cuda") == 0 ? "this build has no CUDA backend (nvcc was not found)"
                                     : "no such backend (cpu)";
#endif
}

void kn_backend_profile_range(const kn_backend *be, int on)
{
#ifdef KILN_HAVE_CUDA
    if (be && strncmp(be->name, "cuda", 4) == 0) kn_backend_cuda_profile_range(on);
#else
    (void)be, (void)on;
#endif
}

/* ------------------------------------------------------------ memory ledger
 * One per backend kind: every live buffer (pointer, size, kind), so that
 * free() knows what it gives back whatever the allocator. A few dozen
 * entries in practice (tensor sets are one allocation each), so a list
 * searched from its end is enough. */

typedef struct {
    const void *p;
    size_t bytes;
    int scratch;
} mem_entry;

typedef struct {
    pthread_mutex_t lock;
    mem_entry *e;
    size_t n, cap;
    kn_mem_stats st;
} mem_ledger;

static mem_ledger ledgers[2] = {{.lock = PTHREAD_MUTEX_INITIALIZER}, {.lock = PTHREAD_MUTEX_INITIALIZER}};

void kn_mem_note_alloc(int ledger, int scratch, const void *p, size_t bytes)
{
    if (!p) return;
    mem_ledger *l = &ledgers[ledger];
    pthread_mutex_lock(&l->lock);
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        mem_entry *e = realloc(l->e, cap * sizeof(*e));
        if (!e) { /* the count would be wrong from here on: say so, keep going */
            pthread_mutex_unlock(&l->lock);
            fprintf(stderr, "kiln: memory ledger: out of host memory\n");
            return;
        }
        l->e = e, l->cap = cap;
    }
    l->e[l->n++] = (mem_entry){p, bytes, scratch};
    kn_mem_stats *s = &l->st;
    if (scratch) {
        s->scratch += bytes;
        if (s->scratch > s->scratch_peak) s->scratch_peak = s->scratch;
    } else {
        s->alloc += bytes;
        if (s->alloc > s->alloc_peak) s->alloc_peak = s->alloc;
    }
    if (s->alloc + s->scratch > s->peak) s->peak = s->alloc + s->scratch;
    pthread_mutex_unlock(&l->lock);
}

void kn_mem_note_free(int ledger, const void *p)
{
    if (!p) return;
    mem_ledger *l = &ledgers[ledger];
    pthread_mutex_lock(&l->lock);
    for (size_t i = l->n; i-- > 0;)
        if (l->e[i].p == p) {
            if (l->e[i].scratch)
                l->st.scratch -= l->e[i].bytes;
            else
                l->st.alloc -= l->e[i].bytes;
            l->e[i] = l->e[--l->n]; /* order does not matter */
            break;
        }
    pthread_mutex_unlock(&l->lock);
}

void kn_backend_mem(const kn_backend *be, kn_mem_stats *out, int reset_peak)
{
    mem_ledger *l = &ledgers[strcmp(be->name, "cuda") == 0 ? KN_MEM_CUDA : KN_MEM_CPU];
    pthread_mutex_lock(&l->lock);
    if (reset_peak) {
        l->st.alloc_peak = l->st.alloc;
        l->st.scratch_peak = l->st.scratch;
        l->st.peak = l->st.alloc + l->st.scratch;
    }
    *out = l->st;
    pthread_mutex_unlock(&l->lock);
}
