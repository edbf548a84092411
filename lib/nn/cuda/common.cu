/* common.cu: what every part of the CUDA backend shares: the fail-fast
 * error report, the cuBLAS table and handle, and device memory. Memory is
 * plain cudaMalloc (zeroed, as backend.h promises) and synchronous copies on
 * the legacy default stream, so to_host also waits for every kernel before
 * it; cost: one cudaMemset per allocation, copies at PCIe speed. */
#include "nn/cuda/cuda_int.cuh"

void kn_cu_die(const char *file, int line, const char *what, const char *msg)
{
    fprintf(stderr, "kiln cuda backend: %s:%d: %s: %s\n", file, line, what, msg);
    exit(1);
}

const kn_cublas_api *kn_cu_cublas;
cublasHandle_t kn_cu_handle;
cudaStream_t kn_cu_stream;
int kn_cu_capturing;
unsigned kn_cu_mem_gen;

/* ------------------------------------------------------------ cuBLAS's stream and workspace
 *
 * cublasSetStream resets a handle's workspace to cuBLAS's default pool,
 * which gives each new stream a workspace of its own on that stream's
 * first GEMM. For the capture stream of graph.cu that first GEMM is inside
 * the capture: an allocation during a capture, which cuBLAS's documentation
 * ("CUDA Graphs Support") says may become memory nodes that fail the
 * capture, and which older cuBLAS made a new workspace for every capture,
 * never reclaimed (graph.cu captures again at every key change). So, as
 * that documentation advises, the handle always works in one buffer of
 * ours (cublasSetWorkspace after every cublasSetStream), allocated by the
 * probe, never freed (captured graphs hold its address): on stream 0 and
 * on the capture stream cuBLAS sees the same workspace, so it can pick the
 * same algorithms and a graph step give the bits of an op-by-op step.
 * 32 MiB: the size cuBLAS's documentation recommends for Hopper (4 MiB for
 * the older GPUs). One host thread drives the backend and stream 0 is
 * ordered with the (blocking) capture stream, so no two GEMMs use the
 * buffer at once. */
#define CUBLAS_WORKSPACE (32u << 20)
static void *cublas_workspace;

void kn_cu_cublas_stream(cudaStream_t s)
{
    if (!cublas_workspace) cublas_workspace = kn_cu_scratch_alloc(CUBLAS_WORKSPACE);
    CUBLAS(kn_cu_cublas->set_stream(kn_cu_handle, s));
    CUBLAS(kn_cu_cublas->set_workspace(kn_cu_handle, cublas_workspace, CUBLAS_WORKSPACE));
}

/* ------------------------------------------------------------ memory */

void *kn_cu_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is an answer, not a sticky error */
        return NULL;
    }
    CU(cudaMemset(p, 0, bytes ? bytes : 1));
    kn_mem_note_alloc(KN_MEM_CUDA, 0, p, bytes);
    return p;
}

void kn_cu_free(void *p)
{
    kn_mem_note_free(KN_MEM_CUDA, p);
    if (p) CU(cudaFree(p));
}

void *kn_cu_scratch_alloc(size_t bytes)
{
    void *p = NULL;
    CU(cudaMalloc(&p, bytes ? bytes : 1));
    kn_mem_note_alloc(KN_MEM_CUDA, 1, p, bytes);
    return p;
}

void kn_cu_scratch_free(void *p)
{
    kn_mem_note_free(KN_MEM_CUDA, p);
    if (p) CU(cudaFree(p));
}

/* While a step is captured (graph.cu) the copies are graph nodes: the host
 * side is pinned memory (host_alloc) that each replay reads or writes. */
void kn_cu_to_device(void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    if (kn_cu_capturing)
        CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, kn_cu_stream));
    else
        CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void kn_cu_to_host(void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    if (kn_cu_capturing)
        CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, kn_cu_stream));
    else
        CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void kn_cu_zero(void *p, size_t bytes)
{
    if (!bytes) return;
    if (kn_cu_capturing)
        CU(cudaMemsetAsync(p, 0, bytes, kn_cu_stream));
    else
        CU(cudaMemset(p, 0, bytes));
}

static float *scratch;
static size_t scratch_floats;

float *kn_cu_scratch(size_t floats)
{
    if (floats > scratch_floats) {
        kn_cu_scratch_free(scratch);
        scratch = (float *)kn_cu_scratch_alloc(floats * sizeof(float));
        scratch_floats = floats;
        kn_cu_mem_gen++;
    }
    return scratch;
}

/* The device's SM count (persistent grids), asked once. */
int kn_cu_sms(void)
{
    static int sms;
    if (!sms) {
        int dev = 0;
        CU(cudaGetDevice(&dev));
        CU(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    }
    return sms;
}
