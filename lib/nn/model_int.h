/* model_int.h: internals shared by model.c (common API), model_seq.c
 * (MLP/CNN/linreg as a layer sequence), model_tfm.c (GPT and the Transformer
 * classifier) and model_ckpt.c. Not part of the public contract. */
#ifndef KN_NN_MODEL_INT_H
#define KN_NN_MODEL_INT_H

#include "nn/model.h"

enum { SEQ_LINEAR = 1, SEQ_CONV, SEQ_POOL, SEQ_ACT, SEQ_DROPOUT, SEQ_BN };

#define KN_BN_MOMENTUM 0.1f
#define KN_BN_EPS      1e-5f

typedef struct {
    int kind;              /* SEQ_* */
    int sub;               /* KN_ACT_* or KN_POOL_* */
    int in_numel;          /* per sample, input */
    int out_numel;         /* per sample, output */
    kn_conv_shape conv;    /* SEQ_CONV; B set per call */
    kn_pool_shape pool;    /* SEQ_POOL; B set per call */
    float p;               /* SEQ_DROPOUT drop probability */
    int w, b;              /* parameter indices or -1 */
    int out;               /* activation index of the output (max_B, out_numel) */
    int mask;              /* SEQ_DROPOUT: activation index of the mask, else -1 */
    size_t idx_off;        /* SEQ_POOL max: int offset of argmax (max_B, out_numel) */
    int bn_C, bn_HW;       /* SEQ_BN: channels, values per channel per sample */
    int run_mean, run_var; /* SEQ_BN: buffer indices of the running statistics */
    int bn_mean, bn_rstd;  /* SEQ_BN: activation indices of the saved statistics (C) */
} seq_layer;

typedef struct {
    seq_layer *l; /* (n) layers */
    int n;
    int in_numel;                   /* floats per input row */
    int out_numel;                  /* classes or regression dims */
    int mse;                        /* 1: MSE loss on y; 0: softmax cross-entropy on labels */
    int a_in, a_lse, a_losses, a_y; /* activation indices */
    size_t scratch_n;               /* floats of im2col scratch (max over convs) */
    float *scratch;                 /* device */
    size_t i_labels;                /* int offset of labels (max_B) */
    float smoothing;                /* label smoothing of the xent loss, 0 = none */
    int fwd_training;               /* the mode of the last forward (batchnorm's backward) */
} seq_model;

/* GELU's output is recomputed in the backward when keeping it for every
 * layer would take more than this many bytes (max_B T 4C L floats); below,
 * each layer keeps its own and the backward reads it: the same bits either
 * way, but recomputing costs the tanh again, 15 % of a small GPT's step on
 * the CPU, where it saves little. 64 MiB: GPT-2 at B=1 recomputes, the CPU
 * bench's small GPT (4 MiB) does not. Tests set it to 0 to run the
 * recomputation on small models (white box). */
extern size_t kn_tfm_gelu_keep_bytes;

/* Rows of GPT logits a training forward holds at once (model_tfm.c):
 * 4096 x 50304 floats, 786 MiB, for GPT-2, whatever the batch. */
#define KN_TFM_LOGIT_ROWS 4096

typedef struct {
    /* parameters */
    int ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb;
    /* what the backward reads, saved per layer: all (B, T, .) except
     * mean/rstd (B, T) and att (B, NH, T, T), or lse (B, NH, T) in att's
     * place when attention is fused; qkv, atty and fch hold bf16 (half
     * the floats, rounded up) where tfm_model.bf16_store says so */
    int ln1_mean, ln1_rstd, qkv, atty, att, res2;
    int ln2_mean, ln2_rstd, fch, res3;
    int gelu; /* GELU's output where kept per layer (tfm_model.gelu_kept), else -1 */
} tfm_block;

typedef struct {
    int L, NH, C, maxT;                     /* layers, heads, channels, block size */
    int V, Vp;                              /* vocab size and padded vocab (rows of wte) */
    int classes;                            /* txtcls: classes; gpt: 0 */
    int pool;                               /* txtcls: KN_SEQPOOL_* */
    int causal;                             /* 1 for gpt, spec for txtcls */
    int fused_attn; /* the backend's attention_fused_*: preatt holds lse (B, NH, T), att unused */
    int wte, wpe, lnfw, lnfb, headw, headb; /* parameters (head only for txtcls) */
    tfm_block *blk;                         /* (L) */
    int encoded, lnf, lnf_mean, lnf_rstd, pooled, logits, lse, losses; /* activations */
    /* activations one buffer serves every layer: the layernorm outputs
     * (the backward recomputes them from the saved input, mean and rstd
     * into ln, ln_mean, ln_rstd), GELU's output (recomputed from fch;
     * -1 where gelu_kept), the
     * projections' outputs (only added to the residual) and preatt
     * (unfused attention; its backward reads att) */
    int ln, ln_mean, ln_rstd, gelu, proj, preatt;
    int gelu_kept; /* 1: GELU's output is kept per layer (small models, below) */
    /* 1: each layer's qkv, atty and fch are kept as bf16 (the backend's
     * to_bf16/from_bf16: its bf16 table, with fused attention); they are
     * computed in, and read back into, work (B, T, 4C) fp32: qkv its first
     * 3 C floats a token (3 N C in all), atty the next N C, fch all of it.
     * bf16_direct: and the backend's matmul/act *_bf16 ops read them as
     * stored where they can (GELU both ways, the attention projection's
     * GEMMs); bf16_attn: and its attention_fused_*_bf16 read qkv and atty
     * so (the fused attention both ways). With both, a step widens none of
     * them: work holds only what the forward computes before storing it.
     * bf16_gemm: and with the backend's matmul_fwd_to_bf16 the qkv and fc
     * GEMMs write qkv and fch as bf16 themselves: work holds only atty,
     * (B, T, C). bf16_attn_out: and with its attention_fused_fwd_to_bf16
     * the attention writes atty so: no work (-1). */
    int bf16_store, work, bf16_direct, bf16_attn, bf16_gemm, bf16_attn_out;
    /* the gradients (dacts), reused layer after layer: dx the residual
     * stream's (B, T, C), dres2 inside a block, dc1/dc2 (B, T, C) and
     * dh1/dh2 (B, T, 4C) the ops', dpreatt/datt the unfused attention's,
     * dlnf, dpooled, dlogits the head's */
    int dx, dres2, dc1, dc2, dh1, dh2, dpreatt, datt, dlnf, dpooled, dlogits;
    /* GPT's logits: the activation holds logit_rows rows, all of max_B T
     * or, on a backend with xent_fused, at most KN_TFM_LOGIT_ROWS: a
     * training forward with targets then runs the classifier chunk by
     * chunk (logits, the fused cross-entropy in place, the chunk's share of
     * the ln_f and wte gradients) and keeps no logits; a forward that must
     * keep more rows than that (inference) puts them in logits_all, a
     * (max_B T, Vp) buffer allocated then, once, and freed with the model */
    int logit_rows;
    float *logits_all;
    size_t i_tokens, i_targets; /* int offsets (max_B * maxT each) */
} tfm_model;

