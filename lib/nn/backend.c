/* backend.c: picks a backend by name. The CUDA backend registers here when
 * kiln is built with it (KILN_HAVE_CUDA); otherwise only "cpu" exists. */
#include "nn/backend.h"

#include <string.h>

#include "core/log.h"

#ifdef KILN_HAVE_CUDA
const kn_backend *kn_backend_cuda(void);
const char *kn_backend_cuda_why_not(void);
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
