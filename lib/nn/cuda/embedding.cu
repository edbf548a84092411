/* embedding.cu: token and position embeddings. Forward is a gather, one
 * thread per output float. Position gradients sum over the batch, one
 * thread per (t, c). Cost: memory-bound.
 *
 * Backward of the token table, deterministic and without atomics, in the
 * CPU's order of additions (cpu.c adds the rows in row order, so each
 * dwte element is ((dwte + row a) + row b) + ... over the rows of its
 * token, in row order): the N (token, row) pairs are sorted by token as
 * 64-bit keys (token << rbits | row: a radix sort, CUB's, so rows stay in
 * order within a token), then each distinct token is summed by blocks of
 * 128 channels (one thread a channel, the token's rows in row order). The
 * rows of different tokens run in parallel; one token's rows are a serial
 * chain per channel (the price of the CPU's bits), over C / 128 blocks.
 * Before (KILN_CUDA_EMBED_BWD=serial, read once, still selects it): one
 * thread per channel walked all N rows, so the whole backward was N
 * dependent steps on C threads (GPT-2 B=32: 32768 steps on 768 threads). */
#include "nn/cuda/cuda_int.cuh"

#include <cub/device/device_radix_sort.cuh>

#include "nn/cuda/embed_sorted.cuh" /* the sorted backward's kernels */

#include "nn/cuda/embedding.cuh" /* k_embed_fwd, k_embed_bwd, k_posemb_fwd, k_posemb_bwd */

void kn_cu_embed_fwd(float *out, const int *ids, const float *wte, int N, int C)
{
    k_embed_fwd<<<plane_grid(C, N), 256>>>(out, ids, wte, N, C);
    LAUNCHED();
}

/* 1: the old one-thread-per-channel kernel (KILN_CUDA_EMBED_BWD=serial). */
static int embed_serial(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("KILN_CUDA_EMBED_BWD");
        v = e && !strcmp(e, "serial");
    }
    return v;
}

void kn_cu_embed_bwd(float *dwte, const float *dout, const int *ids, int N, int C)
{
    if (N <= 0 || C <= 0) return;
    if (embed_serial()) {
        k_embed_bwd<<<blocks_for((size_t)C, 128), 128>>>(dwte, dout, ids, N, C);
        LAUNCHED();
        return;
    }
    /* keys: token << rbits | row; ids are ints in [0, 2^31) */
    const int rbits = kn_embed_rbits(N), end_bit = rbits + 31;
    size_t tmp_bytes = 0;
    CU(cub::DeviceRadixSort::SortKeys(NULL, tmp_bytes, (const unsigned long long *)NULL,
                                      (unsigned long long *)NULL, N, 0, end_bit));
    /* scratch: keys in, keys out (each 256-byte aligned), CUB's temporary storage */
    const size_t kbytes = ((size_t)N * sizeof(unsigned long long) + 255) & ~(size_t)255;
    char *sc = (char *)kn_cu_scratch((2 * kbytes + tmp_bytes + sizeof(float) - 1) / sizeof(float));
    unsigned long long *kin = (unsigned long long *)sc, *kout = (unsigned long long *)(sc + kbytes);
    k_embed_keys<<<blocks_for((size_t)N, 256), 256>>>(kin, ids, N, rbits);
    LAUNCHED();
    CU(cub::DeviceRadixSort::SortKeys(sc + 2 * kbytes, tmp_bytes, kin, kout, N, 0, end_bit));
    dim3 grid(N < 4096 ? N : 4096, (C + EMB_THREADS - 1) / EMB_THREADS);
    k_embed_bwd_sorted<<<grid, EMB_THREADS>>>(dwte, dout, kout, N, C, rbits);
    LAUNCHED();
}

void kn_cu_posemb_fwd(float *out, const float *wpe, int B, int T, int C)
{
    k_posemb_fwd<<<plane_grid(C, B * T), 256>>>(out, wpe, B, T, C);
    LAUNCHED();
}

void kn_cu_posemb_bwd(float *dwpe, const float *dout, int B, int T, int C)
{
    k_posemb_bwd<<<blocks_for((size_t)T * C, 256), 256>>>(dwpe, dout, B, T, C);
    LAUNCHED();
}
