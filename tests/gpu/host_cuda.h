/* host_cuda.h: stand-ins for the CUDA built-ins, so that a kernel's own
 * source (a .cuh of lib/nn/cuda included by its .cu) compiles for the host
 * and runs in a unit test on machines without a GPU (C++, any compiler).
 *
 * A block's threads are fibers (ucontext) of the one host thread. run_block
 * runs one warp at a time up to the next __syncthreads, switching lanes at
 * __syncwarp (and at every shuffle, which is a warp barrier), in
 * ascending order of warps and lanes, or descending with reverse_order set:
 * a missing block barrier (a warp reading shared memory another warp has
 * not written yet, or writing what another still reads) or a missing warp
 * barrier changes the result in one order or the other. launch() runs
 * every block of a grid in order, the shared memory NaN-poisoned before
 * each block: the dynamic buffer smem_raw (the kernels' `extern __shared__
 * unsigned char smem_raw[]`, up to SMEM_MAX bytes, smem_bytes of them asked
 * for) and every static `__shared__` variable, template kernels' included.
 * Those are declared thread-local (`static __thread`) and found by name
 * in the executable's symbol table: its thread-local function statics. A
 * section of their own would not do: g++ drops the section attribute of a
 * function template's statics (GCC PR 70435), and conv_ig.cuh's kernels
 * are templates. So a test declares no function-local thread_local of its
 * own (it would be poisoned with the shared memory).
 *
 * Threads are numbered as on the device: t = x + y bx + z bx by, warps of
 * 32 consecutive t. Lanes that returned are done; a barrier counts only the
 * threads still running (as sm_70 and later do for exited threads).
 *
 * Define HOST_CUDA_EXTERN_SHARED before including for kernels that declare
 * `extern __shared__ ... smem_raw[]` (flash.cuh): __shared__ is then empty,
 * so that the declaration names this header's smem_raw (function-scope
 * statics and extern cannot share one macro); static __shared__ arrays
 * then need HOST_CUDA_EXTERN_SHARED left undefined.
 *
 * Not emulated: timing, memory ordering between blocks (blocks run one
 * after another), bank conflicts, register limits, the hardware's fragment
 * layouts; tests/gpu/test_cuda_parity and compute-sanitizer check those on
 * a GPU. */
#ifndef KN_HOST_CUDA_H
#define KN_HOST_CUDA_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <link.h>
#include <ucontext.h>

#include <functional>
#include <vector>

/* ------------------------------------------------------------ indices */

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
static dim3 threadIdx, blockIdx, gridDim, blockDim(128);
static const int warpSize = 32;

/* ------------------------------------------------------------ the fibers */

#define MAX_THREADS 1024
#ifndef FIBER_STACK
#define FIBER_STACK (64 * 1024)
#endif
enum { READY, WAIT_W, WAIT_B, DONE };
static ucontext_t sched_ctx, fib[MAX_THREADS];
static int fib_state[MAX_THREADS], nthreads, reverse_order, cur_thread;
static unsigned shfl_seq[MAX_THREADS]; /* the shuffles a thread has made (host_cuda.h's shuffles) */
static char *fib_stack;
static const std::function<void()> *fib_body;

static void set_thread(int t)
{
    cur_thread = t;
    threadIdx = dim3((unsigned)t % blockDim.x, (unsigned)t / blockDim.x % blockDim.y,
                     (unsigned)t / (blockDim.x * blockDim.y));
}

static void wait_at(int what)
{
    const int t = cur_thread;
    fib_state[t] = what;
    swapcontext(&fib[t], &sched_ctx);
}
#define __syncthreads() wait_at(WAIT_B)
#define __syncwarp(...) wait_at(WAIT_W)
/* the number of the block's threads whose p is not 0, to each of them:
 * added between two block barriers, the count cleared by its last reader */
static int count_acc, count_reads;
static inline int __syncthreads_count(int p)
{
    if (p) count_acc++;
    __syncthreads(); /* every running thread has added */
    const int r = count_acc;
    int running = 0;
    for (int t = 0; t < nthreads; t++)
        running += fib_state[t] != DONE;
    if (++count_reads == running) count_acc = 0, count_reads = 0;
    __syncthreads(); /* every running thread has read */
    return r;
}
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}

