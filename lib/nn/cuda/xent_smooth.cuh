/* xent_smooth.cuh: batchnorm.cu's label-smoothing kernels (no launches:
 * batchnorm.cu launches them), in a header of their own so that
 * tests/gpu/test_classifier_host.cpp compiles the same source on the host
 * (tests/gpu/host_cuda.h's stand-ins) with classifier.cuh's and checks
 * them against the CPU backend without a GPU. Included once, by
 * batchnorm.cu, after cuda_int.cuh (warp_sum: reduce.cuh). */
#ifndef KN_XENT_SMOOTH_CUH
#define KN_XENT_SMOOTH_CUH

/* one warp per row: the mean of its V logits */
__global__ void k_xent_smooth_fwd(float *losses, const float *logits, const float *lse,
                                  const int *targets, float s, int N, int V, int Vp)
{
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N || targets[n] < 0) return;
    const float *l = logits + (size_t)n * Vp;
    float acc = 0.0f;
    for (int i = lane; i < V; i += 32)
        acc += l[i];
    float mean = warp_sum(acc) / (float)V;
    if (lane == 0) losses[n] = (1.0f - s) * losses[n] + s * (lse[n] - mean);
}

__global__ void k_xent_smooth_bwd(float *dlogits, const int *targets, float sdloss, int N, int V,
                                  int Vp)
{
    const float u = sdloss / (float)V;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < (size_t)N * V;
         k += (size_t)gridDim.x * blockDim.x) {
        int n = (int)(k / V), i = (int)(k % V), t = targets[n];
        if (t < 0) continue;
        dlogits[(size_t)n * Vp + i] += (i == t ? sdloss : 0.0f) - u;
    }
}

#endif /* KN_XENT_SMOOTH_CUH */
