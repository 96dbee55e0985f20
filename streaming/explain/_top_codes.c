/*
 * The strongest reason codes of each explained row, from its attributions, in one call.
 *
 * streaming.explain.reasons.ReasonCodes.top does this with numpy (its reference, and the
 * fallback where this is not built): each code's weight is the sum of its features'
 * attributions, rounded to 4 decimals as numpy rounds (rint(w * 1e4) / 1e4), and the k largest
 * positive weights are listed largest first, equal weights in the config's order of codes.
 * A batch explains a handful of rows, and there numpy's per-call costs (a matmul, a round, a
 * sort, a gather, each for a 4 x 7 array) were most of the time; here it is one pass.
 *
 * top(attributions, owner, k, reason, codes, texts) -> list of lists of reason(code, text, w)
 *   attributions: C-contiguous float64 (n, d); owner: C-contiguous int64 (d), the code of
 *   each feature or -1 (in none); codes, texts: tuples of the codes' names and texts, one per
 *   code; reason: called as reason(code, text, weight) for each reason kept.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#include "_buffers.h"

#define ROUND_SCALE 1e4 /* streaming.explain.reasons.WEIGHT_DECIMALS = 4 */

/* Row r's reasons: its codes' rounded weights, the k largest positive ones, largest first. */
static PyObject *row_reasons(const double *attr, const long long *owner, Py_ssize_t d,
                             Py_ssize_t ncodes, Py_ssize_t k, double *w, Py_ssize_t *best,
                             PyObject *reason, PyObject *codes, PyObject *texts) {
    for (Py_ssize_t c = 0; c < ncodes; c++) w[c] = 0.0;
    for (Py_ssize_t j = 0; j < d; j++)
        if (owner[j] >= 0) w[owner[j]] += attr[j];
    Py_ssize_t kept = 0;
    for (Py_ssize_t c = 0; c < ncodes; c++) {
        double v = rint(w[c] * ROUND_SCALE) / ROUND_SCALE;
        w[c] = v;
        if (!(v > 0.0)) continue;
        /* insert after every kept weight >= v: equal weights keep the codes' order */
        Py_ssize_t at = kept;
        while (at > 0 && w[best[at - 1]] < v) at--;
        if (at >= k) continue;
        Py_ssize_t last = kept < k ? kept : k - 1;
        for (Py_ssize_t i = last; i > at; i--) best[i] = best[i - 1];
        best[at] = c;
        if (kept < k) kept++;
    }
    PyObject *row = PyList_New(kept);
    if (row == NULL) return NULL;
    for (Py_ssize_t i = 0; i < kept; i++) {
        PyObject *weight = PyFloat_FromDouble(w[best[i]]);
        if (weight == NULL) {
            Py_DECREF(row);
            return NULL;
        }
        PyObject *args[3] = {PyTuple_GET_ITEM(codes, best[i]), PyTuple_GET_ITEM(texts, best[i]),
                             weight};
        PyObject *one = PyObject_Vectorcall(reason, args, 3, NULL);
        Py_DECREF(weight);
        if (one == NULL) {
            Py_DECREF(row);
            return NULL;
        }
        PyList_SET_ITEM(row, i, one);
    }
    return row;
}

static PyObject *top(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "top(attributions, owner, k, reason, codes, texts)");
        return NULL;
    }
    Py_ssize_t k = PyLong_AsSsize_t(args[2]);
    if (k == -1 && PyErr_Occurred()) return NULL;
    PyObject *reason = args[3], *codes = args[4], *texts = args[5];
    if (k < 1 || !PyCallable_Check(reason) || !PyTuple_Check(codes) || !PyTuple_Check(texts) ||
        PyTuple_GET_SIZE(codes) != PyTuple_GET_SIZE(texts) || PyTuple_GET_SIZE(codes) == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "top: k >= 1, a callable reason, and codes and texts as tuples of the "
                        "same length expected");
        return NULL;
    }
    Py_ssize_t ncodes = PyTuple_GET_SIZE(codes);
    Py_buffer a, o;
    if (take_buffer(args[0], &a, 'd', 0, "attributions") < 0) return NULL;
    if (take_buffer(args[1], &o, 'q', 0, "owner") < 0) {
        PyBuffer_Release(&a);
        return NULL;
    }
    PyObject *result = NULL;
    double *w = NULL;
    Py_ssize_t *best = NULL;
    Py_ssize_t d = o.len / 8;
    const long long *owner = o.buf;
    if (d == 0 || a.len % (8 * d) != 0) {
        PyErr_SetString(PyExc_ValueError, "top: attributions are not (n, d) for owner's d");
        goto done;
    }
    for (Py_ssize_t j = 0; j < d; j++)
        if (owner[j] < -1 || owner[j] >= ncodes) {
            PyErr_Format(PyExc_ValueError, "top: owner[%zd] = %lld is not a code (or -1)", j,
                         owner[j]);
            goto done;
        }
    w = PyMem_Malloc((size_t)ncodes * sizeof(double));
    best = PyMem_Malloc((size_t)ncodes * sizeof(Py_ssize_t));
    if (w == NULL || best == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (k > ncodes) k = ncodes;
    Py_ssize_t n = a.len / (8 * d);
    result = PyList_New(n);
    if (result == NULL) goto done;
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *row = row_reasons((const double *)a.buf + r * d, owner, d, ncodes, k, w, best,
                                    reason, codes, texts);
        if (row == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, r, row);
    }
done:
    PyMem_Free(w);
    PyMem_Free(best);
    PyBuffer_Release(&a);
    PyBuffer_Release(&o);
    return result;
}

static PyMethodDef methods[] = {
    {"top", (PyCFunction)(void (*)(void))top, METH_FASTCALL,
     "top(attributions, owner, k, reason, codes, texts): per row, reason(code, text, weight) "
     "for its k largest positive code weights (rounded to 4 decimals), largest first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streaming.explain._top_codes",
    "The strongest reason codes of each explained row (see the C source).", -1, methods,
};

PyMODINIT_FUNC PyInit__top_codes(void) { return PyModule_Create(&module); }