static void fiber_entry(void)
{
    (*fib_body)();
    fib_state[cur_thread] = DONE; /* then uc_link: back to the scheduler */
}

static void resume(int t)
{
    set_thread(t);
    fib_state[t] = READY;
    swapcontext(&sched_ctx, &fib[t]);
}

/* Runs one block of `block` threads (blockIdx, gridDim set by the caller):
 * the lanes of one warp round after round until each is at the block
 * barrier or done, then the next warp; then the block barrier opens. */
static void run_block(dim3 block, const std::function<void()> &body)
{
    const int n = (int)(block.x * block.y * block.z);
    if (n < 1 || n > MAX_THREADS) {
        fprintf(stderr, "run_block: %d threads a block\n", n);
        abort();
    }
    if (!fib_stack && !(fib_stack = (char *)malloc((size_t)MAX_THREADS * FIBER_STACK))) abort();
    fib_body = &body;
    nthreads = n;
    blockDim = block;
    for (int t = 0; t < n; t++) {
        getcontext(&fib[t]);
        fib[t].uc_stack.ss_sp = fib_stack + (size_t)t * FIBER_STACK;
        fib[t].uc_stack.ss_size = FIBER_STACK;
        fib[t].uc_link = &sched_ctx;
        makecontext(&fib[t], fiber_entry, 0);
        fib_state[t] = WAIT_B; /* released by the first round */
        shfl_seq[t] = 0;
    }
    const int warps = (n + 31) / 32;
    for (int live = 1; live;) {
        live = 0;
        for (int wi = 0; wi < warps; wi++) {
            const int w = reverse_order ? warps - 1 - wi : wi;
            const int lanes = n - 32 * w < 32 ? n - 32 * w : 32;
            int first = 1;
            for (int again = 1; again;) {
                again = 0;
                for (int li = 0; li < lanes; li++) {
                    const int t = 32 * w + (reverse_order ? lanes - 1 - li : li);
                    if (fib_state[t] == WAIT_W || (first && fib_state[t] == WAIT_B))
                        resume(t), again = 1, live = 1;
                }
                first = 0;
            }
        }
    }
}
static inline void run_block(int n, const std::function<void()> &body) { run_block(dim3((unsigned)n), body); }

/* ------------------------------------------------------------ qualifiers */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#ifdef HOST_CUDA_EXTERN_SHARED
#define __shared__
#else
#define __shared__ static __thread /* found by poison_shared, templates' too */
#endif

/* ------------------------------------------------------------ bits and bf16 */

