/* embed_sorted.cuh: the sorted embedding backward's kernels and key
 * layout (embedding.cu launches them, after CUB's radix sort of the keys),
 * in a header of their own so that tests/gpu/test_embed_sorted_host.cpp can
 * compile the same source on the host, with stand-ins for the CUDA
 * built-ins (each block's threads as fibers switched at __syncthreads),
 * and check it against cpu.c's order of additions bit for bit on machines
 * without a GPU. Included once, by embedding.cu, after cuda_int.cuh. */
#ifndef KN_EMBED_SORTED_CUH
#define KN_EMBED_SORTED_CUH

/* Bits of a key that hold the row: the least rbits >= 1 with 2^rbits >= N
 * (rows 0 .. N - 1 fit), at most 31 (N is an int). The token (an id in
 * [0, 2^31)) sits above them, so the keys sort on bits [0, rbits + 31). */
static inline int kn_embed_rbits(int N)
{
    int rbits = 1;
    while (rbits < 31 && (1ll << rbits) < N)
        rbits++;
    return rbits;
}

/* keys[n] = ids[n] << rbits | n: sorted, the rows of one token are
 * contiguous and in row order. */
__global__ void k_embed_keys(unsigned long long *keys, const int *ids, int N, int rbits)
{
    for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x)
        keys[n] = (unsigned long long)(unsigned)ids[n] << rbits | (unsigned)n;
}

#define EMB_THREADS 128 /* channels a block, and rows staged at a time */

/* Blocks (x, y): y picks channels [128 y, 128 y + 128); x walks the sorted
 * positions i = x, x + gridDim.x, ...; where i is the first row of its
 * token (keys[i - 1] belongs to another), the block adds that token's rows
 * to dwte, 128 row numbers at a time staged in shared memory. Every branch
 * on keys is the same for the whole block (the __syncthreads are safe). */
__global__ void __launch_bounds__(EMB_THREADS)
    k_embed_bwd_sorted(float *dwte, const float *dout, const unsigned long long *keys, int N, int C,
                       int rbits)
{
    __shared__ int rows[EMB_THREADS];
    const int c = blockIdx.y * EMB_THREADS + threadIdx.x;
    const unsigned long long rmask = (1ull << rbits) - 1;
    for (int i = blockIdx.x; i < N; i += gridDim.x) {
        const unsigned long long tok = keys[i] >> rbits;
        if (i > 0 && keys[i - 1] >> rbits == tok) continue; /* not the token's first row */
        float *d = dwte + (size_t)tok * C + c;
        float acc = c < C ? *d : 0.0f;
        for (int j0 = i;; j0 += EMB_THREADS) {
            const int j = j0 + threadIdx.x;
            const int mine = j < N && keys[j] >> rbits == tok;
            __syncthreads(); /* the previous chunk's rows are read */
            rows[threadIdx.x] = mine ? (int)(keys[j] & rmask) : 0;
            /* the token's rows are a prefix of the chunk (keys are sorted) */
            const int n = __syncthreads_count(mine);
            if (c < C) {
#pragma unroll 4
                for (int r = 0; r < n; r++)
                    acc += dout[(size_t)rows[r] * C + c];
            }
            if (n < EMB_THREADS) break;
        }
        if (c < C) *d = acc;
    }
}

#endif
