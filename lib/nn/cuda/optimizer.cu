/* optimizer.cu: the per-element update rules (SGD with momentum, Adam,
 * AdamW, RMSprop, as cpu.c and torch.optim) in one grid-stride kernel per
 * tensor, and the global sums (gradient norm for clipping): 256 blocks of
 * 256 threads accumulate in double in a fixed pattern, the host adds the 256
 * partials in order, so the result is the same bits run to run. Cost:
 * memory-bound, the update reads 4 and writes 3 floats per parameter.
 *
 * The multi-tensor update (optim_update_all, what kn_optim_update runs):
 * one block per chunk of a table built once by kn_optim_new (offset,
 * length <= 65536, decay), so every tensor of the model is updated by one
 * launch instead of one launch per tensor (GPT-2: 148 launches of mostly
 * tiny tensors, each a few us of launch gap, ~0.5 ms a step). Clipping is
 * one reduction feeding it on the device: the same 256 double partials as
 * sumsq, whose last block to finish (a counter, reset by that block) adds
 * them in order, as the host would, and writes the norm and the scale; the
 * update reads the scale. Two launches and no host round trip, where the
 * per-tensor path stopped the stream to read the norm back. The norm goes
 * to the host only when asked (a 4-byte copy after the update). Captured
 * in a graph (graph.cu) the arguments travel through device memory and
 * the norm is copied asynchronously, both to and from pinned memory. */
#include "nn/cuda/cuda_int.cuh"
#include "nn/cuda/optimizer.cuh"

/* ------------------------------------------------------------ reductions */

static double *partials;
static kn_optim_args *dev_args; /* the captured update's arguments */
static norm_state *nstate;      /* the norm and the clipping scale (optimizer.cuh) */

void kn_cu_reduce_init(void)
{
    partials = (double *)kn_cu_scratch_alloc(RED_BLOCKS * sizeof(double));
    nstate = (norm_state *)kn_cu_scratch_alloc(sizeof(norm_state));
    CU(cudaMemset(nstate, 0, sizeof(norm_state)));
    CU(cudaMalloc(&dev_args, sizeof(kn_optim_args)));
}

static double reduce(const float *x, size_t n, int square)
{
    if (!n) return 0.0;
    k_reduce<<<RED_BLOCKS, 256, 0, kn_cu_stream>>>(partials, x, n, square);
    LAUNCHED();
    double host[RED_BLOCKS];
    CU(cudaMemcpy(host, partials, sizeof(host), cudaMemcpyDeviceToHost));
    return red_total(host, RED_BLOCKS);
}

double kn_cu_sum(const float *x, size_t n)
{
    return reduce(x, n, 0);
}

double kn_cu_sumsq(const float *x, size_t n)
{
    return reduce(x, n, 1);
}

/* ------------------------------------------------------------ optimizers */

void kn_cu_optim_update(const kn_optim_args *a, float *param, const float *grad, float *m, float *v,
                        size_t n)
{
    k_optim<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(*a, param, grad, m, v, n);
    LAUNCHED();
}

void kn_cu_optim_update_all(const kn_optim_args *a, float clip, float *param, const float *grad,
                            float *m, float *v, size_t numel, const kn_optim_chunk *chunks,
                            int nchunks, float *norm)
{
    const int want_norm = clip > 0.0f || norm;
    if (want_norm && numel) {
        k_sumsq_clip<<<RED_BLOCKS, 256, 0, kn_cu_stream>>>(partials, nstate, grad, numel, clip);
        LAUNCHED();
    }
    /* captured: *a (pinned, rewritten by the host before each replay) goes
     * to the device in the graph, and the kernel reads it there */
    const kn_optim_args *da = NULL;
    if (kn_cu_capturing) {
        CU(cudaMemcpyAsync(dev_args, a, sizeof(*a), cudaMemcpyHostToDevice, kn_cu_stream));
        da = dev_args;
    }
    if (nchunks) {
        k_optim_all<<<nchunks, 256, 0, kn_cu_stream>>>(*a, da, want_norm && numel ? nstate : NULL,
                                                       param, grad, m, v, chunks);
        LAUNCHED();
    }
    if (norm && kn_cu_capturing) {
        /* *norm is pinned too: each replay writes it */
        if (numel)
            CU(cudaMemcpyAsync(norm, &nstate->norm, sizeof(float), cudaMemcpyDeviceToHost,
                               kn_cu_stream));
        else
            *norm = 0.0f;
    } else if (norm) {
        norm_state h = {0.0f, 1.0f, 0};
        if (numel) CU(cudaMemcpy(&h, nstate, sizeof(h), cudaMemcpyDeviceToHost));
        *norm = h.norm;
    }
}