static inline unsigned f2u(float f)
{
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(unsigned u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float __uint_as_float(unsigned u) { return u2f(u); }
static inline unsigned __float_as_uint(float f) { return f2u(f); }
static inline float __int_as_float(int i) { return u2f((unsigned)i); }
static inline int __float_as_int(float f) { return (int)f2u(f); }

struct __nv_bfloat16 { /* 2 bytes as on the device: the layouts and offsets are the device's */
    uint16_t bits;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
static_assert(sizeof(__nv_bfloat16) == 2, "bf16 is 2 bytes");
static_assert(sizeof(__nv_bfloat162) == 4, "bf16x2 is 4 bytes");
static inline __nv_bfloat16 __float2bfloat16(float x) /* RNE; NaN -> 0x7FFF as cuda_bf16.hpp */
{
    unsigned u = f2u(x);
    if (x != x) return {(uint16_t)0x7FFFu};
    u = u + 0x7FFFu + ((u >> 16) & 1u);
    return {(uint16_t)(u >> 16)};
}
static inline __nv_bfloat16 __float2bfloat16_rn(float x) { return __float2bfloat16(x); }
static inline float __bfloat162float(__nv_bfloat16 b) { return u2f((unsigned)b.bits << 16); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b)
{
    return {__float2bfloat16(a), __float2bfloat16(b)};
}

/* ------------------------------------------------------------ shuffles */

/* Each is called by the whole warp (the mask is not checked): every lane
 * writes its value, a warp barrier, every lane reads its source. Two
 * buffers, alternate shuffles: shuffle k + 2 rewrites shuffle k's buffer
 * only after the barrier of shuffle k + 1, which every lane reaches after
 * its read of shuffle k. A source lane past the warp's width returns the
 * caller's own value, as on the device. */
static uint64_t shfl_buf[2][MAX_THREADS];

template <class T> static inline T shfl_from(T v, int src_lane)
{
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    const int t = cur_thread, base = t - t % 32;
    uint64_t *buf = shfl_buf[shfl_seq[t]++ & 1];
    memcpy(&buf[t], &v, sizeof(T));
    __syncwarp();
    T r = v;
    if (src_lane >= 0 && src_lane < 32 && base + src_lane < nthreads)
        memcpy(&r, &buf[base + src_lane], sizeof(T));
    return r;
}
static inline int lane_id(void) { return cur_thread % 32; }
template <class T> static inline T __shfl_sync(unsigned, T v, int src, int width = 32)
{
    const int lane = lane_id(), seg = lane - lane % width;
    return shfl_from(v, seg + ((src % width) + width) % width);
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32)
{
    const int lane = lane_id(), seg = lane - lane % width, src = lane ^ mask;
    return shfl_from(v, src < seg + width ? src : lane);
}
template <class T> static inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32)
{
    const int lane = lane_id(), seg = lane - lane % width, src = lane + (int)delta;
    return shfl_from(v, src < seg + width ? src : lane);
}
template <class T> static inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32)
{
    const int lane = lane_id(), seg = lane - lane % width, src = lane - (int)delta;
    return shfl_from(v, src >= seg ? src : lane);
}

/* ------------------------------------------------------------ atomics */

/* One host thread runs every fiber and none is switched inside these. */
static inline float atomicAdd(float *p, float v)
{
    const float o = *p;
    *p = o + v;
    return o;
}
static inline int atomicAdd(int *p, int v)
{
    const int o = *p;
    *p = o + v;
    return o;
}
static inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    const unsigned o = *p;
    *p = o + v;
    return o;
}
static inline int atomicMax(int *p, int v)
{
    const int o = *p;
    if (v > o) *p = v;
    return o;
}
static inline unsigned atomicCAS(unsigned *p, unsigned cmp, unsigned v)
{
    const unsigned o = *p;
    if (o == cmp) *p = v;
    return o;
}
static inline int atomicCAS(int *p, int cmp, int v)
{
    const int o = *p;
    if (o == cmp) *p = v;
    return o;
}

/* ------------------------------------------------------------ math */

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
#define __expf(x) expf(x) /* glibc declares its own __expf, __logf */
#define __logf(x) logf(x)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }

/* ------------------------------------------------------------ shared memory, launches */

/* The dynamic shared memory: the kernels' `extern __shared__ smem_raw[]`. */
#define SMEM_MAX (227 * 1024) /* an H100/H200's opt-in limit a block */
alignas(128) unsigned char smem_raw[SMEM_MAX];
static size_t smem_bytes;  /* what the launch asks for */
static int launch_faults;  /* launches refused (too much shared memory, too many threads) */

/* The static __shared__ variables, found once: the executable's thread-local
 * function statics (symbols of type STT_TLS named _ZZ..., the mangling of
 * a function's local static), located in this thread's copy of its TLS
 * segment. Other thread-locals linked in (libcudart_static has some) are
 * left alone. */
#define SMEM_VARS_MAX 256
static struct {
    unsigned char *p;
    size_t n;
} smem_vars[SMEM_VARS_MAX];
static int n_smem_vars;

static void smem_vars_fail(const char *why)
{
    fprintf(stderr, "host_cuda.h: cannot find the static __shared__ variables: %s\n", why);
    abort();
}

/* The executable's TLS segment: dl_iterate_phdr's callback fills one from
 * the first object it visits, the executable. */
struct tls_seg {
    unsigned char *data; /* this thread's block; NULL: no TLS segment */
    size_t bytes;
};
static int find_tls_seg(struct dl_phdr_info *info, size_t, void *arg)
{
    tls_seg *seg = (tls_seg *)arg;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_TLS) {
            seg->data = (unsigned char *)info->dlpi_tls_data;
            seg->bytes = (size_t)info->dlpi_phdr[i].p_memsz;
        }
    return 1;
}

