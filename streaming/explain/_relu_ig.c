/*
 * Exact integrated gradients of a ReLU network with two hidden layers (Linear, ReLU, Linear,
 * ReLU, Linear with one output), one row at a time, without the GIL.
 *
 * The same integral as streaming.explain.piecewise (its numpy is the reference the tests hold
 * this to), found with less arithmetic. Along the path x(a) = b + a (x - b):
 *
 * - The first layer is linear in a: z1(a) = z0 + a s1, each unit crossing zero at most once.
 *   Its crossings in (0, 1), sorted, cut the path into pieces; on piece k the first layer's
 *   mask m1_k is fixed, so the second layer is linear too: z2(a) = A_k + a B_k. Passing a
 *   crossing toggles one unit of m1, so A and B are updated by one column of W2 (2 h2 numbers)
 *   instead of recomputed (2 h1 h2).
 * - The integral of the gradient is W1^T G with G_u = sum_j V[j, u] S_u[j], V = W2 * w3,
 *   S_u[j] = the length of the path where unit u of the first layer and unit j of the second
 *   are both on. On piece k, unit j is on over a length q_k[j] found from the signs of z2 at the
 *   piece's ends (one crossing at most: it is linear there), so no second sort is needed. Unit
 *   u is on over a prefix or a suffix of the pieces (it crosses once), so S_u is a difference
 *   of prefix sums P of q.
 *
 * Per row that is about h1 d + 2 h2 h1 + (pieces) 4 h2 + h1 h2 + h1 d multiply-adds: about
 * 15,000 for the fraud model (26-64-32-1), against about 200,000 for the matmuls of the numpy
 * version. Masks follow numpy's: a unit is on where it is > 0 inside a piece (its sign at the
 * midpoint), crossings at exactly 0 or 1 do not cut the path.
 *
 * relu2_attributions(w1, z0, w2t, c2, vt, baseline, x, out), without the GIL from 16 rows:
 *   all C-contiguous float64 buffers: w1 (h1, d), z0 (h1) = W1 b + c1, w2t (h1, h2) = W2.T,
 *   c2 (h2), vt (h1, h2) = (W2 * w3[:, None]).T, baseline (d), x (n, d); out (n, d) is written.
 *   Shapes are taken from z0 (h1), c2 (h2) and baseline (d); a buffer of another size is a
 *   ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#include "_buffers.h"

/* Rows from which a call lets go of the GIL while it runs (about 11 us a fraud row): a few
 * rows take less than handing the GIL to the decoding thread and waiting to get it back
 * (worker.gil_switch_interval_ms, 0.2 ms) costs. */
#define RELEASE_GIL_ROWS 16

typedef struct {
    double a;
    Py_ssize_t unit;
} Crossing;

static int by_position(const void *p, const void *q) {
    const Crossing *x = p, *y = q;
    if (x->a < y->a) return -1;
    if (x->a > y->a) return 1;
    return (x->unit > y->unit) - (x->unit < y->unit);
}

/* The positive length of z(a) = za .. zb (linear) over [lo, hi]: numpy's masks (the sign at
 * both ends' sum) with its interpolated crossing. */
static inline double on_length(double za, double zb, double lo, double hi) {
    if (za * zb < 0.0) {
        double t = lo + (hi - lo) * (za / (za - zb));
        return za > 0.0 ? t - lo : hi - t;
    }
    return (za + zb) > 0.0 ? hi - lo : 0.0;
}

typedef struct {
    Py_ssize_t h1, h2, d;
    const double *w1, *z0, *w2t, *c2, *vt, *b;
} Net;

/* One row: x (d) -> out (d). Scratch: s1 (h1), mask (h1), cross (h1), ab (2 h2),
 * prefix ((h1 + 2) h2), sorted_at (h1), g (h1). */