struct kn_model {
    int type;     /* KN_MODEL_* */
    json_t *spec; /* normalised spec (owned) */
    const kn_backend *be;
    int max_B;
    uint64_t seed;
    kn_tensor_set params, grads; /* one allocation each, same layout */
    /* activations and their gradients: the sequence models' dacts clone
     * the acts' layout; the transformers declare their own, a few buffers
     * that every layer's backward reuses (model_tfm.c) */
    kn_tensor_set acts, dacts;
    kn_tensor_set bufs;          /* state that is not trained: batchnorm running statistics */
    int *ibuf;                   /* device ints: token ids, labels, argmax indices */
    size_t ibuf_n;
    kn_optim *opt;      /* NULL until kn_model_set_optim */
    int training;       /* dropout on */
    uint64_t fwd_count; /* training forwards so far: the dropout stream position */
    /* state of the last forward */
    int B, T;
    int have_targets;
    int n_valid;    /* rows or tokens that carry a target */
    int dlogits_set; /* the forward set a gradient, DACT(out_dact) (kept by the backward) */
    int out_act;    /* activation index of the logits/predictions */
    float *out;     /* device: the last forward's outputs (ACT(out_act), or GPT's logits_all) */
    int out_dact;   /* the gradient a forward sets (dlogits_set): the outputs' (in dacts,
                     * out_act where dacts clones acts); GPT: ln_f's (model_tfm.c) */
    int out_rows;   /* B or B*T */
    int out_stride; /* floats per output row (Vp for gpt) */
    int out_valid;  /* meaningful columns per row */
    seq_model seq;
    tfm_model tfm;
    /* kn_model_train_step's replayable step (backend.h's graph_run) */
    void *graph;              /* the backend's state, NULL until the first step */
    struct step_stage *stage; /* host_alloc memory the captured step copies to and from */
    int last_graph;           /* the last train step ran as a graph */
};

/* Builders: declare parameters and activations, fill m->seq / m->tfm. */
int kn_model_seq_build(kn_model *m, const json_t *spec, json_t *norm, char *err, size_t errsz);
int kn_model_tfm_build(kn_model *m, const json_t *spec, json_t *norm, char *err, size_t errsz);
/* Weight init on the host from m->seed, after allocation. */
int kn_model_seq_init(kn_model *m);
int kn_model_tfm_init(kn_model *m);
int kn_model_seq_forward(kn_model *m, const kn_batch *b, char *err, size_t errsz);
int kn_model_tfm_forward(kn_model *m, const kn_batch *b, char *err, size_t errsz);
void kn_model_seq_backward(kn_model *m);
void kn_model_tfm_backward(kn_model *m);
/* Layer l's qkv (B, T, 3C) of the last forward in fp32: the saved
 * activation, or (bf16_store) its bf16 copy widened into the gradient
 * buffer dh1, valid until the next forward or backward. */
const float *kn_model_tfm_qkv(kn_model *m, int l);

/* Reads an integer key in [lo, hi] (default def when absent) and records it in norm. */
int kn_model_spec_int(const json_t *spec, json_t *norm, const char *key, int def, int lo, int hi,
                      int *out, char *err, size_t errsz);

/* Device pointers of activation / gradient-of-activation / parameter i. */
#define ACT(m, i)  kn_tensor_ptr(&(m)->acts, (i))
#define DACT(m, i) kn_tensor_ptr(&(m)->dacts, (i))

/* The softmax cross-entropy of a forward: losses and lse of the logits
 * activation (rows x stride, the first cols meaningful). A training forward
 * on a backend with xent_fused also sets the logits' gradient
 * (DACT(m, m->out_dact), which the forward sets first) for a mean
 * over `valid` rows now, in the same pass (m->dlogits_set: the backward
 * keeps it and runs no xent_bwd); otherwise xent_fwd. */
void kn_model_xent(kn_model *m, int logits, int lse, int losses, const int *targets, int rows,
                   int cols, int stride, int valid);
#define PAR(m, i)  kn_tensor_ptr(&(m)->params, (i))
#define GRAD(m, i) kn_tensor_ptr(&(m)->grads, (i))
#define BUF(m, i)  kn_tensor_ptr(&(m)->bufs, (i))

#endif