/* n bytes at offset off of f to dst; 0 where it cannot */
static int read_at(FILE *f, size_t off, void *dst, size_t n)
{
    return fseek(f, (long)off, SEEK_SET) == 0 && fread(dst, 1, n, f) == n;
}

/* Reads the executable's symbol table (.symtab: the host tests are not
 * stripped) for its TLS _ZZ symbols; their values are offsets into the
 * TLS segment. Aborts where it cannot: a test would run unpoisoned. */
static void find_smem_vars(void)
{
    tls_seg seg = {NULL, 0};
    dl_iterate_phdr(find_tls_seg, &seg);
    if (!seg.data) return; /* no thread-locals: no static __shared__ variables */
    FILE *f = fopen("/proc/self/exe", "rb");
    if (!f) smem_vars_fail("/proc/self/exe unreadable");
    ElfW(Ehdr) eh;
    if (!read_at(f, 0, &eh, sizeof eh) || eh.e_shentsize != sizeof(ElfW(Shdr)))
        smem_vars_fail("not an ELF file of this class");
    std::vector<ElfW(Shdr)> sh(eh.e_shnum);
    if (!read_at(f, eh.e_shoff, sh.data(), sh.size() * sizeof sh[0]))
        smem_vars_fail("section headers unreadable");
    const ElfW(Shdr) *st = NULL;
    for (size_t i = 0; i < sh.size(); i++)
        if (sh[i].sh_type == SHT_SYMTAB) st = &sh[i];
    if (!st || st->sh_link >= sh.size()) smem_vars_fail("no symbol table (stripped?)");
    const ElfW(Shdr) &strs = sh[st->sh_link];
    std::vector<ElfW(Sym)> sym(st->sh_size / sizeof(ElfW(Sym)));
    std::vector<char> str(strs.sh_size + 1, 0); /* NUL-terminated even if the table is not */
    if (!read_at(f, st->sh_offset, sym.data(), sym.size() * sizeof sym[0]) ||
        !read_at(f, strs.sh_offset, str.data(), strs.sh_size))
        smem_vars_fail("symbol table unreadable");
    fclose(f);
    for (size_t i = 0; i < sym.size(); i++) {
        const ElfW(Sym) &y = sym[i];
        if (ELF64_ST_TYPE(y.st_info) != STT_TLS || y.st_name >= strs.sh_size ||
            strncmp(&str[y.st_name], "_ZZ", 3))
            continue;
        if (y.st_value + y.st_size > seg.bytes) smem_vars_fail("a symbol past the TLS segment");
        if (n_smem_vars == SMEM_VARS_MAX) smem_vars_fail("more than SMEM_VARS_MAX");
        smem_vars[n_smem_vars].p = seg.data + y.st_value;
        smem_vars[n_smem_vars++].n = (size_t)y.st_size;
    }
}

/* NaN in fp32 and in bf16, a large negative int: an unwritten element read
 * shows */
static void poison_shared(void)
{
    static size_t dirty = SMEM_MAX; /* what a block may have written: all of it at first */
    static int found;
    memset(smem_raw, 0xFF, dirty > smem_bytes ? dirty : smem_bytes);
    dirty = smem_bytes;
    if (!found) find_smem_vars(), found = 1;
    for (int i = 0; i < n_smem_vars; i++)
        memset(smem_vars[i].p, 0xFF, smem_vars[i].n);
}

/* kernel<<<grid, block, bytes>>>: every block of the grid in order (x
 * fastest), each from poisoned shared memory. */
static void launch(dim3 grid, dim3 block, size_t bytes, const std::function<void()> &body)
{
    const unsigned threads = block.x * block.y * block.z;
    if (bytes > SMEM_MAX || threads > MAX_THREADS || threads == 0) {
        fprintf(stderr, "launch refused: %u threads, %zu bytes of dynamic shared memory\n",
                threads, bytes);
        launch_faults++;
        return;
    }
    gridDim = grid;
    smem_bytes = bytes;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                poison_shared();
                run_block(block, body);
            }
}

#endif /* KN_HOST_CUDA_H */
