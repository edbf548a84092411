/* graph.cu: a whole training step as one CUDA graph (backend.h's
 * graph_run), for the small models whose steps are mostly launch gaps
 * (MLP/CNN: ~30 launches and a few copies a step of ~0.3 ms on an H200).
 *
 * graph_run(slot, key, fn, ctx) runs fn(ctx), which issues one step's
 * device work. The first call with a key runs fn as usual (a warm-up: it
 * grows the scratch buffers, asks cuBLASLt for its algorithms, loads the
 * modules, none of which may happen inside a capture); the second captures
 * fn on a stream of our own (kn_cu_stream, kn_cu_capturing = 1: the MLP/CNN
 * ops launch there, copies and memsets become asynchronous), instantiates
 * the graph and launches it; later calls with the same key launch the
 * graph alone, without calling fn. A new key, or a scratch buffer
 * reallocated since the capture (kn_cu_mem_gen: the graph holds the old
 * addresses), starts over with a warm-up. Every call returns with the
 * device done (the stream synchronised), so the caller can read what the
 * step copied to pinned host memory.
 *
 * What the caller guarantees (model.c's kn_model_train_step): fn issues
 * the same work for the same key (shapes, pointers, scalar arguments);
 * whatever changes from step to step is in host memory from host_alloc
 * (pinned, at a fixed address) that fn copies to or from the device: the
 * inputs, the optimizer's arguments (optimizer.cu reads them on the device
 * when captured), the losses and the norm; no host reads of device values
 * inside fn. The capture is thread-local (cudaStreamCaptureModeThreadLocal):
 * a call that cannot be captured (a synchronous copy, cudaMalloc, a launch
 * on the legacy stream) fails the capture, and CU() then stops the process
 * with where it happened. KILN_CUDA_GRAPH=0 (read when the table is built)
 * leaves graph_run NULL: the model runs its steps as before. */
#include "nn/cuda/cuda_int.cuh"

typedef struct {
    cudaGraphExec_t exec; /* NULL until captured */
    uint64_t key;
    int seen;     /* fn ran once with this key (the warm-up) */
    unsigned gen; /* kn_cu_mem_gen at the capture */
} cu_graph;

static cudaStream_t capture_stream;

static void *host_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of pinned memory is an answer */
        return NULL;
    }
    memset(p, 0, bytes ? bytes : 1);
    return p;
}

static void host_free(void *p)
{
    if (p) CU(cudaFreeHost(p));
}

static void drop(cu_graph *g)
{
    if (g->exec) CU(cudaGraphExecDestroy(g->exec));
    g->exec = NULL;
}

static int graph_run(void **slot, uint64_t key, void (*fn)(void *ctx), void *ctx)
{
    cu_graph *g = (cu_graph *)*slot;
    if (!g) {
        if (!(g = (cu_graph *)calloc(1, sizeof(*g)))) {
            fn(ctx); /* no memory for the bookkeeping: run it plainly */
            return 0;
        }
        *slot = g;
    }
    if (g->exec && (g->key != key || g->gen != kn_cu_mem_gen)) drop(g);
    if (g->exec) {
        CU(cudaGraphLaunch(g->exec, capture_stream));
        CU(cudaStreamSynchronize(capture_stream));
        return 1;
    }
    if (!g->seen || g->key != key) { /* the warm-up, uncaptured */
        g->key = key;
        g->seen = 1;
        fn(ctx);
        return 0;
    }
    if (!capture_stream)
        CU(cudaStreamCreate(&capture_stream)); /* blocking: ordered with stream 0 */
    /* work before the capture (on the legacy stream) finishes first */
    CU(cudaDeviceSynchronize());
    /* cuBLAS on the capture stream, with the workspace it has on stream 0
     * (common.cu: none allocated inside the capture, the same algorithms) */
    kn_cu_cublas_stream(capture_stream);
    kn_cu_stream = capture_stream;
    kn_cu_capturing = 1;
    cudaGraph_t graph = NULL;
    CU(cudaStreamBeginCapture(capture_stream, cudaStreamCaptureModeThreadLocal));
    fn(ctx);
    CU(cudaStreamEndCapture(capture_stream, &graph));
    kn_cu_capturing = 0;
    kn_cu_stream = 0;
    kn_cu_cublas_stream(0);
    CU(cudaGraphInstantiate(&g->exec, graph, 0));
    CU(cudaGraphDestroy(graph));
    g->gen = kn_cu_mem_gen;
    if (getenv("KILN_CUDA_VERBOSE"))
        fprintf(stderr, "kiln cuda backend: captured a training step as a graph (key %llx)\n",
                (unsigned long long)key);
    CU(cudaGraphLaunch(g->exec, capture_stream));
    CU(cudaStreamSynchronize(capture_stream));
    return 1;
}

static void graph_free(void *slot)
{
    cu_graph *g = (cu_graph *)slot;
    if (!g) return;
    drop(g);
    free(g);
}

void kn_cu_fill_graph(kn_backend *t)
{
    const char *e = getenv("KILN_CUDA_GRAPH");
    if (e && !strcmp(e, "0")) return;
    t->host_alloc = host_alloc;
    t->host_free = host_free;
    t->graph_run = graph_run;
    t->graph_free = graph_free;
}
