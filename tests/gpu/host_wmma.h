/* host_wmma.h: nvcuda::wmma emulated for the host-kernel tests, on top of
 * host_cuda.h (include that first), from the documented layouts: lane 0 of
 * a warp loads, multiplies and stores whole 16 x 16 tiles (the other
 * lanes' copies are never read). Every load_matrix_sync and
 * store_matrix_sync checks the programming guide's rules (B.24.3): the
 * pointer 256-bit (32-byte) aligned, ldm a multiple of 16 bytes (8 bf16, 4
 * floats); and here also the whole tile inside the shared memory: the
 * dynamic buffer where the launch asks for one (kernels with `extern
 * __shared__ smem_raw[]`), else one static __shared__ variable (so a
 * kernel's WMMA on global memory would count as a fault here). A rule
 * broken counts in wmma_faults (the first five on stderr). Not emulated:
 * the hardware's own fragment layouts. */
#ifndef KN_HOST_WMMA_H
#define KN_HOST_WMMA_H

#ifndef KN_HOST_CUDA_H
#error "include host_cuda.h before host_wmma.h"
#endif

static int wmma_faults; /* WMMA rules broken */

namespace wmma
{
struct matrix_a {
};
struct matrix_b {
};
struct accumulator {
};
struct row_major {
};
struct col_major {
};
namespace precision
{
struct tf32 {
};
} // namespace precision
enum layout_t { mem_row_major, mem_col_major };
template <class U, int M, int N, int K, class T, class L = void> struct fragment {
    float x[16][16];
};
static inline float val(float f)
{
    return f;
}
static inline float val(__nv_bfloat16 b)
{
    return u2f((unsigned)b.bits << 16);
}
static inline bool lane0()
{
    return threadIdx.x % 32 == 0;
}

/* [a, last) inside the n bytes at p */
static inline bool inside(uintptr_t a, uintptr_t last, const void *p, size_t n)
{
    return a >= (uintptr_t)p && last <= (uintptr_t)p + n;
}
static bool in_static_shared(uintptr_t a, uintptr_t last)
{
    for (int i = 0; i < n_smem_vars; i++)
        if (inside(a, last, smem_vars[i].p, smem_vars[i].n)) return true;
    return false;
}

/* p's tile: `lines` rows (or columns) of `width` elements, ld apart */
template <class E> static void rules(const E *p, unsigned ld, int lines, int width, const char *op)
{
    const uintptr_t a = (uintptr_t)p, last = (uintptr_t)(p + (lines - 1) * (size_t)ld + width);
    const char *why = a % 32                ? "pointer not 32-byte aligned"
                      : ld * sizeof(E) % 16 ? "ldm not a multiple of 16 bytes"
                      : smem_bytes && !inside(a, last, smem_raw, smem_bytes)
                          ? "tile outside the dynamic shared memory"
                      : !smem_bytes && !in_static_shared(a, last)
                          ? "tile outside every static shared variable"
                          : NULL;
    if (why) {
        if (wmma_faults++ < 5)
            fprintf(stderr, "WMMA fault: %s: %s (pointer %% 32 = %d, ldm %u x %zu bytes)\n", op,
                    why, (int)(a % 32), ld, sizeof(E));
    }
}

template <class U, int M, int N, int K, class T, class L>
void fill_fragment(fragment<U, M, N, K, T, L> &f, float v)
{
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            f.x[i][j] = v;
}
template <int M, int N, int K, class T, class E>
void load_matrix_sync(fragment<matrix_a, M, N, K, T, row_major> &f, const E *p, unsigned ld)
{
    if (!lane0()) return;
    rules(p, ld, M, K, "load a row");
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            f.x[i][k] = val(p[i * ld + k]);
}
template <int M, int N, int K, class T, class E>
void load_matrix_sync(fragment<matrix_a, M, N, K, T, col_major> &f, const E *p, unsigned ld)
{
    if (!lane0()) return;
    rules(p, ld, K, M, "load a col");
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            f.x[i][k] = val(p[i + k * ld]);
}
template <int M, int N, int K, class T, class E>
void load_matrix_sync(fragment<matrix_b, M, N, K, T, row_major> &f, const E *p, unsigned ld)
{
    if (!lane0()) return;
    rules(p, ld, K, N, "load b row");
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++)
            f.x[k][j] = val(p[k * ld + j]);
}
template <int M, int N, int K, class T, class E>
void load_matrix_sync(fragment<matrix_b, M, N, K, T, col_major> &f, const E *p, unsigned ld)
{
    if (!lane0()) return;
    rules(p, ld, N, K, "load b col");
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++)
            f.x[k][j] = val(p[k + j * ld]);
}
template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ld,
                      layout_t l)
{
    if (!lane0()) return;
    rules(p, ld, l == mem_row_major ? M : N, l == mem_row_major ? N : M, "load c");
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            f.x[i][j] = l == mem_row_major ? p[i * ld + j] : p[i + j * ld];
}
template <int M, int N, int K, class TA, class TB, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float> &d,
              const fragment<matrix_a, M, N, K, TA, LA> &a,
              const fragment<matrix_b, M, N, K, TB, LB> &b,
              const fragment<accumulator, M, N, K, float> &c)
{
    if (!lane0()) return;
    float r[16][16];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.x[i][j];
            for (int k = 0; k < K; k++)
                s += a.x[i][k] * b.x[k][j];
            r[i][j] = s;
        }
    memcpy(d.x, r, sizeof r);
}
template <int M, int N, int K>
void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ld,
                       layout_t l)
{
    if (!lane0()) return;
    rules(p, ld, l == mem_row_major ? M : N, l == mem_row_major ? N : M, "store c");
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            (l == mem_row_major ? p[i * ld + j] : p[i + j * ld]) = f.x[i][j];
}
} // namespace wmma

#endif /* KN_HOST_WMMA_H */