static void row_attributions(const Net *net, const double *x, double *out, double *s1,
                             char *on, Crossing *cross, double *ab, double *prefix,
                             Py_ssize_t *slot, double *g) {
    const Py_ssize_t h1 = net->h1, h2 = net->h2, d = net->d;
    double *A = ab, *B = ab + h2;
    Py_ssize_t ncross = 0;
    for (Py_ssize_t u = 0; u < h1; u++) {
        const double *w = net->w1 + u * d;
        double s = 0.0;
        for (Py_ssize_t i = 0; i < d; i++) s += w[i] * (x[i] - net->b[i]);
        s1[u] = s;
        double a = -net->z0[u] / s; /* inf or nan when s is 0: no crossing */
        slot[u] = -1;
        if (a > 0.0 && a < 1.0) {
            cross[ncross].a = a;
            cross[ncross].unit = u;
            ncross++;
            on[u] = s < 0.0; /* positive before its crossing */
        } else {
            on[u] = net->z0[u] + 0.5 * s > 0.0;
        }
    }
    qsort(cross, (size_t)ncross, sizeof(Crossing), by_position);
    for (Py_ssize_t i = 0; i < ncross; i++) slot[cross[i].unit] = i;
    /* the second layer on the first piece */
    for (Py_ssize_t j = 0; j < h2; j++) {
        A[j] = net->c2[j];
        B[j] = 0.0;
    }
    for (Py_ssize_t u = 0; u < h1; u++) {
        if (!on[u]) continue;
        const double *col = net->w2t + u * h2;
        const double z = net->z0[u], s = s1[u];
        for (Py_ssize_t j = 0; j < h2; j++) {
            A[j] += col[j] * z;
            B[j] += col[j] * s;
        }
    }
    /* pieces: P_0 = 0, P_{k+1} = P_k + q_k */
    for (Py_ssize_t j = 0; j < h2; j++) prefix[j] = 0.0;
    double lo = 0.0;
    for (Py_ssize_t k = 0; k <= ncross; k++) {
        double hi = k < ncross ? cross[k].a : 1.0;
        const double *p = prefix + k * h2;
        double *next = prefix + (k + 1) * h2;
        if (hi > lo) {
            for (Py_ssize_t j = 0; j < h2; j++)
                next[j] = p[j] + on_length(A[j] + lo * B[j], A[j] + hi * B[j], lo, hi);
        } else {
            for (Py_ssize_t j = 0; j < h2; j++) next[j] = p[j];
        }
        if (k < ncross) { /* its unit toggles */
            Py_ssize_t u = cross[k].unit;
            const double *col = net->w2t + u * h2;
            const double z = net->z0[u], s = s1[u];
            double sign = s > 0.0 ? 1.0 : -1.0; /* turns on going up, off going down */
            for (Py_ssize_t j = 0; j < h2; j++) {
                A[j] += sign * col[j] * z;
                B[j] += sign * col[j] * s;
            }
        }
        lo = hi;
    }
    /* G_u = sum_j V[j, u] S_u[j], S_u from the prefix sums */
    const double *total = prefix + (ncross + 1) * h2;
    for (Py_ssize_t u = 0; u < h1; u++) {
        const double *v = net->vt + u * h2;
        double acc = 0.0;
        Py_ssize_t i = slot[u];
        if (i < 0) {
            if (on[u])
                for (Py_ssize_t j = 0; j < h2; j++) acc += v[j] * total[j];
        } else if (s1[u] > 0.0) { /* on after its crossing: pieces i + 1 .. */
            const double *before = prefix + (i + 1) * h2;
            for (Py_ssize_t j = 0; j < h2; j++) acc += v[j] * (total[j] - before[j]);
        } else { /* on before it: pieces 0 .. i */
            const double *upto = prefix + (i + 1) * h2;
            for (Py_ssize_t j = 0; j < h2; j++) acc += v[j] * upto[j];
        }
        g[u] = acc;
    }
    for (Py_ssize_t i = 0; i < d; i++) out[i] = 0.0;
    for (Py_ssize_t u = 0; u < h1; u++) {
        const double *w = net->w1 + u * d;
        const double gu = g[u];
        if (gu == 0.0) continue;
        for (Py_ssize_t i = 0; i < d; i++) out[i] += w[i] * gu;
    }
    for (Py_ssize_t i = 0; i < d; i++) out[i] *= x[i] - net->b[i];
}

static PyObject *relu2_attributions(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    static const char *names[8] = {"w1", "z0", "w2t", "c2", "vt", "baseline", "x", "out"};
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "relu2_attributions(w1, z0, w2t, c2, vt, baseline, x, out)");
        return NULL;
    }
    Py_buffer v[8];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 8; got++)
        if (take_buffer(args[got], &v[got], 'd', got == 7, names[got]) < 0) goto done;
    Py_ssize_t h1 = v[1].len / 8, h2 = v[3].len / 8, d = v[5].len / 8;
    if (h1 == 0 || h2 == 0 || d == 0 || v[0].len / 8 != h1 * d || v[2].len / 8 != h1 * h2 ||
        v[4].len / 8 != h1 * h2 || v[6].len % (8 * d) != 0 || v[7].len != v[6].len) {
        PyErr_SetString(PyExc_ValueError,
                        "relu2_attributions: buffer sizes do not fit w1 (h1, d), z0 (h1), "
                        "w2t (h1, h2), c2 (h2), vt (h1, h2), baseline (d), x and out (n, d)");
        goto done;
    }
    Py_ssize_t n = v[6].len / (8 * d);
    Net net = {h1, h2, d, v[0].buf, v[1].buf, v[2].buf, v[3].buf, v[4].buf, v[5].buf};
    size_t doubles = (size_t)(h1 + 2 * h2 + (h1 + 2) * h2 + h1);
    double *scratch = PyMem_RawMalloc(doubles * sizeof(double));
    Crossing *cross = PyMem_RawMalloc((size_t)h1 * sizeof(Crossing));
    Py_ssize_t *slot = PyMem_RawMalloc((size_t)h1 * sizeof(Py_ssize_t));
    char *on = PyMem_RawMalloc((size_t)h1);
    if (scratch == NULL || cross == NULL || slot == NULL || on == NULL) {
        PyMem_RawFree(scratch);
        PyMem_RawFree(cross);
        PyMem_RawFree(slot);
        PyMem_RawFree(on);
        PyErr_NoMemory();
        goto done;
    }
    double *s1 = scratch, *ab = s1 + h1, *prefix = ab + 2 * h2, *g = prefix + (h1 + 2) * h2;
    const double *x = v[6].buf;
    double *out = v[7].buf;
    if (n >= RELEASE_GIL_ROWS) {
        Py_BEGIN_ALLOW_THREADS;
        for (Py_ssize_t r = 0; r < n; r++)
            row_attributions(&net, x + r * d, out + r * d, s1, on, cross, ab, prefix, slot, g);
        Py_END_ALLOW_THREADS;
    } else {
        for (Py_ssize_t r = 0; r < n; r++)
            row_attributions(&net, x + r * d, out + r * d, s1, on, cross, ab, prefix, slot, g);
    }
    PyMem_RawFree(scratch);
    PyMem_RawFree(cross);
    PyMem_RawFree(slot);
    PyMem_RawFree(on);
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"relu2_attributions", (PyCFunction)(void (*)(void))relu2_attributions, METH_FASTCALL,
     "relu2_attributions(w1, z0, w2t, c2, vt, baseline, x, out): exact integrated gradients "
     "of a two-hidden-layer ReLU network into out, without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streaming.explain._relu_ig",
    "Exact integrated gradients of two-hidden-layer ReLU networks (see the C source).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__relu_ig(void) { return PyModule_Create(&module); }
